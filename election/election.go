// Package election elects one leader among the daemons sharing a journal.
//
// Each contender runs an Elector. The leader holds a fenced lease in the
// journal (journal.Fencing) and renews it every third of its TTL; the others
// try to take it at the same pace, so a standby takes over at most a third
// of a TTL after the lease is released (a graceful stop) and at most a TTL
// and a third after the leader stopped renewing (killed, paused, cut off).
//
// The leader's work runs in the function given to Run, under a context that
// carries the tenure's fence (journal.WithFence): every journal write made
// with it is refused (journal.ErrFenced) once another contender has taken
// the lease over, or once the lease expired, so a leader that was paused
// past its lease cannot write when it wakes. The context is also canceled
// when leadership is lost: renewal refused, or no renewal succeeded before
// the tenure's end minus a margin for clock skew.
package election

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// DefaultTTL is a tenure's length without renewal.
const DefaultTTL = 15 * time.Second

// DefaultName is the lease the daemons contend for.
const DefaultName = "leader"

// Lessor is the part of the journal an Elector uses (journal.Fencing).
type Lessor interface {
	AcquireFenced(ctx context.Context, name, owner string, ttl time.Duration) (token int64, ok bool, err error)
	RenewFenced(ctx context.Context, name, owner string, token int64, ttl time.Duration) (bool, error)
	ReleaseFenced(ctx context.Context, name, owner string, token int64) error
	FencedHolder(ctx context.Context, name string) (info journal.LeaseInfo, ok bool, err error)
}

// Config configures an Elector.
type Config struct {
	// Instance names this contender, unique among them (e.g. host:pid:random).
	Instance string
	// Name is the lease's name (DefaultName when empty).
	Name string
	// TTL is the tenure's length without renewal (DefaultTTL when zero).
	TTL time.Duration
	// Logger receives the transitions (slog.Default when nil).
	Logger *slog.Logger
}

// Status is an Elector's view of the election.
type Status struct {
	Instance string
	Leader   bool
	// Token is this instance's tenure's token while Leader.
	Token int64
	// Until is when this instance stops leading unless it renews (zero
	// when not Leader).
	Until time.Time
	// Elections counts the tenures this instance has won.
	Elections int
	// Attempts counts the attempts to acquire the lease that ended (won,
	// lost or failed): a caller waits for the first to know whether this
	// instance starts as leader or standby.
	Attempts int
	// Previous is, while Leader, the instance whose tenure came just
	// before this one ("" when it was this instance's or unknown), and
	// Takeover whether that tenure ran out (the instance died, paused or
	// was cut off) rather than being handed over: a failover.
	Previous string
	Takeover bool
}

// Elector campaigns for one instance. Its methods are safe for concurrent use.
type Elector struct {
	l      Lessor
	name   string
	owner  string
	ttl    time.Duration
	margin time.Duration
	log    *slog.Logger

	mu     sync.Mutex
	status Status
}

// InstanceName returns a name for this process unique among contenders:
// host, pid and a random suffix (a restarted process is a new contender).
func InstanceName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b))
}

// New returns an Elector for cfg over l.
func New(l Lessor, cfg Config) (*Elector, error) {
	if cfg.Instance == "" {
		return nil, errors.New("election: an instance name is required")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 30*time.Millisecond {
		return nil, fmt.Errorf("election: ttl %s is too short", cfg.TTL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Elector{
		l: l, name: cfg.Name, owner: cfg.Instance, ttl: cfg.TTL,
		// Stop leading a sixth of a TTL before the tenure's end as this
		// instance measures it, for the journal's clock and request delays.
		margin: cfg.TTL / 6,
		log:    cfg.Logger.With("lease", cfg.Name, "instance", cfg.Instance),
		status: Status{Instance: cfg.Instance},
	}, nil
}

// Status returns this instance's view.
func (e *Elector) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status
}

// Leader returns who holds the lease per the journal (any instance may ask):
// ok is false when nobody does.
func (e *Elector) Leader(ctx context.Context) (journal.LeaseInfo, bool, error) {
	return e.l.FencedHolder(ctx, e.name)
}

// Run campaigns until ctx ends. Each time this instance wins, it calls lead
// with a context carrying the tenure's fence, canceled when the tenure ends,
// and waits for lead to return before campaigning again. lead should run
// until its context ends: returning earlier gives the tenure up. When ctx
// ends Run stops leading, waits for lead, releases the lease so a standby
// takes over at once, and returns ctx's error. Journal errors are logged
// and retried.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		sent := time.Now()
		// The tenure before this attempt, to tell a successor whom it
		// follows (journal errors here only lose that detail).
		before, held, _ := e.l.FencedHolder(ctx, e.name)
		if held {
			// Still held as we looked: if the acquire succeeds, the holder
			// released it in between (a hand-over, not a takeover).
			before.Expires = time.Time{}
		}
		token, ok, err := e.l.AcquireFenced(ctx, e.name, e.owner, e.ttl)
		switch {
		case ok:
			e.lead(ctx, token, sent, before, lead)
		case err != nil && ctx.Err() == nil:
			e.log.Warn("election: acquire failed", "err", err)
			e.attempted()
		default:
			e.attempted()
		}
		t.Reset(e.nextAttempt(ctx))
	}
}

