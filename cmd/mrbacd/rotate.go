package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/rotate"
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
	return oneShot(ctx, env, oneShotSpec{name: jobs.Rotate, configPath: *cfgPath, json: *asJSON,
		req: jobs.Request{Trigger: "cli", Key: *key, Force: *force, DryRun: *dryRun}})
}

// printRotateReport prints one line per key.
func printRotateReport(w io.Writer, reps []rotate.KeyReport) {
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Key, outcome, dash(r.RotationID), dash(string(r.Step)),
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
