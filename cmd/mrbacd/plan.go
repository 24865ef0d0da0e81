package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/audit"
	"github.com/mrbacd/mrbacd/jobs/budget"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
	"github.com/mrbacd/mrbacd/state"
)

func init() {
	register(&command{name: "plan", summary: "print what the next rotate, audit and budget runs would do, changing nothing", run: runPlan})
}

// planReport is the output of `mrbacd plan`.
type planReport struct {
	Rotate   []rotate.PlanItem `json:"rotate"`
	Audit    planAudit         `json:"audit"`
	Budget   planBudget        `json:"budget"`
	Schedule []planSchedule    `json:"schedule"`
	// Journal says what the plan read of the journal: "none yet" when it
	// does not exist.
	Journal string `json:"journal"`
}

// planAudit is what the next audit would report.
type planAudit struct {
	Summary string        `json:"summary,omitempty"`
	Report  *audit.Report `json:"report,omitempty"`
	// New lists the ids of findings the journal does not hold open yet: the
	// next digest reports them as new (all of them without a journal).
	New []string `json:"new,omitempty"`
	// Silenced lists the findings snoozed or acknowledged (from Slack):
	// the next digest leaves them out.
	Silenced []planSilenced `json:"silenced,omitempty"`
	Error    string         `json:"error,omitempty"`
}

// planBudget is what the next budget poll would report; each alert's First
// says whether it would be sent (not sent before this month).
type planBudget struct {
	Summary string         `json:"summary,omitempty"`
	Report  *budget.Report `json:"report,omitempty"`
	Error   string         `json:"error,omitempty"`
}

// planSchedule is one job's schedule and next fire.
type planSchedule struct {
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

// runPlan is `mrbacd plan --config FILE [--json]`: each job's schedule and
// next fire, what the next rotation would do with each managed key and why,
// and what the next audit and budget runs would report. It changes nothing:
// the journal is opened read-only and only if it exists, a missing file
// store directory reads as "no records yet", the audit and budget jobs run
// as dry runs with no notifier, and the platform is only read.
func runPlan(ctx context.Context, env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "plan", "--config FILE [--json]")
	cfgPath := fs.String("config", "", "config `file` (required)")
	asJSON := fs.Bool("json", false, "print the plan as JSON")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mrbacd plan: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, code := loadConfig(env, *cfgPath)
	if cfg == nil {
		return code
	}
	log := newLogger(env, cfg)
	var platform rotate.Platform
	client, clientErr := newMistral(cfg, log)
	if clientErr != nil {
		// Plan what the stores tell; keys that need the platform say why not.
		log.Warn("planning without the platform", "err", clientErr)
		platform = unavailablePlatform{err: clientErr}
	} else {
		platform = client
	}
	stores, closeStores, err := openPlanStores(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
		return exitFailed
	}
	defer closeStores()
	rep := planReport{Journal: "none yet"}
	deps := rotate.Deps{Platform: platform, Stores: stores, Logger: log}
	db, err := state.OpenReadOnly(ctx, cfg.State.Path)
	switch {
	case errors.Is(err, state.ErrNoJournal):
		db = nil
	case err != nil:
		fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
		return exitFailed
	default:
		defer db.Close()
		deps.Journal = db
		rep.Journal = db.Path()
	}
	engine, err := rotate.New(deps, rotate.OptionsFromConfig(cfg), rotate.KeysFromConfig(cfg))
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
		return exitUsage
	}
	if rep.Rotate, err = engine.Plan(ctx); err != nil {
		fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
		return exitFailed
	}
	if rep.Schedule, err = planSchedules(ctx, cfg, db, time.Now()); err != nil {
		fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
		return exitFailed
	}
	if clientErr != nil {
		rep.Audit.Error = "platform unavailable: " + clientErr.Error()
		rep.Budget.Error = rep.Audit.Error
	} else {
		rep.Audit = planAuditRun(ctx, cfg, client, stores, db, log)
		rep.Budget = planBudgetRun(ctx, cfg, client, db, log)
	}

	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
			return exitFailed
		}
	} else {
		printFullPlan(env.stdout, rep)
	}
	failed := rep.Audit.Error != "" || rep.Budget.Error != ""
	for _, it := range rep.Rotate {
		failed = failed || it.Error != ""
	}
	for _, s := range rep.Schedule {
		failed = failed || s.Error != ""
	}
	if failed {
		return exitFailed
	}
	return exitOK
}

