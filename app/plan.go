package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/audit"
	"github.com/mrbacd/mrbacd/jobs/budget"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/jobs/scheduler"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/journal/backend"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/secrets"
)

// PlanReport is the output of `mrbacd plan`.
type PlanReport struct {
	Rotate   []rotate.PlanItem `json:"rotate"`
	Audit    PlanAudit         `json:"audit"`
	Budget   PlanBudget        `json:"budget"`
	Schedule []PlanSchedule    `json:"schedule"`
	// Journal says what the plan read of the journal: "none yet" when it
	// does not exist.
	Journal string `json:"journal"`
}

// PlanAudit is what the next audit would report.
type PlanAudit struct {
	Summary string        `json:"summary,omitempty"`
	Report  *audit.Report `json:"report,omitempty"`
	// New lists the ids of findings the journal does not hold open yet: the
	// next digest reports them as new (all of them without a journal).
	New []string `json:"new,omitempty"`
	// Silenced lists the findings snoozed or acknowledged (from Slack):
	// the next digest leaves them out.
	Silenced []PlanSilenced `json:"silenced,omitempty"`
	Error    string         `json:"error,omitempty"`
}

// PlanBudget is what the next budget poll would report; each alert's First
// says whether it would be sent (not sent before this month).
type PlanBudget struct {
	Summary string         `json:"summary,omitempty"`
	Report  *budget.Report `json:"report,omitempty"`
	Error   string         `json:"error,omitempty"`
}