// nextAttempt says when a standby tries again: a third of a TTL from now,
// or as soon as the holder's lease expires if that is sooner, so a standby
// takes over a dead leader's lease within a TTL of its last renewal.
func (e *Elector) nextAttempt(ctx context.Context) time.Duration {
	every := e.ttl / 3
	info, held, err := e.l.FencedHolder(ctx, e.name)
	if err != nil || !held {
		return every
	}
	if d := time.Until(info.Expires) + time.Millisecond; d < every {
		return max(d, 0)
	}
	return every
}

// lead runs one tenure: lead in a goroutine, renewals every third of the
// TTL, until a renewal is refused, the tenure runs out or ctx ends.
func (e *Elector) lead(ctx context.Context, token int64, sent time.Time, before journal.LeaseInfo, lead func(ctx context.Context)) {
	until := sent.Add(e.ttl - e.margin)
	e.mu.Lock()
	e.status.Previous, e.status.Takeover = "", false
	if before.Token == token-1 && before.Owner != e.owner && before.Owner != "" {
		// Released tenures have expires_at 0 (journal.ReleaseFenced).
		e.status.Previous, e.status.Takeover = before.Owner, !before.Expires.IsZero()
	}
	prev, takeover := e.status.Previous, e.status.Takeover
	e.mu.Unlock()
	e.setLeader(true, token, until)
	e.log.Info("election: leading", "token", token, "previous", prev, "takeover", takeover)
	fence := journal.Fence{Name: e.name, Owner: e.owner, Token: token}
	lctx, cancel := context.WithCancel(journal.WithFence(ctx, fence))
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(lctx)
	}()
	why := e.renew(ctx, token, until, done)
	cancel()
	<-done
	e.setLeader(false, 0, time.Time{})
	if why == reasonStopping || why == reasonReturned {
		// Hand over at once rather than when the lease expires.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), e.ttl/3)
		if err := e.l.ReleaseFenced(rctx, e.name, e.owner, token); err != nil {
			e.log.Warn("election: release failed; a standby takes over when the lease expires", "token", token, "err", err)
		}
		rcancel()
	}
	e.log.Info("election: no longer leading", "token", token, "reason", why)
}

// Why a tenure ended.
const (
	reasonStopping = "stopping"
	reasonReturned = "lead returned"
	reasonRanOut   = "tenure ran out without a renewal"
	reasonLost     = "lease lost"
)

// renew keeps the tenure until it is lost or ctx ends, and says why it ended.
func (e *Elector) renew(ctx context.Context, token int64, until time.Time, done <-chan struct{}) string {
	every := e.ttl / 3
	tick := time.NewTimer(every)
	defer tick.Stop()
	for {
		expire := time.NewTimer(time.Until(until))
		select {
		case <-ctx.Done():
			expire.Stop()
			return reasonStopping
		case <-done:
			expire.Stop()
			return reasonReturned
		case <-expire.C:
			return reasonRanOut
		case <-tick.C:
			expire.Stop()
		}
		sent := time.Now()
		rctx, cancel := context.WithDeadline(ctx, until)
		ok, err := e.l.RenewFenced(rctx, e.name, e.owner, token, e.ttl)
		cancel()
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return reasonStopping
			}
			e.log.Warn("election: renewal failed", "token", token, "err", err)
			tick.Reset(every / 3) // retry sooner: the tenure is running out
			continue
		case !ok:
			return reasonLost
		}
		until = sent.Add(e.ttl - e.margin)
		e.setLeader(true, token, until)
		tick.Reset(every)
	}
}

func (e *Elector) attempted() {
	e.mu.Lock()
	e.status.Attempts++
	e.mu.Unlock()
}

func (e *Elector) setLeader(leader bool, token int64, until time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if leader && !e.status.Leader {
		e.status.Elections++
		e.status.Attempts++ // the attempt that won, counted as it is known
	}
	e.status.Leader, e.status.Token, e.status.Until = leader, token, until
	if !leader {
		e.status.Previous, e.status.Takeover = "", false
	}
}