// openPlanStores opens the stores the keys use, creating nothing: the file
// store is opened without New's directory creation and temp-file cleanup,
// and a missing directory reads as a store with no records yet (the first
// write creates it). Vault and AWS are opened as everywhere (openStores).
func openPlanStores(ctx context.Context, cfg *config.Config, log *slog.Logger) (map[string]secrets.Store, func(), error) {
	rest := *cfg
	rest.Secrets.File = nil
	stores, closeAll, err := openStores(ctx, &rest, log)
	if err != nil {
		return nil, nil, err
	}
	used := false
	for _, k := range cfg.Keys {
		used = used || k.Store.Backend == "file"
	}
	if f := cfg.Secrets.File; f != nil && used {
		s, err := file.OpenExisting(f.Dir)
		switch {
		case err == nil:
			stores["file"] = s
		case errors.Is(err, fs.ErrNotExist):
			stores["file"] = absentStore{dir: f.Dir}
		default:
			closeAll()
			return nil, nil, fmt.Errorf("file store: %w", err)
		}
	}
	return stores, closeAll, nil
}

// absentStore is a file store whose directory does not exist yet: it holds
// no record, and plan never writes.
type absentStore struct{ dir string }

// Read implements secrets.Store: nothing is stored.
func (a absentStore) Read(_ context.Context, t secrets.Target) (secrets.Versioned, error) {
	return secrets.Versioned{}, fmt.Errorf("file store: %s (directory %s does not exist yet): %w", t.Path, a.dir, secrets.ErrNotFound)
}

// Write implements secrets.Store: refused, plan changes nothing.
func (a absentStore) Write(context.Context, secrets.WriteRequest) (secrets.Version, error) {
	return "", fmt.Errorf("file store: %w: plan writes nothing", secrets.ErrPermissionDenied)
}

// Describe implements secrets.Store: nothing exists.
func (a absentStore) Describe(context.Context, secrets.Target) (secrets.Description, error) {
	return secrets.Description{}, nil
}

// Name implements secrets.Store.
func (a absentStore) Name() string { return "file" }

