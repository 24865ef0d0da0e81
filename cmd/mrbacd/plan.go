package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/mrbacd/mrbacd/app"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/journal"
)

func init() {
	register(&command{name: "plan", summary: "print what the next rotate, audit and budget runs would do, changing nothing", run: runPlan})
}

// runPlan is `mrbacd plan --config FILE [--json]`: each job's schedule and
// next fire, what the next rotation would do with each managed key and why,
// and what the next audit and budget runs would report, changing nothing
// (app.Plan).
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
	rep, err := app.Plan(ctx, cfg, newLogger(env, cfg))
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
		return failCode(err)
	}
	if *asJSON {
		if err := printJSON(env.stdout, rep); err != nil {
			fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
			return exitFailed
		}
	} else {
		printFullPlan(env.stdout, rep)
	}
	if rep.Failed() {
		return exitFailed
	}
	return exitOK
}

// printFullPlan prints the schedule, then the rotate, audit and budget plans.
func printFullPlan(w io.Writer, rep app.PlanReport) {
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
		dueAt := dash(it.DueAt)
		if it.EarlyForExpiry {
			dueAt += " (expires " + it.ExpiresAt + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s:%s\t%s\t%s\t%s\n", it.Key, it.Action, it.Backend, it.Location,
			dash(it.CurrentKeyID), dueAt, why)
	}
	tw.Flush()
}

func printSilenced(w io.Writer, ss []app.PlanSilenced) {
	if len(ss) == 0 {
		return
	}
	fmt.Fprintf(w, "  silenced from Slack (left out of the digest):\n")
	for _, s := range ss {
		switch s.How {
		case journal.SuppressSnooze:
			fmt.Fprintf(w, "    %s: snoozed until %s by %s\n", s.Finding, s.Until, s.By)
		default:
			fmt.Fprintf(w, "    %s: acknowledged by %s at %s (until it resolves)\n", s.Finding, s.By, s.At)
		}
	}
}
