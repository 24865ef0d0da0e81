package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/ctlsock"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/journal/postgres"
)

// haLease is the tests' ha.lease: the shortest allowed, so fail-overs take
// about a second.
const haLease = time.Second

// pausable is a daemon's journal whose election calls can be paused, as
// for a process stopped (SIGSTOP) or cut off from the database: each
// blocks until resumed or its context ends.
type pausable struct {
	journal.Journal
	mu     sync.Mutex
	paused chan struct{}
}

func (p *pausable) gate(ctx context.Context) error {
	p.mu.Lock()
	ch := p.paused
	p.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pausable) pause() { p.mu.Lock(); p.paused = make(chan struct{}); p.mu.Unlock() }
func (p *pausable) resume() {
	p.mu.Lock()
	close(p.paused)
	p.paused = nil
	p.mu.Unlock()
}

func (p *pausable) AcquireFenced(ctx context.Context, name, owner string, ttl time.Duration) (int64, bool, error) {
	if err := p.gate(ctx); err != nil {
		return 0, false, err
	}
	return p.Journal.AcquireFenced(ctx, name, owner, ttl)
}

func (p *pausable) RenewFenced(ctx context.Context, name, owner string, token int64, ttl time.Duration) (bool, error) {
	if err := p.gate(ctx); err != nil {
		return false, err
	}
	return p.Journal.RenewFenced(ctx, name, owner, token, ttl)
}

// haRunners are one daemon's jobs: rotate journals a rotation and waits in
// its "propagation" until cancelled (keeping the fenced context it ran
// under, as a paused process would); resume finishes the rotations in
// flight; budget says which instance ran it.
type haRunners struct {
	name string
	mu   sync.Mutex
	// rotateCtx is the context of the latest rotate run, stripped of its
	// cancellation: what a paused leader's goroutine still holds.
	rotateCtx context.Context
	resumed   []string
}

func (r *haRunners) build(ctx context.Context, env Env) (*Components, error) {
	j := env.Journal
	return &Components{
		Runners: map[string]jobs.Runner{
			jobs.Rotate: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
				r.mu.Lock()
				r.rotateCtx = context.WithoutCancel(ctx)
				r.mu.Unlock()
				now := time.Now().UTC()
				err := j.BeginRotation(ctx, journal.Rotation{ID: fmt.Sprintf("rot-%d", req.RunID), KeyName: "dev-team-key",
					Step: journal.StepBegin, Status: journal.StatusInFlight, Trigger: req.Trigger, StartedAt: now, UpdatedAt: now})
				if err != nil {
					return jobs.Result{}, err
				}
				<-ctx.Done()
				return jobs.Result{}, fmt.Errorf("rotate: stopped in the propagation wait: %w", ctx.Err())
			}),
			jobs.Budget: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
				return jobs.Result{Summary: fmt.Sprintf("polled by %s (key %q)", r.name, req.Key)}, nil
			}),
		},
		Resume: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
			inflight, err := j.InFlightRotations(ctx)
			if err != nil {
				return jobs.Result{}, err
			}
			for _, rot := range inflight {
				rot.Step, rot.Status, rot.Error = journal.StepDone, journal.StatusDone, "resumed by "+r.name
				rot.UpdatedAt, rot.FinishedAt = time.Now().UTC(), time.Now().UTC()
				if err := j.UpdateRotation(ctx, rot); err != nil {
					return jobs.Result{}, err
				}
				r.mu.Lock()
				r.resumed = append(r.resumed, rot.ID)
				r.mu.Unlock()
			}
			return jobs.Result{Summary: fmt.Sprintf("resumed %d", len(inflight))}, nil
		}),
	}, nil
}

func (r *haRunners) lateCtx() context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rotateCtx
}

// member is one daemon of a cluster.
type member struct {
	name   string
	d      *Daemon
	j      *pausable
	r      *haRunners
	client *ctlsock.Client
	logs   *testenv.LogBuffer
	stop   func()
}

// haCluster starts n daemons on one new PostgreSQL database.
func haCluster(t *testing.T, n int) []*member {
	t.Helper()
	pg := testenv.Postgres(t)
	t.Setenv("MRBACD_TEST_HA_DSN", pg.DSN)
	ms := make([]*member, n)
	for i := range ms {
		ms[i] = startMember(t, fmt.Sprintf("daemon-%d", i))
	}
	return ms
}

