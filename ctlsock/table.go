package ctlsock

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteJobs prints jobs as the table `mrbacd ctl status` shows.
func WriteJobs(w io.Writer, js []Job) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSCHEDULE\tNEXT RUN\tLAST RUN\tRESULT\tNOW")
	for _, j := range js {
		sched, next := j.Schedule, "-"
		if sched == "" {
			sched = "manual"
		}
		if j.Disabled {
			sched += " (disabled)"
		}
		if j.NextRun != nil {
			next = j.NextRun.Format(time.RFC3339)
		}
		last, result := "never", "-"
		if j.LastRun != nil {
			last = j.LastRun.StartedAt.Format(time.RFC3339)
			result = j.LastRun.Status
			if j.LastRun.Summary != "" && j.LastRun.Status != "running" {
				result += ": " + j.LastRun.Summary
			}
		}
		now := "idle"
		if j.Running != nil {
			now = fmt.Sprintf("running (run %d, %s)", j.Running.ID, j.Running.Trigger)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.Name, sched, next, last, result, now)
	}
	tw.Flush()
}
