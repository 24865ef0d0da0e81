package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/audit"
)

func init() {
	register(&command{name: "audit", summary: "audit every key and workspace once and report findings", run: runAudit})
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
	spec.print = func(w io.Writer, res jobs.Result) {
		if rep, ok := res.Details.(*audit.Report); ok {
			printAuditReport(w, rep)
		}
	}
	return oneShot(ctx, env, spec)
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
