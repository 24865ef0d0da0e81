package scheduler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
)

func openJournal(t *testing.T) *journal.DB {
	t.Helper()
	db, err := journal.Open(context.Background(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatalf("open journal: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// finishes collects OnFinish calls.
type finishes struct {
	mu  sync.Mutex
	all []Finished
}

func (f *finishes) add(_ context.Context, x Finished) {
	f.mu.Lock()
	f.all = append(f.all, x)
	f.mu.Unlock()
}

func (f *finishes) list() []Finished {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Finished(nil), f.all...)
}

func newScheduler(t *testing.T, db *journal.DB, now func() time.Time, js ...Job) (*Scheduler, *finishes) {
	t.Helper()
	fin := &finishes{}
	s := New(Options{Journal: db, Logger: quietLogger(), Now: now, OnFinish: fin.add})
	if err := s.SetJobs(time.UTC, js); err != nil {
		t.Fatalf("set jobs: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	return s, fin
}

func wait(t *testing.T, r *Run) Finished {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := r.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return f
}

func TestRunOutcomesAreJournaled(t *testing.T) {
	tests := []struct {
		name       string
		runner     jobs.RunnerFunc
		timeout    time.Duration
		wantStatus string
		wantErr    string
		wantSum    string
	}{
		{name: "ok", runner: func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
			return jobs.Result{Summary: "rotated 2 of 2 due keys"}, nil
		}, timeout: 0, wantStatus: StatusOK, wantErr: "", wantSum: "rotated 2 of 2 due keys"},
		{name: "partial failure", runner: func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
			return jobs.Result{Failed: true, Summary: "rotated 1 of 2 due keys"}, nil
		}, timeout: 0, wantStatus: StatusFailed, wantErr: "", wantSum: "rotated 1 of 2 due keys"},
		{name: "error", runner: func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
			return jobs.Result{}, errors.New("platform unreachable")
		}, timeout: 0, wantStatus: StatusFailed, wantErr: "platform unreachable", wantSum: ""},
		{name: "panic", runner: func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
			var m map[string]int
			m["boom"]++ //lint:ignore SA5000 a real nil-map panic is the point of this case
			return jobs.Result{}, nil
		}, timeout: 0, wantStatus: StatusPanicked, wantErr: "panic: assignment to entry in nil map", wantSum: ""},
		{name: "timeout", runner: func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
			<-ctx.Done()
			return jobs.Result{}, ctx.Err()
		}, timeout: 50 * time.Millisecond, wantStatus: StatusFailed, wantErr: "timed out after 50ms", wantSum: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openJournal(t)
			s, fin := newScheduler(t, db, nil, Job{Name: "audit", Timeout: tc.timeout, Runner: tc.runner})
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			r, err := s.Trigger(context.Background(), "audit", jobs.Request{Trigger: "uid:1000", Key: "dev-team-key"})
			if err != nil {
				t.Fatalf("trigger: %v", err)
			}
			f := wait(t, r)
			if f.Status != tc.wantStatus {
				t.Errorf("status = %q, want %q (err %v)", f.Status, tc.wantStatus, f.Err)
			}
			run, err := db.GetRun(context.Background(), r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if run.Status != tc.wantStatus || run.Trigger != "uid:1000" || run.Job != "audit" {
				t.Errorf("journaled %+v", run)
			}
			if tc.wantErr != "" && !strings.Contains(run.Error, tc.wantErr) {
				t.Errorf("journaled error %q, want it to contain %q", run.Error, tc.wantErr)
			}
			if tc.wantErr == "" && run.Error != "" {
				t.Errorf("journaled error %q, want none", run.Error)
			}
			if !strings.Contains(run.Summary, tc.wantSum) || !strings.Contains(run.Args, `"key":"dev-team-key"`) {
				t.Errorf("summary %q args %q", run.Summary, run.Args)
			}
			if got := fin.list(); len(got) != 1 || got[0].RunID != r.ID || (tc.wantStatus == StatusPanicked) != (got[0].Panic != nil) {
				t.Errorf("OnFinish calls = %+v", got)
			}
			// The slot is free again: the scheduler is alive after any outcome.
			r2, err := s.Trigger(context.Background(), "audit", jobs.Request{Trigger: "cli"})
			if err != nil {
				t.Fatalf("second trigger after %s: %v", tc.name, err)
			}
			wait(t, r2)
		})
	}
}

