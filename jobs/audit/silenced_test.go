package audit

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
)

// Findings snoozed or acknowledged from Slack stay out of the digests: a
// snoozed new finding is reported when the snooze ends, an acknowledged one
// not while it stays open.
func TestSilencedFindingsLeftOut(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	if err := w.journal.Snooze(ctx, Scope, "unused/a0000000-0000-4000-8000-000000000003", w.now.Add(7*24*time.Hour), "slack:U0OPERATOR1"); err != nil {
		t.Fatal(err)
	}
	w.run(t, jobs.Request{RunID: 1, Trigger: "cron"})
	d := w.notes.last(t)
	if slices.Contains(ids(d.New), "unused/a0000000-0000-4000-8000-000000000003") || len(d.New) != len(fixtureFindings)-1 {
		t.Fatalf("night 1 new = %v", ids(d.New))
	}
	if err := w.journal.Acknowledge(ctx, Scope, "overdue/a0000000-0000-4000-8000-000000000004", "slack:U0OPERATOR1"); err != nil {
		t.Fatal(err)
	}
	nights := []struct {
		name        string
		after       time.Duration
		wantNew     []string
		wantPersist int
	}{
		{name: "night 2: snoozed and acknowledged left out", after: 24 * time.Hour, wantPersist: len(fixtureFindings) - 2},
		{name: "night 8: the snooze ended: news", after: 6 * 24 * time.Hour, wantNew: []string{"unused/a0000000-0000-4000-8000-000000000003"}, wantPersist: len(fixtureFindings) - 2},
		{name: "night 9: reported once", after: 24 * time.Hour, wantPersist: len(fixtureFindings) - 1},
	}
	for _, n := range nights {
		w.now = w.now.Add(n.after)
		w.run(t, jobs.Request{RunID: 2, Trigger: "cron"})
		d := w.notes.last(t)
		total := 0
		for _, c := range d.Persisting {
			total += c
		}
		if got := ids(d.New); !slices.Equal(got, n.wantNew) && !(len(got) == 0 && len(n.wantNew) == 0) || total != n.wantPersist {
			t.Errorf("%s: new %v, persisting %d; want %v, %d", n.name, got, total, n.wantNew, n.wantPersist)
		}
	}
}
