package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/mrbacd/mrbacd/app"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/audit"
	"github.com/mrbacd/mrbacd/jobs/budget"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/notify"
)

// oneShotSpec describes one foreground job command (rotate, audit, budget).
type oneShotSpec struct {
	name       string
	configPath string
	json       bool
	req        jobs.Request
}

// jobCommand is a one-shot job command without options of its own
// (`mrbacd audit|budget --config FILE [--json] [--dry-run]`).
func jobCommand(name, dryRunHelp string) func(ctx context.Context, env *cmdEnv, args []string) int {
	return func(ctx context.Context, env *cmdEnv, args []string) int {
		fs := newFlagSet(env, name, "--config FILE [--json] [--dry-run]")
		path := fs.String("config", "", "the config `FILE` (required)")
		asJSON := fs.Bool("json", false, "print the report as JSON")
		dryRun := fs.Bool("dry-run", false, dryRunHelp)
		if code, done := parseFlags(fs, args); done {
			return code
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(env.stderr, "mrbacd %s: unexpected argument %q\n", name, fs.Arg(0))
			fs.Usage()
			return exitUsage
		}
		return oneShot(ctx, env, oneShotSpec{name: name, configPath: *path, json: *asJSON,
			req: jobs.Request{Trigger: "cli", DryRun: *dryRun}})
	}
}

// oneShot loads the config, wires the job (package app), runs it once as a
// journaled "cli" run, delivers its notifications and prints the result.
// Exit 0 when the job ran without failures, 1 when it failed, 2 on bad
// usage or config.
func oneShot(ctx context.Context, env *cmdEnv, s oneShotSpec) int {
	cfg, code := loadConfig(env, s.configPath)
	if cfg == nil {
		return code
	}
	if s.req.Key != "" {
		if _, ok := cfg.Key(s.req.Key); !ok {
			fmt.Fprintf(env.stderr, "mrbacd %s: %s: no managed key named %q\n", s.name, s.configPath, s.req.Key)
			return exitUsage
		}
	}
	log := newLogger(env, cfg).With("job", s.name)
	// With --json, stdout carries the report: stdout notifications go to stderr.
	notifyTo := env.stdout
	if s.json {
		notifyTo = env.stderr
	}
	a, err := app.Open(ctx, cfg, log, app.Options{DryRun: s.req.DryRun, NoStores: s.name == jobs.Budget, Notify: notifyTo})
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd %s: %v\n", s.name, err)
		return failCode(err)
	}
	defer a.Close()
	fin, runErr := a.Run(ctx, s.name, s.req)
	printFlushError(env, s.name, a.Flush(ctx))
	if runErr != nil {
		fmt.Fprintf(env.stderr, "mrbacd %s: %v\n", s.name, runErr)
		return failCode(runErr)
	}
	if s.json {
		if err := printJSON(env.stdout, fin.Result); err != nil {
			fmt.Fprintf(env.stderr, "mrbacd %s: %v\n", s.name, err)
			return exitFailed
		}
	} else {
		fmt.Fprintln(env.stdout, fin.Result.Summary)
		printDetails(env.stdout, fin.Result)
	}
	if fin.Result.Failed {
		return exitFailed
	}
	return exitOK
}

// printFlushError reports on stderr why notifications were not all
// delivered: they stay queued, which is not a failure of the job.
func printFlushError(env *cmdEnv, name string, err error) {
	switch {
	case err == nil:
	case errors.Is(err, notify.ErrUndelivered):
		fmt.Fprintf(env.stderr, "mrbacd %s: some notifications are not delivered yet; they stay queued in the journal and the daemon (or the next run) sends them: %v\n", name, err)
	default:
		fmt.Fprintf(env.stderr, "mrbacd %s: delivering notifications: %v\n", name, err)
	}
}

// printDetails prints a job's report after its summary line.
func printDetails(w io.Writer, res jobs.Result) {
	switch rep := res.Details.(type) {
	case []rotate.KeyReport:
		printRotateReport(w, rep)
	case *audit.Report:
		printAuditReport(w, rep)
	case *budget.Report:
		printBudgetReport(w, rep)
	}
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
