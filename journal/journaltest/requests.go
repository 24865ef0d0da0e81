package journaltest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// A run request goes queued → taken (by one leader only) → started or
// refused; AbandonLeaderRuns cancels only other leaders' fenced runs.
func testRunRequests(t *testing.T, h *harness) {
	ctx := context.Background()
	a, b := h.journal(t), h.journal(t) // two instances on one store
	id, err := a.RequestRun(ctx, "rotate", "uid:1000", `{"key":"dev","force":true}`, "standby-1")
	if err != nil {
		t.Fatal(err)
	}
	id2, err := a.RequestRun(ctx, "nope", "uid:1000", "", "standby-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RequestRun(ctx, "", "uid:1000", "", "standby-1"); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("RequestRun(no job) = %v, want ErrInvalid", err)
	}
	q, err := b.QueuedRunRequests(ctx, 10)
	if err != nil || len(q) != 2 || q[0].ID != id || q[1].ID != id2 {
		t.Fatalf("QueuedRunRequests = %+v, %v; want ids %d, %d", q, err, id, id2)
	}
	if r := q[0]; r.Job != "rotate" || r.Trigger != "uid:1000" || r.Args != `{"key":"dev","force":true}` ||
		r.RequestedBy != "standby-1" || r.Status != journal.RequestQueued || !r.RequestedAt.Equal(h.clk.Now()) {
		t.Fatalf("queued request = %+v", r)
	}
	// Two leaders racing for one request: one takes it.
	okA, errA := a.TakeRunRequest(ctx, id, "leader-a")
	okB, errB := b.TakeRunRequest(ctx, id, "leader-b")
	if errA != nil || errB != nil || okA == okB {
		t.Fatalf("take: a %v %v, b %v %v; want exactly one", okA, errA, okB, errB)
	}
	runID, err := a.StartRun(ctx, "rotate", "uid:1000", `{"key":"dev","force":true}`)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SettleRunRequest(ctx, id, runID, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.SettleRunRequest(ctx, id, runID, ""); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("settling twice = %v, want ErrNotFound", err)
	}
	if ok, err := a.TakeRunRequest(ctx, id2, "leader-a"); !ok || err != nil {
		t.Fatalf("take %d = %v %v", id2, ok, err)
	}
	if err := a.SettleRunRequest(ctx, id2, 0, "unknown job"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		id     int64
		status string
		runID  int64
		errMsg string
	}{
		{"started", id, journal.RequestStarted, runID, ""},
		{"refused", id2, journal.RequestRefused, 0, "unknown job"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := b.GetRunRequest(ctx, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != tc.status || r.RunID != tc.runID || r.Error != tc.errMsg || r.TakenBy == "" || r.TakenAt.IsZero() {
				t.Fatalf("request = %+v, want status %s run %d error %q", r, tc.status, tc.runID, tc.errMsg)
			}
		})
	}
	if q, err := b.QueuedRunRequests(ctx, 10); err != nil || len(q) != 0 {
		t.Fatalf("queue after settling = %+v, %v", q, err)
	}
	if _, err := b.GetRunRequest(ctx, 9999); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("GetRunRequest(9999) = %v", err)
	}
}

// A new leader cancels the runs earlier leaders left running under their
// fence and refuses the requests they took but never started; runs of
// one-shot commands are left alone; the old leader's late writes are refused.
func testAbandonLeaderRuns(t *testing.T, h *harness) {
	ctx := context.Background()
	a, b := h.journal(t), h.journal(t)
	// Runs of leaders: a fenced run records its leader.
	token, ok, err := a.AcquireFenced(ctx, "leader", "leader-a", time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	fa := journal.WithFence(ctx, journal.Fence{Name: "leader", Owner: "leader-a", Token: token})
	oldRun, err := a.StartRun(fa, "audit", "cron", "")
	if err != nil {
		t.Fatal(err)
	}
	oneShot, err := a.StartRun(ctx, "budget", "cli", "")
	if err != nil {
		t.Fatal(err)
	}
	// leader-a had taken a request it never started.
	orphan, _ := a.RequestRun(ctx, "audit", "uid:0", "", "standby-1")
	if ok, err := a.TakeRunRequest(fa, orphan, "leader-a"); !ok || err != nil {
		t.Fatalf("take %d = %v %v", orphan, ok, err)
	}
	h.clk.Add(2 * time.Minute) // leader-a's lease expired; leader-b takes over
	token, ok, err = b.AcquireFenced(ctx, "leader", "leader-b", time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	fb := journal.WithFence(ctx, journal.Fence{Name: "leader", Owner: "leader-b", Token: token})
	newRun, err := b.StartRun(fb, "audit", "cron", "")
	if err != nil {
		t.Fatal(err)
	}
	n, err := b.AbandonLeaderRuns(fb, "leader-b", "its leader lost the lease")
	if err != nil || n != 1 {
		t.Fatalf("AbandonLeaderRuns = %d, %v; want 1", n, err)
	}
	for _, tc := range []struct {
		id     int64
		status string
	}{{oldRun, journal.RunCanceled}, {oneShot, journal.RunRunning}, {newRun, journal.RunRunning}} {
		if r, err := b.GetRun(ctx, tc.id); err != nil || r.Status != tc.status {
			t.Errorf("run %d = %+v, %v; want %s", tc.id, r, err, tc.status)
		}
	}
	if r, err := b.GetRunRequest(ctx, orphan); err != nil || r.Status != journal.RequestRefused || r.Error != "its leader lost the lease" {
		t.Errorf("the request the old leader took = %+v, %v; want refused", r, err)
	}
	// The old leader's late writes are refused.
	if _, err := a.RequestRun(fa, "rotate", "cron", "", "leader-a"); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("a fenced-out request = %v, want ErrFenced", err)
	}
}
