package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/audit"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/notify"
	"github.com/mrbacd/mrbacd/secrets"
)

func init() {
	register(&command{name: "audit", summary: "audit every key and workspace once and report findings", run: runAudit})
}

// newAuditJob wires the audit job: the platform, the stores' records, the
// journal (findings already reported) and the outbox its digest goes to
// (nil: no notification). A nil journal leaves Job.Journal nil (a nil
// *journal.DB must not become a non-nil interface).
func newAuditJob(cfg *config.Config, platform *mistral.Client, stores map[string]secrets.Store, jr journal.Journal,
	outbox *notify.Outbox, logger *slog.Logger) *audit.Job {
	j := &audit.Job{Config: cfg, Platform: platform, Logger: logger,
		Records: audit.StoreRecords{Stores: stores, Target: storeTarget}}
	if jr != nil {
		j.Journal = jr
	}
	if outbox != nil {
		j.Notifier = audit.OutboxNotifier{Outbox: outbox}
	}
	return j
}

// runAudit is `mrbacd audit --config FILE [--json] [--dry-run]`: one audit in
// the foreground, journaled as a run triggered by "cli", its digest queued
// and delivered before exiting. Exit 0 when the audit ran without failures,
// 1 when it failed, 2 on bad usage or config.
func runAudit(ctx context.Context, env *cmdEnv, args []string) int {
	spec, code, done := parseOneShotFlags(env, jobs.Audit, "report only: revoke nothing, record nothing, notify nothing", args)
	if done {
		return code
	}
	spec.build = func(d oneShotDeps) jobs.Runner {
		return newAuditJob(d.cfg, d.platform, d.stores, d.journal, d.outbox, d.log)
	}
	spec.print = func(w io.Writer, res jobs.Result) {
		if rep, ok := res.Details.(*audit.Report); ok {
			printAuditReport(w, rep)
		}
	}
	return oneShot(ctx, env, spec)
}

