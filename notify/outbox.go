package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// Journal is the part of the journal (*journal.DB) the outbox uses.
type Journal interface {
	Enqueue(ctx context.Context, m journal.Message) (id int64, created bool, err error)
	Claim(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]journal.Message, error)
	MarkSent(ctx context.Context, id int64, at time.Time) error
	MarkRetry(ctx context.Context, id int64, next time.Time, errMsg string) error
	MarkUncertain(ctx context.Context, id int64, next time.Time, errMsg string) error
	MarkDead(ctx context.Context, id int64, errMsg string) error
	NextDue(ctx context.Context) (time.Time, bool, error)
	PendingCount(ctx context.Context) (int, error)
}

var _ Journal = (*journal.DB)(nil)

// ErrUndelivered is returned (wrapped) by Flush when messages remain pending:
// they stay in the outbox and a later Run or Flush delivers them.
var ErrUndelivered = errors.New("notifications not yet delivered")

// OutboxOptions tunes the outbox; zero values take the defaults.
type OutboxOptions struct {
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts (defaults 1s and 5m).
	MinBackoff, MaxBackoff time.Duration
	// MaxAge gives up on a message still undelivered that long after it was
	// enqueued (marked dead, logged). Zero, the default, never gives up.
	MaxAge time.Duration
	// SendTimeout bounds one attempt (default 30s).
	SendTimeout time.Duration
	// Lease is how long a claimed message is reserved for this worker
	// (default 2*SendTimeout+10s); it must exceed SendTimeout.
	Lease time.Duration
	// PollInterval is the longest Run sleeps without looking at the journal,
	// which picks up messages enqueued by other processes (default 30s).
	PollInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// OutboxStats counts the outbox's outcomes since it was created.
type OutboxStats struct {
	Sent      uint64 // delivered and acknowledged
	Confirmed uint64 // found already delivered by a Confirmer, not resent
	Retried   uint64 // attempts that failed and were rescheduled
	Dead      uint64 // given up: permanent failure, undecodable, MaxAge
}

// Outbox delivers notifications durably through the journal. Its methods are
// safe for concurrent use; several outboxes (in several processes) may share
// one journal.
type Outbox struct {
	j    Journal
	s    Sender
	o    OutboxOptions
	log  *slog.Logger
	wake chan struct{}

	mu         sync.Mutex
	pauseUntil time.Time

	sent, confirmed, retried, dead atomic.Uint64
}

// NewOutbox returns an outbox writing to j and delivering through s.
func NewOutbox(j Journal, s Sender, opts OutboxOptions) *Outbox {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Minute, opts.MinBackoff)
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = 30 * time.Second
	}
	if opts.Lease <= opts.SendTimeout {
		opts.Lease = 2*opts.SendTimeout + 10*time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Outbox{j: j, s: s, o: opts, log: opts.Logger, wake: make(chan struct{}, 1)}
}

// Stats returns the outcome counters.
func (o *Outbox) Stats() OutboxStats {
	return OutboxStats{Sent: o.sent.Load(), Confirmed: o.confirmed.Load(), Retried: o.retried.Load(), Dead: o.dead.Load()}
}

// Enqueue writes n to the journal's outbox (a no-op when a message with the
// same Dedupe exists) and wakes the worker. Once it returns nil the
// notification survives crashes and will be delivered.
func (o *Outbox) Enqueue(ctx context.Context, n Notification) error {
	if err := n.Validate(); err != nil {
		return fmt.Errorf("enqueue notification: %w", err)
	}
	payload, err := encode(n)
	if err != nil {
		return fmt.Errorf("enqueue %s notification: %w", n.Kind, err)
	}
	id, created, err := o.j.Enqueue(ctx, journal.Message{Dedupe: n.Dedupe, Severity: n.Severity.String(), Kind: n.Kind,
		Payload: payload, CreatedAt: o.o.Now()})
	if err != nil {
		return fmt.Errorf("enqueue %s notification: %w", n.Kind, err)
	}
	if created {
		o.log.Debug("notification enqueued", "message_id", id, "kind", n.Kind, "dedupe", n.Dedupe)
		select {
		case o.wake <- struct{}{}:
		default:
		}
	} else {
		o.log.Debug("notification already enqueued", "message_id", id, "kind", n.Kind, "dedupe", n.Dedupe)
	}
	return nil
}