func TestNoOverlapAndUnknownJob(t *testing.T) {
	db := openJournal(t)
	release := make(chan struct{})
	var calls atomic.Int32
	block := jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
		calls.Add(1)
		select {
		case <-release:
			return jobs.Result{Summary: "done"}, nil
		case <-ctx.Done():
			return jobs.Result{}, ctx.Err()
		}
	})
	s, _ := newScheduler(t, db, nil, Job{Name: "rotate", Schedule: "0 3 * * *", Runner: block})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := s.Trigger(context.Background(), "rotate", jobs.Request{Trigger: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		job     string
		wantErr error
		wantMsg string
	}{
		{job: "rotate", wantErr: ErrAlreadyRunning, wantMsg: "asked by cli"},
		{job: "rotate", wantErr: ErrAlreadyRunning, wantMsg: "run 1"},
		{job: "nope", wantErr: ErrUnknownJob, wantMsg: `"nope"`},
	}
	for _, tc := range tests {
		_, err := s.Trigger(context.Background(), tc.job, jobs.Request{Trigger: "uid:0"})
		if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
			t.Errorf("trigger %s: err = %v, want %v containing %q", tc.job, err, tc.wantErr, tc.wantMsg)
		}
	}
	// A cron fire while running is skipped too (not queued).
	s.fire("rotate")
	js := s.Jobs()
	if len(js) != 1 || js[0].Running == nil || js[0].Running.ID != r.ID || js[0].Next.IsZero() {
		t.Errorf("jobs while running = %+v", js)
	}
	close(release)
	wait(t, r)
	if n := calls.Load(); n != 1 {
		t.Errorf("runner called %d times, want 1 (no queued runs)", n)
	}
	if js := s.Jobs(); js[0].Running != nil {
		t.Errorf("still running after finish: %+v", js[0].Running)
	}
	runs, err := db.Runs(context.Background(), journal.RunFilter{Job: "rotate"})
	if err != nil || len(runs) != 1 {
		t.Errorf("runs = %v, %v; want exactly 1", runs, err)
	}
}

// TestConcurrentTriggersStartOneRun: triggers racing for an idle job start
// exactly one run; the others are refused while it is still being journaled
// or running (under -race this also checks the refusal reads the run safely).
func TestConcurrentTriggersStartOneRun(t *testing.T) {
	db := openJournal(t)
	release := make(chan struct{})
	s, _ := newScheduler(t, db, nil, Job{Name: "audit", Runner: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
		<-release
		return jobs.Result{Summary: "done"}, nil
	})})
	const n = 8
	var wg sync.WaitGroup
	var started atomic.Int32
	runs := make(chan *Run, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.Trigger(context.Background(), "audit", jobs.Request{Trigger: "cli"})
			if err != nil {
				errs <- err
				return
			}
			started.Add(1)
			runs <- r
		}()
	}
	wg.Wait()
	close(errs)
	if got := started.Load(); got != 1 {
		t.Fatalf("%d runs started, want 1", got)
	}
	for err := range errs {
		if !errors.Is(err, ErrAlreadyRunning) {
			t.Errorf("refused trigger: %v, want ErrAlreadyRunning", err)
		}
	}
	close(release)
	if f := wait(t, <-runs); f.Status != StatusOK {
		t.Errorf("run status %s", f.Status)
	}
}

