package scheduler

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
)

// A scheduler under a leader's fenced context journals its runs as that
// leader's, cancels them when the context ends, and once the fence is lost
// its journal writes are refused.
func TestParentContextFencesRuns(t *testing.T) {
	db := openJournal(t)
	ctx := context.Background()
	token, ok, err := db.AcquireFenced(ctx, "leader", "daemon-a", time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	lctx, lose := context.WithCancel(journal.WithFence(ctx, journal.Fence{Name: "leader", Owner: "daemon-a", Token: token}))
	defer lose()
	started := make(chan struct{})
	s := New(Options{Journal: db, Logger: quietLogger(), Context: lctx})
	if err := s.SetJobs(time.UTC, []Job{{Name: "rotate", Runner: jobs.RunnerFunc(func(ctx context.Context, _ jobs.Request) (jobs.Result, error) {
		if _, ok := journal.FenceFrom(ctx); !ok {
			return jobs.Result{}, errors.New("the run's context carries no fence")
		}
		close(started)
		<-ctx.Done()
		return jobs.Result{}, ctx.Err()
	})}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(lctx); err != nil {
		t.Fatal(err)
	}
	r, err := s.Trigger(ctx, "rotate", jobs.Request{Trigger: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	// Another daemon takes the lease over; this one's context ends.
	if err := db.ReleaseFenced(ctx, "leader", "daemon-a", token); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := db.AcquireFenced(ctx, "leader", "daemon-b", time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	lose()
	f := wait(t, r)
	if f.Status != StatusCanceled {
		t.Fatalf("run status %s, want canceled", f.Status)
	}
	// Its end could not be journaled: the fence was lost.
	got, err := db.GetRun(ctx, r.ID)
	if err != nil || got.Status != journal.RunRunning {
		t.Fatalf("journaled run = %+v, %v; want still running (the fenced-out leader cannot finish it)", got, err)
	}
	if n, err := db.AbandonLeaderRuns(ctx, "daemon-b", "its leader lost the lease"); err != nil || n != 1 {
		t.Fatalf("AbandonLeaderRuns = %d, %v; want the run of daemon-a", n, err)
	}
	if _, err := s.Trigger(ctx, "rotate", jobs.Request{Trigger: "cli"}); err == nil {
		t.Fatal("a trigger after the leader's context ended started a run")
	}
	if runs, err := db.Runs(ctx, journal.RunFilter{}); err != nil || len(runs) != 1 {
		t.Fatalf("runs = %d, %v; want only the first", len(runs), err)
	}
}
