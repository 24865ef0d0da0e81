package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/audit"
)

func init() {
	// `mrbacd audit --config FILE [--json] [--dry-run]`: one audit in the
	// foreground, journaled as a "cli" run, its digest queued and delivered
	// before exiting.
	register(&command{name: "audit", summary: "audit every key and workspace once and report findings",
		run: jobCommand(jobs.Audit, "report only: revoke nothing, record nothing, notify nothing")})
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
