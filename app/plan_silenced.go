package app

import (
	"context"
	"time"

	"github.com/mrbacd/mrbacd/jobs/audit"
	"github.com/mrbacd/mrbacd/journal"
)

// PlanSilenced is a finding an operator snoozed or acknowledged from Slack.
type PlanSilenced struct {
	Finding string `json:"finding"`
	// How is "snooze" or "ack".
	How   string `json:"how"`
	Until string `json:"until,omitempty"` // snoozes: RFC 3339
	By    string `json:"by"`
	At    string `json:"at"`
}

// planSilencedFindings reads the audit's active snoozes and
// acknowledgements (none without a journal).
func planSilencedFindings(ctx context.Context, db journal.Journal, now time.Time) (map[string]PlanSilenced, error) {
	if db == nil {
		return nil, nil
	}
	sup, err := db.Suppressions(ctx, audit.Scope, now)
	if err != nil {
		return nil, err
	}
	out := make(map[string]PlanSilenced, len(sup))
	for id, s := range sup {
		ps := PlanSilenced{Finding: id, How: s.Kind, By: s.By, At: s.At.UTC().Format(time.RFC3339)}
		if s.Kind == journal.SuppressSnooze {
			ps.Until = s.Until.UTC().Format(time.RFC3339)
		}
		out[id] = ps
	}
	return out, nil
}