// parseOneShotFlags parses the flags of a one-shot job command (`mrbacd
// audit|budget --config FILE [--json] [--dry-run]`) into the spec's name,
// config path, json and dryRun. done is true when the command ends here
// (--help, or bad usage) with exit code code.
func parseOneShotFlags(env *cmdEnv, name, dryRunHelp string, args []string) (spec oneShotSpec, code int, done bool) {
	fs := newFlagSet(env, name, "--config FILE [--json] [--dry-run]")
	path := fs.String("config", "", "the config `FILE` (required)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	dryRun := fs.Bool("dry-run", false, dryRunHelp)
	if code, done := parseFlags(fs, args); done {
		return oneShotSpec{}, code, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mrbacd %s: unexpected argument %q\n", name, fs.Arg(0))
		fs.Usage()
		return oneShotSpec{}, exitUsage, true
	}
	return oneShotSpec{name: name, configPath: *path, json: *asJSON, dryRun: *dryRun}, exitOK, false
}

// printAuditReport writes the findings as a table.
func printAuditReport(w io.Writer, rep *audit.Report) {
	if len(rep.Findings) == 0 {
		fmt.Fprintln(w, "no findings")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEVERITY\tKIND\tSUBJECT\tWORKSPACE\tDETAIL")
		for _, f := range rep.Findings {
			detail := f.Detail
			if f.Revoked {
				detail += " [revoked]"
			} else if f.WouldRevoke {
				detail += " [would revoke]"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Severity, f.Kind, f.Subject(), orDash(f.Workspace), detail)
		}
		tw.Flush()
	}
	for _, r := range rep.Resolved {
		fmt.Fprintf(w, "resolved: %s %s\n", r.Kind, r.Subject)
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneShotDeps is what a one-shot job command builds from a config.
type oneShotDeps struct {
	cfg      *config.Config
	log      *slog.Logger
	platform *mistral.Client
	stores   map[string]secrets.Store
	journal  journal.Journal
	// journal is read-only in a dry run (nil when none exists yet); outbox
	// is nil in a dry run.
	outbox *notify.Outbox
}

// oneShotSpec describes one foreground job command (audit, budget).
type oneShotSpec struct {
	name       string
	configPath string
	json       bool
	dryRun     bool
	// noStores: the job does not read the secret stores.
	noStores bool
	build    func(d oneShotDeps) jobs.Runner
	print    func(w io.Writer, res jobs.Result)
}

// oneShot loads the config, wires the job, runs it once as a journaled "cli"
// run, delivers its notifications and prints the result.
func oneShot(ctx context.Context, env *cmdEnv, s oneShotSpec) int {
	cfg, code := loadConfig(env, s.configPath)
	if cfg == nil {
		return code
	}
	log := newLogger(env, cfg).With("job", s.name)
	platform, err := newMistral(cfg, log)
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd %s: %v\n", s.name, err)
		return exitUsage
	}
	d := oneShotDeps{cfg: cfg, log: log, platform: platform}
	if !s.noStores {
		// A dry run creates nothing: the file store is opened as plan does.
		open := openStores
		if s.dryRun {
			open = openPlanStores
		}
		stores, closeStores, err := open(ctx, cfg, log)
		if err != nil {
			fmt.Fprintf(env.stderr, "mrbacd %s: %v\n", s.name, err)
			return exitFailed
		}
		defer closeStores()
		d.stores = stores
	}
	if s.dryRun {
		// Read-only, and only if it exists: a dry run records nothing.
		var db *journal.DB
		db, err = journal.OpenReadOnly(ctx, cfg.State.Path)
		if errors.Is(err, journal.ErrNoJournal) {
			err = nil
		} else if err == nil {
			d.journal = db
		}
	} else {
		var db *journal.DB
		if db, err = openJournal(ctx, cfg); err == nil {
			d.journal = db
		}
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd %s: %v\n", s.name, err)
		return exitFailed
	}
	if d.journal != nil {
		defer d.journal.Close()
	}
	if !s.dryRun {
		// With --json, stdout carries the report: stdout notifications go to stderr.
		nenv := env
		if s.json {
			nenv = &cmdEnv{stdout: env.stderr, stderr: env.stderr}
		}
		sender, err := newNotifier(ctx, cfg, nenv, log)
		if err != nil {
			fmt.Fprintf(env.stderr, "mrbacd %s: %v\n", s.name, err)
			return exitUsage
		}
		d.outbox = newOutbox(d.journal, sender, log)
	}

	var runID int64
	if !s.dryRun {
		if runID, err = d.journal.StartRun(ctx, s.name, "cli", "--config "+s.configPath); err != nil {
			fmt.Fprintf(env.stderr, "mrbacd %s: %v\n", s.name, err)
			return exitFailed
		}
	}
	res, runErr := s.build(d).Run(ctx, jobs.Request{RunID: runID, Trigger: "cli", DryRun: s.dryRun})
	if runID != 0 {
		status, errMsg := journal.RunOK, ""
		switch {
		case runErr != nil && ctx.Err() != nil:
			status, errMsg = journal.RunCanceled, runErr.Error()
		case runErr != nil:
			status, errMsg = journal.RunFailed, runErr.Error()
		case res.Failed:
			status = journal.RunFailed
		}
		// The run's outcome must be recorded even if ctx was canceled.
		if err := d.journal.FinishRun(context.WithoutCancel(ctx), runID, status, errMsg, res.Summary); err != nil {
			log.Error("recording the run failed", "run_id", runID, "err", err)
		}
	}
	if d.outbox != nil {
		flushNotifications(ctx, env, s.name, d.outbox)
	}
	if runErr != nil {
		fmt.Fprintf(env.stderr, "mrbacd %s: %v\n", s.name, runErr)
		return exitFailed
	}
	if s.json {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(env.stderr, "mrbacd %s: %v\n", s.name, err)
			return exitFailed
		}
	} else {
		fmt.Fprintln(env.stdout, res.Summary)
		if s.print != nil {
			s.print(env.stdout, res)
		}
	}
	if res.Failed {
		return exitFailed
	}
	return exitOK
}
