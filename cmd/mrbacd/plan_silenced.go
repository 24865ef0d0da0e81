package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/mrbacd/mrbacd/jobs/audit"
	"github.com/mrbacd/mrbacd/state"
)

// planSilenced is a finding an operator snoozed or acknowledged from Slack.
type planSilenced struct {
	Finding string `json:"finding"`
	// How is "snooze" or "ack".
	How   string `json:"how"`
	Until string `json:"until,omitempty"` // snoozes: RFC 3339
	By    string `json:"by"`
	At    string `json:"at"`
}

// planSilencedFindings reads the audit's active snoozes and
// acknowledgements (none without a journal).
func planSilencedFindings(ctx context.Context, db *state.DB, now time.Time) (map[string]planSilenced, error) {
	if db == nil {
		return nil, nil
	}
	sup, err := db.Suppressions(ctx, audit.Scope, now)
	if err != nil {
		return nil, err
	}
	out := make(map[string]planSilenced, len(sup))
	for id, s := range sup {
		ps := planSilenced{Finding: id, How: s.Kind, By: s.By, At: s.At.UTC().Format(time.RFC3339)}
		if s.Kind == state.SuppressSnooze {
			ps.Until = s.Until.UTC().Format(time.RFC3339)
		}
		out[id] = ps
	}
	return out, nil
}

func printSilenced(w io.Writer, ss []planSilenced) {
	if len(ss) == 0 {
		return
	}
	fmt.Fprintf(w, "  silenced from Slack (left out of the digest):\n")
	for _, s := range ss {
		switch s.How {
		case state.SuppressSnooze:
			fmt.Fprintf(w, "    %s: snoozed until %s by %s\n", s.Finding, s.Until, s.By)
		default:
			fmt.Fprintf(w, "    %s: acknowledged by %s at %s (until it resolves)\n", s.Finding, s.By, s.At)
		}
	}
}
