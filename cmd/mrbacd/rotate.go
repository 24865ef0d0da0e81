package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/notify"
)

func init() {
	register(&command{name: "rotate", summary: "resume rotations in flight, then rotate the keys that are due", run: runRotate})
}

// runRotate is `mrbacd rotate --config FILE [--key NAME] [--force]
// [--dry-run] [--json]`: one rotation pass in the foreground, journaled as
// a "cli" run; its notifications (a digest of the rotations done, one
// message per failure) are queued and delivered before exiting. Exit 0 when
// every rotation it started ended done, 1 if any failed, 2 on usage or
// config errors.
func runRotate(ctx context.Context, env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "rotate", "--config FILE [--key NAME] [--force] [--dry-run] [--json]")
	cfgPath := fs.String("config", "", "config `file` (required)")
	key := fs.String("key", "", "rotate only the managed key `NAME`")
	force := fs.Bool("force", false, "rotate now, whatever the keys' age")
	dryRun := fs.Bool("dry-run", false, "report what would be done and change nothing")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mrbacd rotate: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, code := loadConfig(env, *cfgPath)
	if cfg == nil {
		return code
	}
	if *key != "" && !hasKey(cfg, *key) {
		fmt.Fprintf(env.stderr, "mrbacd rotate: %s: no managed key named %q\n", *cfgPath, *key)
		return exitUsage
	}
	log := newLogger(env, cfg)
	platform, err := newMistral(cfg, log)
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd rotate: %v\n", err)
		return exitUsage
	}
	// A dry run creates nothing: the file store is opened as plan does.
	open := openStores
	if *dryRun {
		open = openPlanStores
	}
	stores, closeStores, err := open(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd rotate: %v\n", err)
		return exitFailed
	}
	defer closeStores()
	var jdb *journal.DB
	if !*dryRun || journalExists(cfg) {
		if jdb, err = openJournal(ctx, cfg); err != nil {
			fmt.Fprintf(env.stderr, "mrbacd rotate: %v\n", err)
			return exitFailed
		}
		defer jdb.Close()
	}
	deps := rotate.Deps{Platform: platform, Stores: stores, Logger: log}
	if jdb != nil {
		deps.Journal = jdb
	}
	// Notifications: a digest of the rotations done and one message per
	// failure, queued in the journal's outbox and delivered before exiting
	// (a dry run notifies nothing).
	var outbox *notify.Outbox
	notes := &rotationNotes{}
	if !*dryRun {
		// With --json, stdout carries the report: stdout notifications go to stderr.
		nenv := env
		if *asJSON {
			nenv = &cmdEnv{stdout: env.stderr, stderr: env.stderr}
		}
		sender, err := newNotifier(ctx, cfg, nenv, log)
		if err != nil {
			fmt.Fprintf(env.stderr, "mrbacd rotate: %v\n", err)
			return exitUsage
		}
		outbox = newOutbox(jdb, sender, log)
		deps.Notifier = notes
	}
	engine, err := rotate.New(deps, rotate.OptionsFromConfig(cfg), rotate.KeysFromConfig(cfg))
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd rotate: %v\n", err)
		return exitUsage
	}
	req := jobs.Request{Trigger: "cli", Key: *key, Force: *force, DryRun: *dryRun}
	var runID int64
	if !*dryRun {
		// Record the run; a journal that refuses it is reported, not fatal.
		argLine := strings.Join(args, " ")
		if runID, err = jdb.StartRun(ctx, jobs.Rotate, "cli", argLine); err != nil {
			log.Warn("recording the run in the journal failed", "err", err)
		}
		req.RunID = runID
	}
	res, runErr := engine.Run(ctx, req)
	if runID != 0 {
		status, msg := journal.RunOK, ""
		switch {
		case runErr != nil && ctx.Err() != nil:
			status, msg = journal.RunCanceled, runErr.Error()
		case runErr != nil:
			status, msg = journal.RunFailed, runErr.Error()
		case ctx.Err() != nil:
			status = journal.RunCanceled
		case res.Failed:
			status = journal.RunFailed
		}
		summary, _ := json.Marshal(res)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := jdb.FinishRun(fctx, runID, status, msg, string(summary)); err != nil {
			log.Warn("recording the run's end in the journal failed", "run_id", runID, "err", err)
		}
		cancel()
	}
	if outbox != nil {
		// Queued even when the run was interrupted: what is not delivered
		// now stays in the journal for the daemon (or the next run).
		if _, err := notes.enqueue(context.WithoutCancel(ctx), outbox, res, time.Now()); err != nil {
			fmt.Fprintf(env.stderr, "mrbacd rotate: queueing the rotation notifications: %v\n", err)
		}
		flushNotifications(ctx, env, "rotate", outbox)
	}
	if runErr != nil {
		fmt.Fprintf(env.stderr, "mrbacd rotate: %v\n", runErr)
		return exitFailed
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(env.stderr, "mrbacd rotate: %v\n", err)
			return exitFailed
		}
	} else {
		printRotateReport(env.stdout, res)
	}
	if res.Failed {
		return exitFailed
	}
	return exitOK
}

func hasKey(cfg *config.Config, name string) bool {
	for _, k := range cfg.Keys {
		if k.Name == name {
			return true
		}
	}
	return false
}

// printRotateReport prints the summary and one line per key.
func printRotateReport(w io.Writer, res jobs.Result) {
	fmt.Fprintln(w, res.Summary)
	reps, _ := res.Details.([]rotate.KeyReport)
	if len(reps) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tOUTCOME\tROTATION\tSTEP\tOLD KEY\tNEW KEY\tDETAIL")
	for _, r := range reps {
		detail := r.Reason
		if r.Error != "" {
			detail = "error: " + r.Error
		}
		if r.Note != "" {
			detail += " (" + r.Note + ")"
		}
		outcome := r.Outcome
		if r.Resumed {
			outcome += " (resumed)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Key, outcome, dash(r.RotationID), dash(r.Step),
			dash(r.OldKeyID), dash(r.NewKeyID), detail)
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// journalExists reports whether the journal file is there (plan and dry
// runs must not create it).
func journalExists(cfg *config.Config) bool {
	_, err := os.Stat(cfg.State.Path)
	return err == nil || !errors.Is(err, os.ErrNotExist)
}
