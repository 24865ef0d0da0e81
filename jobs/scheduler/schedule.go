package scheduler

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/robfig/cron/v3"
)

// parser reads job schedules: five fields or a descriptor.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// scheduleError is a schedule that does not parse; it is ErrInvalidSchedule.
type scheduleError string

func (e scheduleError) Error() string        { return string(e) }
func (e scheduleError) Is(target error) bool { return target == ErrInvalidSchedule }

// ParseSchedule parses a job schedule: the standard five fields or a
// descriptor such as @daily or @every 1h. It is the one parser of mrbacd's
// schedules (config validation, the scheduler, plan). Time zones come from
// jobs.timezone, so a TZ= prefix is refused. An error is ErrInvalidSchedule;
// a token too long to be a cron field is not quoted back in it (it may be a
// secret put in the wrong place).
func ParseSchedule(spec string) (sched cron.Schedule, err error) {
	s := strings.TrimSpace(spec)
	if s == "" {
		return nil, scheduleError("empty schedule")
	}
	if strings.HasPrefix(s, "TZ=") || strings.HasPrefix(s, "CRON_TZ=") {
		return nil, scheduleError("a TZ= prefix is not allowed: set jobs.timezone")
	}
	defer func() {
		if v := recover(); v != nil { // the cron parser panics on some inputs
			sched, err = nil, invalidSchedule(s, errors.New("malformed"))
		}
	}()
	if sched, err = parser.Parse(s); err != nil {
		return nil, invalidSchedule(s, err)
	}
	return sched, nil
}

// invalidSchedule says why s does not parse, quoting it only when it may be.
func invalidSchedule(s string, err error) error {
	for _, tok := range strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == ',' }) {
		if len(tok) > 16 { // cron fields are short words (0-59, */15, MON-FRI, @daily, 1h30m)
			return scheduleError("invalid cron schedule (a token is too long to be a cron field; value not shown): " +
				"want five fields (minute hour day-of-month month day-of-week) or a descriptor such as @daily or @every 1h")
		}
	}
	q := strconv.Quote(s)
	if r := []rune(s); len(r) > 32 {
		q = strconv.Quote(string(r[:32])) + "..."
	}
	return scheduleError(fmt.Sprintf("invalid cron schedule %s: %v", q, err))
}

// Spec is one job's entry in the job table: its schedule, timeout and
// whether it is disabled (config jobs.<name>).
type Spec struct {
	Name     string
	Schedule string
	Timeout  time.Duration
	Disabled bool
}

// Table is the job table of a config's jobs section: the time zone its
// schedules are read in and the jobs. The daemon schedules it and plan
// reports it; config.Jobs.Table builds it, once.
type Table struct {
	Location *time.Location
	Specs    []Spec
}

// NewTable builds a job table: the time zone tz ("" is UTC) its schedules
// are read in, and the jobs. config.Jobs.Table builds the config's.
func NewTable(tz string, specs ...Spec) (Table, error) {
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return Table{}, fmt.Errorf("jobs.timezone %q: %w", tz, err)
	}
	return Table{Location: loc, Specs: specs}, nil
}