// Run delivers due messages until ctx is canceled, then returns nil. It wakes
// on Enqueue, when the next retry is due, and every PollInterval (messages
// enqueued by other processes). Journal errors are logged and retried.
func (o *Outbox) Run(ctx context.Context) error {
	for {
		progressed, err := o.deliverOne(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			o.log.Error("notification outbox: journal error", "err", err)
		}
		if progressed && err == nil {
			continue
		}
		wait := o.o.PollInterval
		if err == nil {
			wait = o.untilNext(ctx)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-o.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// untilNext is how long Run may sleep: until the next message is due or the
// pause ends, at most PollInterval.
func (o *Outbox) untilNext(ctx context.Context) time.Duration {
	now := o.o.Now()
	wait := o.o.PollInterval
	if next, ok, err := o.j.NextDue(ctx); err == nil && ok {
		wait = min(wait, next.Sub(now))
	}
	o.mu.Lock()
	pause := o.pauseUntil
	o.mu.Unlock()
	if d := pause.Sub(now); d > wait {
		wait = d
	}
	return max(wait, time.Millisecond)
}

// Flush sends every message due now, once each, and returns. Messages that
// fail are rescheduled; if any remain pending the error wraps ErrUndelivered.
// One-shot commands call it before exiting.
func (o *Outbox) Flush(ctx context.Context) error {
	for {
		progressed, err := o.deliverOne(ctx)
		if err != nil {
			return fmt.Errorf("flush notifications: %w", err)
		}
		if !progressed {
			break
		}
	}
	n, err := o.j.PendingCount(ctx)
	if err != nil {
		return fmt.Errorf("flush notifications: %w", err)
	}
	if n > 0 {
		return fmt.Errorf("flush notifications: %d pending: %w", n, ErrUndelivered)
	}
	return nil
}

// Drain delivers until nothing is pending, waiting through backoffs and
// Retry-After, or until ctx ends (then it returns ctx's error). For the demo
// and tests; the daemon uses Run.
func (o *Outbox) Drain(ctx context.Context) error {
	for {
		progressed, err := o.deliverOne(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("drain notifications: %w", err)
		}
		if progressed {
			continue
		}
		n, err := o.j.PendingCount(ctx)
		if err != nil {
			return fmt.Errorf("drain notifications: %w", err)
		}
		if n == 0 {
			return nil
		}
		t := time.NewTimer(o.untilNext(ctx))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-o.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// deliverOne claims and handles one due message. progressed is false when
// nothing was due (or the worker is paused).
func (o *Outbox) deliverOne(ctx context.Context) (progressed bool, err error) {
	now := o.o.Now()
	o.mu.Lock()
	paused := now.Before(o.pauseUntil)
	o.mu.Unlock()
	if paused {
		return false, nil
	}
	msgs, err := o.j.Claim(ctx, now, o.o.Lease, 1)
	if err != nil || len(msgs) == 0 {
		return false, err
	}
	m := msgs[0]
	log := o.log.With("message_id", m.ID, "kind", m.Kind, "dedupe", m.Dedupe, "attempts", m.Attempts)
	n, derr := decode(m.Payload)
	if derr != nil {
		o.dead.Add(1)
		log.Error("notification dropped: undecodable payload", "err", derr)
		return true, o.j.MarkDead(ctx, m.ID, "undecodable payload: "+derr.Error())
	}
	if o.o.MaxAge > 0 && now.Sub(m.CreatedAt) > o.o.MaxAge {
		o.dead.Add(1)
		log.Error("notification dropped: undelivered for too long", "max_age", o.o.MaxAge, "last_error", m.LastError)
		return true, o.j.MarkDead(ctx, m.ID, fmt.Sprintf("undelivered after %s; last error: %s", o.o.MaxAge, m.LastError))
	}
	if m.InDoubt {
		if c, ok := o.s.(Confirmer); ok {
			cctx, cancel := context.WithTimeout(ctx, o.o.SendTimeout)
			delivered, cerr := c.Delivered(cctx, n, m.CreatedAt)
			cancel()
			switch {
			case cerr == nil && delivered:
				o.confirmed.Add(1)
				log.Info("notification found already delivered; not resending")
				return true, o.j.MarkSent(ctx, m.ID, o.o.Now())
			case cerr != nil:
				if ctx.Err() != nil {
					return true, o.j.MarkUncertain(context.WithoutCancel(ctx), m.ID, now, "interrupted")
				}
				log.Warn("cannot confirm an earlier attempt; resending (may duplicate)", "err", cerr)
			}
		} else {
			log.Warn("earlier attempt has no recorded outcome and the sender cannot check; resending (may duplicate)")
		}
	}
	sctx, cancel := context.WithTimeout(ctx, o.o.SendTimeout)
	serr := o.s.Send(sctx, n)
	timedOut := sctx.Err() != nil
	cancel()
	if serr == nil {
		if err := o.j.MarkSent(context.WithoutCancel(ctx), m.ID, o.o.Now()); err != nil {
			// The next claim will see the message in doubt and confirm it.
			return true, fmt.Errorf("mark message %d sent: %w", m.ID, err)
		}
		o.sent.Add(1)
		log.Info("notification sent", "severity", n.Severity.String())
		return true, nil
	}
	permanent, uncertain, retryAfter := Classify(serr)
	if ctx.Err() != nil {
		// Shutting down mid-send: the outcome is unknown; due again at once.
		return true, o.j.MarkUncertain(context.WithoutCancel(ctx), m.ID, now, "interrupted: "+serr.Error())
	}
	if permanent {
		o.dead.Add(1)
		log.Error("notification dropped: permanent delivery failure; fix the notifier configuration and requeue it",
			"err", serr)
		return true, o.j.MarkDead(ctx, m.ID, serr.Error())
	}
	delay := retryAfter
	if delay <= 0 {
		delay = o.backoff(m.Attempts)
	}
	next := o.o.Now().Add(delay)
	o.mu.Lock()
	if next.After(o.pauseUntil) {
		o.pauseUntil = next
	}
	o.mu.Unlock()
	o.retried.Add(1)
	log.Warn("notification delivery failed; will retry", "err", serr, "retry_in", delay.String())
	if uncertain || timedOut {
		return true, o.j.MarkUncertain(ctx, m.ID, next, serr.Error())
	}
	return true, o.j.MarkRetry(ctx, m.ID, next, serr.Error())
}

// backoff is MinBackoff*2^(attempts-1), capped at MaxBackoff, with ±20% jitter.
func (o *Outbox) backoff(attempts int) time.Duration {
	d := o.o.MinBackoff
	for i := 1; i < attempts && d < o.o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, o.o.MaxBackoff)
	j := time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return max(j, o.o.MinBackoff)
}