func TestStopCancelsRunsAndRefusesWork(t *testing.T) {
	db := openJournal(t)
	started := make(chan struct{})
	s, _ := newScheduler(t, db, nil, Job{Name: "rotate", Runner: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
		close(started)
		<-ctx.Done()
		return jobs.Result{}, ctx.Err()
	})})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := s.Trigger(context.Background(), "rotate", jobs.Request{Trigger: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if f := wait(t, r); f.Status != StatusCanceled {
		t.Errorf("status = %q, want canceled", f.Status)
	}
	run, _ := db.GetRun(context.Background(), r.ID)
	if run.Status != StatusCanceled || !strings.Contains(run.Error, "shutdown") {
		t.Errorf("journaled %+v", run)
	}
	if _, err := s.Trigger(context.Background(), "rotate", jobs.Request{Trigger: "cli"}); !errors.Is(err, ErrStopped) {
		t.Errorf("trigger after stop: %v, want ErrStopped", err)
	}
}

func TestCatchUpOnceAfterDowntime(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		schedule string
		lastFire time.Time // zero: never fired
		disabled bool
		want     int // catch-up runs
	}{
		{name: "never fired: nothing missed", schedule: "0 3 * * *", lastFire: time.Time{}, disabled: false, want: 0},
		{name: "fired today at 03:00: nothing missed", schedule: "0 3 * * *", lastFire: now.Add(-9 * time.Hour), disabled: false, want: 0},
		{name: "down over one 03:00", schedule: "0 3 * * *", lastFire: now.Add(-30 * time.Hour), disabled: false, want: 1},
		{name: "down for a week: caught up once", schedule: "0 3 * * *", lastFire: now.Add(-7 * 24 * time.Hour), disabled: false, want: 1},
		{name: "every 30 min, down 2h: once", schedule: "*/30 * * * *", lastFire: now.Add(-2 * time.Hour), disabled: false, want: 1},
		{name: "disabled job is not caught up", schedule: "0 3 * * *", lastFire: now.Add(-30 * time.Hour), disabled: true, want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openJournal(t)
			ctx := context.Background()
			if !tc.lastFire.IsZero() {
				if err := db.SetLastFire(ctx, "rotate", tc.lastFire); err != nil {
					t.Fatal(err)
				}
			}
			var calls atomic.Int32
			s, fin := newScheduler(t, db, func() time.Time { return now }, Job{Name: "rotate", Schedule: tc.schedule, Disabled: tc.disabled,
				Runner: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
					calls.Add(1)
					return jobs.Result{Summary: "caught up"}, nil
				})})
			if err := s.Start(ctx); err != nil {
				t.Fatal(err)
			}
			testenv.WaitFor(t, 5*time.Second, "the catch-up runs", func() bool { return len(fin.list()) >= tc.want })
			// Start triggered every catch-up run before returning: once
			// stopped (its runs journaled), a wrong second run would show.
			if err := s.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if got := int(calls.Load()); got != tc.want {
				t.Fatalf("catch-up runs = %d, want %d", got, tc.want)
			}
			runs, err := db.Runs(ctx, journal.RunFilter{Job: "rotate"})
			if err != nil || len(runs) != tc.want {
				t.Fatalf("runs = %+v, %v", runs, err)
			}
			if tc.want == 1 && runs[0].Trigger != TriggerCatchUp {
				t.Errorf("trigger = %q, want catch-up", runs[0].Trigger)
			}
			last, ok, err := db.LastFire(ctx, "rotate")
			if tc.disabled {
				if !last.Equal(tc.lastFire) {
					t.Errorf("disabled job's last fire changed to %v", last)
				}
				return
			}
			want := now // first start and catch-up record now
			if tc.want == 0 && !tc.lastFire.IsZero() {
				want = tc.lastFire // nothing missed: untouched
			}
			if err != nil || !ok || !last.Equal(want) {
				t.Errorf("last fire = %v %v %v, want %v", last, ok, err, want)
			}
		})
	}
}

func TestCronFiresAndReloadReplacesRunner(t *testing.T) {
	db := openJournal(t)
	var first, second atomic.Int32
	s, fin := newScheduler(t, db, nil, Job{Name: "budget", Schedule: "@every 1s", Runner: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
		first.Add(1)
		if req.Trigger != TriggerCron || req.RunID == 0 {
			return jobs.Result{}, errors.New("bad request " + req.Trigger)
		}
		return jobs.Result{Summary: "polled"}, nil
	})})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "a cron fire", func() bool { return first.Load() > 0 })
	// An invalid reload changes nothing.
	err := s.SetJobs(time.UTC, []Job{{Name: "budget", Schedule: "61 * * * *", Runner: jobs.RunnerFunc(nil)}})
	if !errors.Is(err, ErrInvalidSchedule) {
		t.Fatalf("invalid schedule accepted: %v", err)
	}
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetJobs(paris, []Job{{Name: "budget", Schedule: "@every 1s", Runner: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
		second.Add(1)
		return jobs.Result{Summary: "polled v2"}, nil
	})}}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "a fire of the reloaded job", func() bool { return second.Load() > 0 })
	if s.Location() != paris {
		t.Fatalf("reloaded job never fired (loc %v)", s.Location())
	}
	for _, f := range fin.list() {
		if f.Status != StatusOK {
			t.Errorf("run %d: %s %v", f.RunID, f.Status, f.Err)
		}
	}
}

func TestSetJobsRejects(t *testing.T) {
	ok := jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) { return jobs.Result{}, nil })
	tests := []struct {
		name string
		jobs []Job
		want string
	}{
		{name: "bad cron", jobs: []Job{{Name: "a", Schedule: "* * *", Runner: ok}}, want: "invalid cron schedule"},
		{name: "no runner", jobs: []Job{{Name: "a"}}, want: "no runner"},
		{name: "duplicate", jobs: []Job{{Name: "a", Runner: ok}, {Name: "a", Runner: ok}}, want: "twice"},
		{name: "no name", jobs: []Job{{Runner: ok}}, want: "no name"},
		{name: "negative timeout", jobs: []Job{{Name: "a", Runner: ok, Timeout: -time.Second}}, want: "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{Journal: openJournal(t), Logger: quietLogger()})
			err := s.SetJobs(nil, tc.jobs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
