package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/budget"
)

func init() {
	// `mrbacd budget --config FILE [--json] [--dry-run]`: one poll in the
	// foreground, journaled as a "cli" run, its alerts queued and delivered
	// before exiting.
	register(&command{name: "budget", summary: "poll this month's spend per workspace once against the budgets",
		run: jobCommand(jobs.Budget, "report only: alert nothing")})
}

// printBudgetReport writes spend per workspace, the organization's limits
// and the alerts.
func printBudgetReport(w io.Writer, rep *budget.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKSPACE\tSPEND\tBUDGET\tPLATFORM LIMIT\tUSED\tFORECAST\tNOTE")
	for _, ws := range rep.Workspaces {
		budgetCol, used := "-", "-"
		if ws.BudgetUSD > 0 {
			budgetCol, used = fmt.Sprintf("$%.2f", ws.BudgetUSD), fmt.Sprintf("%.0f%%", ws.Fraction*100)
		}
		note := ws.Error
		if ws.LimitDrift != "" {
			note = strings.TrimPrefix(note+"; limit drift: "+ws.LimitDrift, "; ")
		}
		fmt.Fprintf(tw, "%s\t$%.2f\t%s\t%s\t%s\t$%.2f\t%s\n", ws.Workspace, ws.SpendUSD, budgetCol, ws.PlatformLimit, used, ws.ForecastUSD, note)
	}
	tw.Flush()
	for _, ol := range rep.OrgLimits {
		limit := "no monthly limit"
		if !ol.NoMonthlyLimit && ol.LimitUSD != nil {
			limit = fmt.Sprintf("limit $%.2f", *ol.LimitUSD)
		}
		reached := ""
		if ol.Reached {
			reached = " (REACHED)"
		}
		fmt.Fprintf(w, "organization %s: $%.2f used, %s%s\n", ol.Category, ol.UsageUSD, limit, reached)
	}
	for _, a := range rep.Alerts {
		state := "already sent"
		if a.First {
			state = "new"
		}
		fmt.Fprintf(w, "alert [%s, %s]: %s\n", a.Severity, state, a.Text)
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}