func startMember(t *testing.T, name string) *member {
	t.Helper()
	dir, err := os.MkdirTemp("", "mrbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfgPath := filepath.Join(dir, "mrbacd.yaml")
	writeConfig(t, cfgPath, dir, fmt.Sprintf("ha: {lease: %s}\njobs:\n  audit: {disabled: true}\n", haLease))
	// The state is the shared database, not the file writeConfig names.
	data, _ := os.ReadFile(cfgPath)
	data = []byte(strings.Replace(string(data), fmt.Sprintf("state: {path: %s/state.db}", dir),
		"state: {postgres: {dsn_env: MRBACD_TEST_HA_DSN}}", 1))
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	m := &member{name: name, r: &haRunners{name: name}, logs: &testenv.LogBuffer{}}
	logger, lv, err := NewLogger(m.logs, "json", "debug")
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{ConfigPath: cfgPath, Version: "test", Logger: logger, LogLevel: lv, Build: m.r.build,
		Instance: name, RequestPoll: 50 * time.Millisecond,
		OpenJournal: func(ctx context.Context, cfg *config.Config) (journal.Journal, error) {
			db, err := postgres.Open(ctx, os.Getenv(cfg.State.Postgres.DSNEnv))
			if err != nil {
				return nil, err
			}
			m.j = &pausable{Journal: db}
			return m.j, nil
		}}
	m.d, err = New(context.Background(), opts)
	if err != nil {
		t.Fatalf("%s: new: %v", name, err)
	}
	if err := m.d.Start(context.Background()); err != nil {
		t.Fatalf("%s: start: %v", name, err)
	}
	var once sync.Once
	m.stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m.d.Shutdown(ctx)
		})
	}
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, m.logs.String())
		}
	})
	m.client = ctlsock.NewClient(m.d.AdminSocket())
	return m
}

// leaderOf waits until exactly one of ms leads and every one's status names
// it, and returns it.
func leaderOf(t *testing.T, ms []*member, within time.Duration) *member {
	t.Helper()
	var leader *member
	testenv.WaitFor(t, within, "one leader that every instance names", func() bool {
		leader = nil
		for _, m := range ms {
			if m.d.Leading() {
				if leader != nil {
					t.Fatalf("two leaders: %s and %s", leader.name, m.name)
				}
				leader = m
			}
		}
		if leader == nil {
			return false
		}
		for _, m := range ms {
			st, err := m.client.Status(context.Background())
			if err != nil || st.LeaderInstance != leader.name || st.Leader != (m == leader) || st.Instance != m.name ||
				st.LeaseExpires == nil {
				return false
			}
		}
		return true
	})
	return leader
}

func others(ms []*member, x *member) []*member {
	var out []*member
	for _, m := range ms {
		if m != x {
			out = append(out, m)
		}
	}
	return out
}

