package election_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/election"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/journal/journaltest"
)

// ttl is short so tests take seconds; a third of it is the renewal period.
const ttl = 1200 * time.Millisecond

// errDead is what a killed contender's journal calls fail with.
var errDead = errors.New("contender killed")

// faulty is a contender's way to the journal, which the test can pause
// (every call blocks until resumed or its context ends, as for a process
// stopped by SIGSTOP or cut off) or kill (every call fails).
type faulty struct {
	election.Lessor
	mu     sync.Mutex
	paused chan struct{} // closed on resume; nil when running
	dead   bool
	// acquires counts the acquisitions that got through to the journal.
	acquires atomic.Int64
}

func (f *faulty) gate(ctx context.Context) error {
	f.mu.Lock()
	p, dead := f.paused, f.dead
	f.mu.Unlock()
	if dead {
		return errDead
	}
	if p != nil {
		select {
		case <-p:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (f *faulty) pause() { f.mu.Lock(); f.paused = make(chan struct{}); f.mu.Unlock() }
func (f *faulty) resume() {
	f.mu.Lock()
	close(f.paused)
	f.paused = nil
	f.mu.Unlock()
}
func (f *faulty) kill() { f.mu.Lock(); f.dead = true; f.mu.Unlock() }

func (f *faulty) AcquireFenced(ctx context.Context, name, owner string, ttl time.Duration) (int64, bool, error) {
	if err := f.gate(ctx); err != nil {
		return 0, false, err
	}
	f.acquires.Add(1)
	return f.Lessor.AcquireFenced(ctx, name, owner, ttl)
}

func (f *faulty) RenewFenced(ctx context.Context, name, owner string, token int64, ttl time.Duration) (bool, error) {
	if err := f.gate(ctx); err != nil {
		return false, err
	}
	return f.Lessor.RenewFenced(ctx, name, owner, token, ttl)
}

func (f *faulty) ReleaseFenced(ctx context.Context, name, owner string, token int64) error {
	if err := f.gate(ctx); err != nil {
		return err
	}
	return f.Lessor.ReleaseFenced(ctx, name, owner, token)
}

// contender is one daemon: its own journal handle, elector and lead function.
type contender struct {
	name string
	j    journal.Journal
	f    *faulty
	e    *election.Elector
	stop context.CancelFunc
	done chan struct{}

	mu     sync.Mutex
	fenced context.Context // the latest tenure's lead context
}

// leadCtx returns the context of the contender's latest tenure, stripped of
// its cancellation: what a goroutine paused mid-work still holds.
func (c *contender) leadCtx() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return context.WithoutCancel(c.fenced)
}

// leading reports whether the contender's lead function runs the tenure
// token (the elector says it leads a moment before).
func (c *contender) leading(token int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fenced == nil {
		return false
	}
	f, ok := journal.FenceFrom(c.fenced)
	return ok && f.Token == token
}

// cluster starts n contenders, each on its own handle of one new store.
func cluster(t *testing.T, b journaltest.Backend, n int) []*contender {
	t.Helper()
	open := b.New(t)
	cs := make([]*contender, n)
	for i := range cs {
		j, err := open(t)
		if err != nil {
			t.Fatal(err)
		}
		c := &contender{name: fmt.Sprintf("daemon-%d", i), j: j, f: &faulty{Lessor: j}, done: make(chan struct{})}
		c.e, err = election.New(c.f, election.Config{Instance: c.name, TTL: ttl,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		c.stop = cancel
		go func() {
			defer close(c.done)
			c.e.Run(ctx, func(lctx context.Context) {
				c.mu.Lock()
				c.fenced = lctx
				c.mu.Unlock()
				<-lctx.Done()
			})
		}()
		t.Cleanup(func() { cancel(); <-c.done })
		cs[i] = c
	}
	watchOneLeader(t, cs)
	return cs
}

// watchOneLeader fails the test if two contenders ever think they lead at
// once, until the test ends.
func watchOneLeader(t *testing.T, cs []*contender) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var leaders []string
			for _, c := range cs {
				if c.e.Status().Leader {
					leaders = append(leaders, c.name)
				}
			}
			if len(leaders) > 1 {
				t.Errorf("two leaders at once: %v", leaders)
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// waitLeader waits until exactly one of cs leads, agreeing with the journal,
// and returns it.
func waitLeader(t *testing.T, cs []*contender, within time.Duration) *contender {
	t.Helper()
	var leader *contender
	testenv.WaitFor(t, within, fmt.Sprintf("a single leader among %d contenders", len(cs)), func() bool {
		leader = singleLeader(cs)
		return leader != nil
	})
	return leader
}

// singleLeader returns the one contender of cs that leads and holds the
// journal's lease, or nil when none or several lead.
func singleLeader(cs []*contender) *contender {
	var leader *contender
	n := 0
	for _, c := range cs {
		if c.e.Status().Leader {
			leader, n = c, n+1
		}
	}
	if n != 1 {
		return nil
	}
	info, ok, err := leader.e.Leader(context.Background())
	if err != nil || !ok || info.Owner != leader.name || info.Token != leader.e.Status().Token || !leader.leading(info.Token) {
		return nil
	}
	return leader
}

func without(cs []*contender, x *contender) []*contender {
	var out []*contender
	for _, c := range cs {
		if c != x {
			out = append(out, c)
		}
	}
	return out
}

// fencedWrite writes a once-mark as the leader's jobs would; the mark is
// found afterwards only if the write was accepted.
func fencedWrite(ctx context.Context, j journal.Journal, mark string) error {
	_, err := j.MarkOnce(ctx, mark)
	return err
}

func TestElection(t *testing.T) {
	for _, b := range journaltest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Run("TwoContendersHandOver", func(t *testing.T) { testHandOver(t, b) })
			t.Run("ThreeContendersLeaderKilled", func(t *testing.T) { testKilled(t, b) })
			t.Run("LeaderPausedIsFenced", func(t *testing.T) { testPaused(t, b) })
		})
	}
}

// Two contenders: one leads, its fenced writes land; it stops gracefully
// and the standby takes over within a renewal period, with a newer token.
func testHandOver(t *testing.T, b journaltest.Backend) {
	cs := cluster(t, b, 2)
	a := waitLeader(t, cs, 3*ttl)
	tokA := a.e.Status().Token
	if err := fencedWrite(a.leadCtx(), a.j, "a-while-leading"); err != nil {
		t.Fatalf("leader's fenced write: %v", err)
	}
	stopped := time.Now()
	a.stop()
	<-a.done
	bl := waitLeader(t, without(cs, a), ttl)
	took := time.Since(stopped)
	if tok := bl.e.Status().Token; tok <= tokA {
		t.Fatalf("new leader's token %d, old %d", tok, tokA)
	}
	if st := bl.e.Status(); st.Previous != a.name || st.Takeover {
		t.Errorf("new leader's status: previous %q takeover %v, want %q handed over", st.Previous, st.Takeover, a.name)
	}
	if took > ttl/3+ttl/2 {
		t.Errorf("hand-over took %s, want about a renewal period (%s)", took, ttl/3)
	}
	if err := fencedWrite(a.leadCtx(), a.j, "a-after-stop"); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("old leader's write after hand-over: %v, want ErrFenced", err)
	}
	if ok, _ := bl.j.Marked(context.Background(), "a-after-stop"); ok {
		t.Fatal("the refused write landed")
	}
	t.Logf("hand-over in %s", took)
}

// Three contenders: the leader is killed (its journal calls fail, it never
// releases); a standby takes over once the lease expires, then again when
// that one is killed.
func testKilled(t *testing.T, b journaltest.Backend) {
	cs := cluster(t, b, 3)
	alive := cs
	var last int64
	for round := 0; round < 2; round++ {
		l := waitLeader(t, alive, 3*ttl)
		if tok := l.e.Status().Token; tok <= last {
			t.Fatalf("round %d: token %d not above %d", round, tok, last)
		}
		last = l.e.Status().Token
		killed := time.Now()
		l.f.kill()
		alive = without(alive, l)
		next := waitLeader(t, alive, 3*ttl)
		took := time.Since(killed)
		if st := next.e.Status(); st.Previous != l.name || !st.Takeover {
			t.Errorf("round %d: new leader's status: previous %q takeover %v, want a takeover from %q", round, st.Previous, st.Takeover, l.name)
		}
		if took > ttl+ttl/4 {
			t.Errorf("round %d: fail-over took %s, want within the TTL (%s)", round, took, ttl)
		}
		if err := fencedWrite(l.leadCtx(), next.j, fmt.Sprint("killed-", round)); !errors.Is(err, journal.ErrFenced) {
			t.Fatalf("round %d: killed leader's tenure still accepted: %v", round, err)
		}
		if err := fencedWrite(next.leadCtx(), next.j, fmt.Sprint("next-", round)); err != nil {
			t.Fatalf("round %d: new leader's write: %v", round, err)
		}
		t.Logf("round %d: fail-over in %s", round, took)
	}
}

// The leader is paused (its renewals block): a standby takes over after the
// lease expires, and a write the paused leader makes when it wakes, with
// the fence it held, is refused and changes nothing. Resumed, it follows.
func testPaused(t *testing.T, b journaltest.Backend) {
	cs := cluster(t, b, 2)
	a := waitLeader(t, cs, 3*ttl)
	late := a.leadCtx()
	a.f.pause()
	bl := waitLeader(t, without(cs, a), 3*ttl)
	if err := fencedWrite(late, a.j, "late-write"); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("paused leader's late write: %v, want ErrFenced", err)
	}
	if ok, err := bl.j.Marked(context.Background(), "late-write"); ok || err != nil {
		t.Fatalf("the refused write landed (%v %v)", ok, err)
	}
	if err := fencedWrite(bl.leadCtx(), bl.j, "new-leader-write"); err != nil {
		t.Fatalf("new leader's write: %v", err)
	}
	a.f.resume()
	// A keeps following: its stalled renewal and two acquisitions after it
	// are refused while B renews.
	acquired, renewed := a.f.acquires.Load(), bl.e.Status().Until
	testenv.WaitFor(t, 2*ttl, "a's refused acquisitions and b's renewal after resume", func() bool {
		if a.e.Status().Leader || !bl.e.Status().Leader {
			t.Fatalf("after resume: a leads %v, b leads %v", a.e.Status().Leader, bl.e.Status().Leader)
		}
		return a.f.acquires.Load() >= acquired+2 && bl.e.Status().Until.After(renewed)
	})
}