// PlanSchedule is one job's schedule and next fire.
type PlanSchedule struct {
	Job      string `json:"job"`
	Schedule string `json:"schedule"`
	Timezone string `json:"timezone"`
	Disabled bool   `json:"disabled,omitempty"`
	// Next is the next fire (RFC 3339, in the jobs' timezone), "" when
	// disabled or when the schedule does not parse.
	Next string `json:"next,omitempty"`
	// LastFire is the last journaled fire, "" when none.
	LastFire string `json:"last_fire,omitempty"`
	// CatchUp is true when a fire was missed since LastFire: the daemon runs
	// the job once at its next start.
	CatchUp bool   `json:"catch_up,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Plan is `mrbacd plan`: each job's schedule and next fire, what the next
// rotation would do with each managed key and why, and what the next audit
// and budget runs would report. It changes nothing: the journal is opened
// read-only and only if it exists, a missing file store directory reads as
// "no records yet", the audit and budget jobs run as dry runs with no
// notifier, and the platform is only read. A ConfigError is the config's
// fault; the report's own errors say what could not be planned.
func Plan(ctx context.Context, cfg *config.Config, log *slog.Logger) (PlanReport, error) {
	var platform rotate.Platform
	client, clientErr := NewMistral(cfg, log)
	if clientErr != nil {
		// Plan what the stores tell; keys that need the platform say why not.
		log.Warn("planning without the platform", "err", clientErr)
		platform = unavailablePlatform{err: clientErr}
	} else {
		platform = client
	}
	stores, closeStores, err := openPlanStores(ctx, cfg, log)
	if err != nil {
		return PlanReport{}, err
	}
	defer closeStores()
	rep := PlanReport{Journal: "none yet"}
	db, err := openPlanJournal(ctx, cfg)
	var j journal.Journal
	switch {
	case errors.Is(err, journal.ErrNoJournal):
		db = nil
	case err != nil:
		return PlanReport{}, err
	default:
		defer db.Close()
		j = db
		rep.Journal = db.Path()
		if cfg.State.Postgres != nil {
			rep.Journal = backend.Describe(cfg.State)
		}
	}
	engine, err := newEngine(cfg, platform, stores, j, nil, log)
	if err != nil {
		return PlanReport{}, &ConfigError{err}
	}
	if rep.Rotate, err = engine.Plan(ctx); err != nil {
		return PlanReport{}, err
	}
	if rep.Schedule, err = planSchedules(ctx, cfg, j, time.Now()); err != nil {
		return PlanReport{}, err
	}
	if clientErr != nil {
		rep.Audit.Error = "platform unavailable: " + clientErr.Error()
		rep.Budget.Error = rep.Audit.Error
	} else {
		rep.Audit = planAuditRun(ctx, cfg, client, stores, j, log)
		rep.Budget = planBudgetRun(ctx, cfg, client, j, log)
	}
	return rep, nil
}

// Failed reports whether any part of the plan could not be made.
func (rep PlanReport) Failed() bool {
	failed := rep.Audit.Error != "" || rep.Budget.Error != ""
	for _, it := range rep.Rotate {
		failed = failed || it.Error != ""
	}
	for _, s := range rep.Schedule {
		failed = failed || s.Error != ""
	}
	return failed
}

// planSchedules returns each job's schedule, next fire after now and last
// journaled fire (db may be nil).
func planSchedules(ctx context.Context, cfg *config.Config, db journal.Journal, now time.Time) ([]PlanSchedule, error) {
	table, err := cfg.Jobs.Table()
	if err != nil {
		return nil, err
	}
	loc := table.Location
	out := make([]PlanSchedule, 0, len(table.Specs))
	for _, s := range table.Specs {
		ps := PlanSchedule{Job: s.Name, Schedule: s.Schedule, Timezone: loc.String(), Disabled: s.Disabled}
		var sched cron.Schedule
		if s.Schedule != "" {
			if sched, err = scheduler.ParseSchedule(s.Schedule); err != nil {
				ps.Error = err.Error()
			}
		}
		if sched != nil && !s.Disabled {
			ps.Next = sched.Next(now.In(loc)).Format(time.RFC3339)
		}
		if db != nil {
			last, ok, err := db.LastFire(ctx, s.Name)
			if err != nil {
				return nil, err
			}
			if ok {
				ps.LastFire = last.In(loc).Format(time.RFC3339)
				ps.CatchUp = sched != nil && !s.Disabled && !sched.Next(last.In(loc)).After(now)
			}
		}
		out = append(out, ps)
	}
	return out, nil
}

// planAuditRun runs the audit as a dry run: no revoke, no journal sync, no
// notifier; db (read-only, may be nil) only tells rotations in flight and
// which findings are already open.
func planAuditRun(ctx context.Context, cfg *config.Config, client *mistral.Client, stores map[string]secrets.Store,
	db journal.Journal, log *slog.Logger) PlanAudit {
	j := newAuditJob(cfg, client, stores, db, nil, log)
	res, err := j.Run(ctx, jobs.Request{Trigger: "plan", DryRun: true})
	if err != nil {
		return PlanAudit{Error: err.Error()}
	}
	pa := PlanAudit{Summary: res.Summary}
	rep, _ := res.Details.(*audit.Report)
	pa.Report = rep
	if res.Failed && rep != nil && len(rep.Errors) > 0 {
		pa.Error = fmt.Sprintf("%d errors: %s", len(rep.Errors), rep.Errors[0])
	}
	if rep == nil {
		return pa
	}
	open := map[string]bool{}
	if db != nil {
		known, err := db.OpenFindings(ctx, audit.Scope)
		if err != nil {
			pa.Error = err.Error()
			return pa
		}
		for _, f := range known {
			if !f.ReportedAt.IsZero() {
				open[f.ID] = true
			}
		}
	}
	silenced, err := planSilencedFindings(ctx, db, time.Now())
	if err != nil {
		pa.Error = err.Error()
	}
	for _, s := range silenced {
		pa.Silenced = append(pa.Silenced, s)
	}
	sort.Slice(pa.Silenced, func(i, j int) bool { return pa.Silenced[i].Finding < pa.Silenced[j].Finding })
	for _, f := range rep.Findings {
		if _, quiet := silenced[f.ID]; !open[f.ID] && !f.Revoked && !quiet {
			pa.New = append(pa.New, f.ID)
		}
	}
	sort.Strings(pa.New)
	return pa
}

// planBudgetRun runs the budget poll as a dry run (nothing queued, no
// once-mark) and tells, from the read-only journal, which alerts were sent
// already this month.
func planBudgetRun(ctx context.Context, cfg *config.Config, client *mistral.Client, db journal.Journal, log *slog.Logger) PlanBudget {
	j := newBudgetJob(cfg, client, nil, nil, log)
	res, err := j.Run(ctx, jobs.Request{Trigger: "plan", DryRun: true})
	if err != nil {
		return PlanBudget{Error: err.Error()}
	}
	pb := PlanBudget{Summary: res.Summary}
	rep, _ := res.Details.(*budget.Report)
	pb.Report = rep
	if rep == nil {
		return pb
	}
	for i := range rep.Alerts {
		a := &rep.Alerts[i]
		a.First = true
		if db != nil {
			sent, err := db.Marked(ctx, a.Dedupe)
			if err != nil {
				pb.Error = err.Error()
				return pb
			}
			a.First = !sent
		}
	}
	if res.Failed && len(rep.Errors) > 0 {
		pb.Error = fmt.Sprintf("%d errors: %s", len(rep.Errors), rep.Errors[0])
	}
	pb.Summary = budgetPlanSummary(rep)
	return pb
}

// budgetPlanSummary is the budget job's summary line, counting the alerts
// the next poll would send (the job's own dry-run summary cannot know).
func budgetPlanSummary(r *budget.Report) string {
	spent, budgeted, send := r.Totals()
	s := fmt.Sprintf("%s: $%.2f spent of $%.2f budgeted across %d workspaces; %d alerts, %d would be sent (the others were sent already)",
		r.Month, spent, budgeted, len(r.Workspaces), len(r.Alerts), send)
	if len(r.Errors) > 0 {
		s += fmt.Sprintf("; %d errors", len(r.Errors))
	}
	return s
}

// unavailablePlatform answers every call with the reason the platform
// client could not be built.
type unavailablePlatform struct{ err error }

// CreateKey implements rotate.Platform.
func (u unavailablePlatform) CreateKey(context.Context, mistral.CreateKeyRequest) (mistral.Key, error) {
	return mistral.Key{}, u.err
}

// DeleteKey implements rotate.Platform.
func (u unavailablePlatform) DeleteKey(context.Context, string) error { return u.err }

// ListAllKeys implements rotate.Platform.
func (u unavailablePlatform) ListAllKeys(context.Context, string) ([]mistral.Key, error) {
	return nil, u.err
}

// ListModels implements rotate.Platform.
func (u unavailablePlatform) ListModels(context.Context, mistral.Secret) ([]mistral.Model, error) {
	return nil, u.err
}

// ListAllWorkspaces implements rotate.Platform.
func (u unavailablePlatform) ListAllWorkspaces(context.Context) ([]mistral.Workspace, error) {
	return nil, u.err
}

// openPlanJournal opens the journal for reading: a SQLite file read-only
// (ErrNoJournal when there is none); a shared PostgreSQL journal as the
// daemons do, since they keep its schema current.
func openPlanJournal(ctx context.Context, cfg *config.Config) (*journal.DB, error) {
	if cfg.State.Postgres != nil {
		return backend.Open(ctx, cfg.State)
	}
	return journal.OpenReadOnly(ctx, cfg.State.Path)
}