// cronParser parses job schedules as the scheduler does.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// planSchedules returns each job's schedule, next fire after now and last
// journaled fire (db may be nil).
func planSchedules(ctx context.Context, cfg *config.Config, db *state.DB, now time.Time) ([]planSchedule, error) {
	tz := cfg.Jobs.Timezone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("jobs.timezone %q: %w", tz, err)
	}
	specs := []struct {
		name, schedule string
		disabled       bool
	}{
		{jobs.Rotate, cfg.Jobs.Rotate.Schedule, cfg.Jobs.Rotate.Disabled},
		{jobs.Audit, cfg.Jobs.Audit.Schedule, cfg.Jobs.Audit.Disabled},
		{jobs.Budget, cfg.Jobs.Budget.Schedule, cfg.Jobs.Budget.Disabled},
	}
	out := make([]planSchedule, 0, len(specs))
	for _, s := range specs {
		ps := planSchedule{Job: s.name, Schedule: s.schedule, Timezone: loc.String(), Disabled: s.disabled}
		var sched cron.Schedule
		if s.schedule != "" {
			if err := config.ParseSchedule(s.schedule); err != nil {
				ps.Error = err.Error()
			} else if sched, err = cronParser.Parse(s.schedule); err != nil {
				ps.Error = fmt.Sprintf("invalid schedule: %v", err)
			}
		}
		if sched != nil && !s.disabled {
			ps.Next = sched.Next(now.In(loc)).Format(time.RFC3339)
		}
		if db != nil {
			last, ok, err := db.LastFire(ctx, s.name)
			if err != nil {
				return nil, err
			}
			if ok {
				ps.LastFire = last.In(loc).Format(time.RFC3339)
				ps.CatchUp = sched != nil && !s.disabled && !sched.Next(last.In(loc)).After(now)
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
	db *state.DB, log *slog.Logger) planAudit {
	j := newAuditJob(cfg, client, stores, db, nil, log)
	res, err := j.Run(ctx, jobs.Request{Trigger: "plan", DryRun: true})
	if err != nil {
		return planAudit{Error: err.Error()}
	}
	pa := planAudit{Summary: res.Summary}
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
func planBudgetRun(ctx context.Context, cfg *config.Config, client *mistral.Client, db *state.DB, log *slog.Logger) planBudget {
	j := newBudgetJob(cfg, client, nil, nil, log)
	res, err := j.Run(ctx, jobs.Request{Trigger: "plan", DryRun: true})
	if err != nil {
		return planBudget{Error: err.Error()}
	}
	pb := planBudget{Summary: res.Summary}
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

// printFullPlan prints the schedule, then the rotate, audit and budget plans.
func printFullPlan(w io.Writer, rep planReport) {
	fmt.Fprintf(w, "plan (changes nothing; journal: %s)\n\n", rep.Journal)
	tz := "UTC"
	if len(rep.Schedule) > 0 {
		tz = rep.Schedule[0].Timezone
	}
	fmt.Fprintf(w, "schedule (%s):\n", tz)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSCHEDULE\tNEXT RUN\tLAST FIRE\tNOTE")
	for _, s := range rep.Schedule {
		note := ""
		switch {
		case s.Error != "":
			note = s.Error
		case s.Disabled:
			note = "disabled: manual runs only"
		case s.Schedule == "":
			note = "no schedule: manual runs only"
		case s.CatchUp:
			note = "a fire was missed: the daemon catches up at start"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Job, dash(s.Schedule), dash(s.Next), dash(s.LastFire), note)
	}
	tw.Flush()

	fmt.Fprintln(w)
	printPlan(w, rep.Rotate)

	fmt.Fprintln(w)
	switch {
	case rep.Audit.Report == nil:
		fmt.Fprintf(w, "audit: cannot tell: %s\n", rep.Audit.Error)
	default:
		fmt.Fprintf(w, "audit: %s; %d new since the last digest\n", rep.Audit.Summary, len(rep.Audit.New))
		printAuditReport(w, rep.Audit.Report)
		printSilenced(w, rep.Audit.Silenced)
	}

	fmt.Fprintln(w)
	switch {
	case rep.Budget.Report == nil:
		fmt.Fprintf(w, "budget: cannot tell: %s\n", rep.Budget.Error)
	default:
		fmt.Fprintf(w, "budget: %s\n", rep.Budget.Summary)
		printBudgetReport(w, rep.Budget.Report)
	}
}

// printPlan prints how many keys are due, then one line per key.
func printPlan(w io.Writer, items []rotate.PlanItem) {
	due := 0
	for _, it := range items {
		if it.Due {
			due++
		}
	}
	fmt.Fprintf(w, "rotate: %d of %d keys due\n", due, len(items))
	if len(items) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tACTION\tSTORE\tCURRENT KEY\tDUE AT\tWHY")
	for _, it := range items {
		why := it.Reason
		if it.Note != "" {
			why += " (" + it.Note + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s:%s\t%s\t%s\t%s\n", it.Key, it.Action, it.Backend, it.Location,
			dash(it.CurrentKeyID), dash(it.DueAt), why)
	}
	tw.Flush()
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
