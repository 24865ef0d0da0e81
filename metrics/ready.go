package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Ready reports whether the process should receive traffic now; nil means
// ready. GET /readyz on the metrics listener answers 200 "ok" when it
// returns nil and 503 "not ready: REASON" otherwise; an orchestrator takes
// a not-ready instance out of its load balancer without restarting it
// (that is /healthz's job).
//
// Contract of a Ready function:
//   - It is called on every probe (every few seconds, from several probers
//     at once): it must be cheap, answer from state the process already
//     holds and never call the Mistral platform. It may ping the journal.
//   - It must honour ctx. A call is bounded all the same: a check still
//     running after the timeout (WithReadyTimeout, default 2s) answers 503
//     "readiness check timed out", and later probes wait on that same call
//     instead of starting another, so a hung check costs one goroutine.
//   - The reason shown to the prober is the Reason of a *NotReadyError in
//     the returned chain (see NotReady), cut to one short printable line;
//     any other error shows only "not ready: unspecified". A reason names a component or
//     a workspace, never a key, token, DSN or other secret. The whole error
//     is logged (once per change of state), so it too must hold no secret,
//     as every error in this project.
//   - For the gateway (mrbacd gateway, or the gateway inside mrbacd run),
//     ready means it can serve a request end to end: the journal answers
//     (ping; with PostgreSQL, budget leases can be renewed or are still
//     held), it holds an upstream key for every workspace its clients use
//     (read from the store at least once; a key being re-read after a 401
//     still counts as held), and it is not draining (once SIGTERM is
//     received, not ready, so endpoints are removed before the listener
//     closes). For the daemon, ready means the journal answers; a standby
//     is ready like the leader.
type Ready func(ctx context.Context) error

// DefaultReadyTimeout bounds one readiness check.
const DefaultReadyTimeout = 2 * time.Second

// maxReason bounds the reason /readyz shows.
const maxReason = 120

// NotReadyError is an error whose Reason can be shown to a prober.
type NotReadyError struct {
	// Reason is short and holds no secret: "journal unreachable",
	// "no upstream key for workspace dev-workspace".
	Reason string
	// Err is the cause, logged but never served.
	Err error
}

// NotReady returns a *NotReadyError: reason is served by /readyz, err (may
// be nil) is only logged.
func NotReady(reason string, err error) error { return &NotReadyError{Reason: reason, Err: err} }

func (e *NotReadyError) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}

func (e *NotReadyError) Unwrap() error { return e.Err }

// Option configures the metrics listener.
type Option func(*options)

type options struct {
	ready        Ready
	readyTimeout time.Duration
}

// WithReady sets the check behind GET /readyz. Without it /readyz answers
// from the Health check given to Listen (and "ok" when that is nil too).
func WithReady(r Ready) Option { return func(o *options) { o.ready = r } }

// WithReadyTimeout bounds one readiness check (default DefaultReadyTimeout).
func WithReadyTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.readyTimeout = d
		}
	}
}

var errReadyTimeout = NotReady("readiness check timed out", nil)

// readiness runs a Ready check at most once at a time, bounded by timeout,
// and logs its changes of state.
type readiness struct {
	check   Ready
	timeout time.Duration
	log     *slog.Logger

	mu       sync.Mutex
	inflight *readyCall
	failing  bool // the last answer was not ready
}

type readyCall struct {
	done chan struct{}
	err  error
}

// run returns the check's answer, joining a call in flight if there is one.
func (r *readiness) run(ctx context.Context) error {
	r.mu.Lock()
	c := r.inflight
	if c == nil {
		c = &readyCall{done: make(chan struct{})}
		r.inflight = c
		go r.call(c)
	}
	r.mu.Unlock()
	t := time.NewTimer(r.timeout)
	defer t.Stop()
	select {
	case <-c.done:
		return c.err
	case <-t.C:
		return errReadyTimeout
	case <-ctx.Done():
		return NotReady("probe cancelled", ctx.Err())
	}
}

// call runs the check detached from any one probe (a prober hanging up
// must not fail the others waiting on the same call).
func (r *readiness) call(c *readyCall) {
	defer func() {
		if p := recover(); p != nil {
			c.err = NotReady("readiness check failed", fmt.Errorf("panic: %v", p))
		}
		r.mu.Lock()
		r.inflight = nil
		r.mu.Unlock()
		close(c.done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	c.err = r.check(ctx)
}

// note logs a change between ready and not ready.
func (r *readiness) note(err error, reason string) {
	r.mu.Lock()
	changed := r.failing != (err != nil)
	r.failing = err != nil
	r.mu.Unlock()
	switch {
	case !changed:
	case err != nil:
		r.log.Warn("not ready", "reason", reason, "err", err)
	default:
		r.log.Info("ready")
	}
}

func (r *readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	err := r.run(req.Context())
	reason := ""
	if err != nil {
		reason = servedReason(err)
	}
	r.note(err, reason)
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %s\n", reason)
		return
	}
	fmt.Fprintln(w, "ok")
}

// servedReason is the Reason of the first *NotReadyError in err's chain,
// cut to one printable line of at most maxReason bytes; "unspecified" for
// any other error (its text is not known to be safe to serve).
func servedReason(err error) string {
	var nr *NotReadyError
	if !errors.As(err, &nr) {
		return "unspecified"
	}
	s, _, _ := strings.Cut(nr.Reason, "\n")
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > maxReason {
			break
		}
		b.WriteRune(r)
	}
	if s := strings.TrimSpace(b.String()); s != "" {
		return s
	}
	return "unspecified"
}