// Three daemons on one journal: one leads, and only its scheduler runs;
// stopped, it hands over at once; ctl run on a standby runs on the leader.
func TestHAThreeDaemons(t *testing.T) {
	ms := haCluster(t, 3)
	ctx := context.Background()
	a := leaderOf(t, ms, 3*haLease)
	for _, m := range others(ms, a) {
		if m.d.Scheduler().Jobs()[0].Running != nil {
			t.Errorf("%s: a standby runs a job", m.name)
		}
		if !m.logs.Contains(`"leader":false`) {
			t.Errorf("%s: the ready line does not say it is a standby", m.name)
		}
	}
	if !a.logs.Contains(`"msg":"leadership gained: running the schedule"`) {
		t.Errorf("no leadership line in the leader's log:\n%s", a.logs.String())
	}

	// ctl run on a standby, with and without --wait.
	standby := others(ms, a)[0]
	for _, tc := range []struct {
		name string
		req  ctlsock.RunRequest
	}{
		{name: "wait", req: ctlsock.RunRequest{Wait: true, Key: "dev-team-key"}},
		{name: "no wait", req: ctlsock.RunRequest{}},
	} {
		t.Run("ctl run on a standby: "+tc.name, func(t *testing.T) {
			run, err := standby.client.RunJob(ctx, "budget", tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if run.RequestID == 0 {
				t.Fatalf("run = %+v: not queued for the leader", run)
			}
			if !tc.req.Wait {
				if run.Status != ctlsock.StatusQueued {
					t.Fatalf("run = %+v, want queued", run)
				}
				testenv.WaitFor(t, 5*time.Second, "the leader to run the queued request", func() bool {
					rq, err := a.d.Journal().GetRunRequest(ctx, run.RequestID)
					if err != nil || rq.RunID == 0 {
						return false
					}
					r, err := a.d.Journal().GetRun(ctx, rq.RunID)
					return err == nil && r.Status == journal.RunOK && strings.Contains(r.Summary, "polled by "+a.name)
				})
				return
			}
			if run.Status != "ok" || run.RunBy != a.name || !strings.Contains(run.Summary, fmt.Sprintf("polled by %s (key %q)", a.name, "dev-team-key")) {
				t.Fatalf("run = %+v, want ok, run by %s", run, a.name)
			}
		})
	}
	// Unknown jobs and keys are refused on the standby itself.
	for _, tc := range []struct {
		job, key string
		code     int
	}{{job: "nope", key: "", code: 404}, {job: "budget", key: "ghost", code: 422}} {
		_, err := standby.client.RunJob(ctx, tc.job, ctlsock.RunRequest{Key: tc.key})
		var ae *ctlsock.APIError
		if !errors.As(err, &ae) || ae.StatusCode != tc.code {
			t.Errorf("run %s --key %q on a standby: %v, want %d", tc.job, tc.key, err, tc.code)
		}
	}

	// The leader stops: a standby leads within a renewal period.
	stopped := time.Now()
	a.stop()
	b := leaderOf(t, others(ms, a), haLease)
	t.Logf("hand-over in %s", time.Since(stopped))
	if st := b.d.Elector().Status(); st.Previous != a.name || st.Takeover {
		t.Errorf("new leader's status %+v, want a hand-over from %s", st, a.name)
	}
}

// The leader stops renewing (paused): a standby leads within the lease and
// resumes the rotation in flight; the paused leader's late writes are
// refused; resumed, it follows.
func TestHALeaderPaused(t *testing.T) {
	ms := haCluster(t, 2)
	ctx := context.Background()
	a := leaderOf(t, ms, 3*haLease)
	run, err := a.client.RunJob(ctx, "rotate", ctlsock.RunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "the rotation in flight", func() bool {
		rs, err := a.d.Journal().InFlightRotations(ctx)
		return err == nil && len(rs) == 1
	})
	// A standby's jobs list shows the run in progress on the leader.
	js, err := others(ms, a)[0].client.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range js {
		if j.Name == "rotate" && (j.Running == nil || j.Running.ID != run.ID) {
			t.Errorf("a standby's jobs list: rotate running %+v, want run %d", j.Running, run.ID)
		}
	}
	late := a.r.lateCtx()
	paused := time.Now()
	a.j.pause()
	testenv.WaitFor(t, haLease, "the paused leader to stand down", func() bool { return !a.d.Leading() })
	b := leaderOf(t, ms, 2*haLease)
	took := time.Since(paused)
	// Within the lease of the last renewal, plus the new leader's setup
	// (a few journal round trips) on a machine the other tests load.
	if took > 2*haLease {
		t.Errorf("fail-over took %s, want within the lease (%s) and a poll", took, haLease)
	}
	if st := b.d.Elector().Status(); st.Previous != a.name || !st.Takeover {
		t.Errorf("new leader's status %+v, want a takeover from %s", st, a.name)
	}
	testenv.WaitFor(t, 5*time.Second, "the new leader to resume the rotation", func() bool {
		b.r.mu.Lock()
		defer b.r.mu.Unlock()
		return len(b.r.resumed) == 1 && b.r.resumed[0] == fmt.Sprintf("rot-%d", run.ID)
	})
	// What the paused leader writes when it wakes, with the context its
	// run held, is refused and changes nothing.
	_, err = a.d.Journal().StartRun(late, "rotate", "late", "")
	if !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("the paused leader's late write: %v, want ErrFenced", err)
	}
	if runs, _ := b.d.Journal().Runs(ctx, journal.RunFilter{Job: "rotate"}); len(runs) == 0 || runs[0].Trigger == "late" {
		t.Fatalf("the refused write landed: %+v", runs)
	}
	if r, err := b.d.Journal().GetRun(ctx, run.ID); err != nil || r.Status != journal.RunCanceled {
		t.Errorf("the paused leader's run = %+v, %v; want canceled", r, err)
	}
	a.j.resume()
	deadline := time.Now().Add(haLease / 2)
	for time.Now().Before(deadline) {
		if a.d.Leading() || !b.d.Leading() {
			t.Fatalf("after resume: %s leads %v, %s leads %v", a.name, a.d.Leading(), b.name, b.d.Leading())
		}
		// sleep: sampling, over half a lease, that the resumed leader stays a standby: the elapsed time is what is checked.
		time.Sleep(20 * time.Millisecond)
	}
	if !a.logs.Contains(`"msg":"leadership lost: the schedule stopped"`) {
		t.Errorf("the paused leader did not log losing leadership:\n%s", a.logs.String())
	}
}

// ha.lease is taken at start: a reload that changes it says so.
func TestHALeaseChangeNeedsARestart(t *testing.T) {
	h := start(t, "ha: {lease: 2s}\n")
	if !h.d.Leading() {
		t.Fatal("a daemon alone on its journal does not lead")
	}
	writeConfig(t, h.cfg, h.dir, "ha: {lease: 3s}\n")
	rel, err := h.client.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(rel.Notes, "\n"), `ha.lease changed ("2s" → "3s"): takes effect after a restart`) {
		t.Errorf("reload notes %q lack the ha.lease change", rel.Notes)
	}
}
