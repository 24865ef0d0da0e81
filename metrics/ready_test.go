package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func serveReady(t *testing.T, h Health, log *slog.Logger, opts ...Option) string {
	t.Helper()
	s, err := Listen("127.0.0.1:0", New("dev", nil), h, log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return "http://" + s.Addr()
}

// secretDSN stands for what a careless check might put in an error.
const secretDSN = "postgres://mrbacd:hunter2-s3cret@db.internal:5432/mrbacd"

func TestReadyz(t *testing.T) {
	tests := []struct {
		name     string
		health   Health
		ready    Ready
		wantCode int
		wantBody string
	}{
		{name: "no checks", wantCode: 200, wantBody: "ok"},
		{name: "ready", ready: func(context.Context) error { return nil }, wantCode: 200, wantBody: "ok"},
		{name: "reason served", wantCode: 503, wantBody: "not ready: no upstream key for workspace dev-workspace",
			ready: func(context.Context) error {
				return NotReady("no upstream key for workspace dev-workspace", errors.New("vault: 403 permission denied"))
			}},
		{name: "wrapped reason found", wantCode: 503, wantBody: "not ready: journal unreachable",
			ready: func(context.Context) error {
				return fmt.Errorf("gateway: %w", NotReady("journal unreachable", errors.New("dial "+secretDSN)))
			}},
		{name: "plain error text never served", wantCode: 503, wantBody: "not ready: unspecified",
			ready: func(context.Context) error { return errors.New("connect " + secretDSN) }},
		{name: "reason cut to one line", wantCode: 503, wantBody: "not ready: journal down",
			ready: func(context.Context) error { return NotReady("journal down\n"+secretDSN, nil) }},
		{name: "control characters dropped", wantCode: 503, wantBody: "not ready: journal[31munreachable",
			ready: func(context.Context) error { return NotReady("journal\x1b[31m\x00unreachable", nil) }},
		{name: "long reason bounded", wantCode: 503, wantBody: "not ready: " + strings.Repeat("x", maxReason),
			ready: func(context.Context) error { return NotReady(strings.Repeat("x", 4*maxReason), nil) }},
		{name: "empty reason", wantCode: 503, wantBody: "not ready: unspecified",
			ready: func(context.Context) error { return NotReady(" \t", nil) }},
		{name: "falls back to health", wantCode: 503, wantBody: "not ready: unhealthy",
			health: func(context.Context) error { return errors.New("journal: " + secretDSN) }},
		{name: "ready overrides health", wantCode: 200, wantBody: "ok",
			health: func(context.Context) error { return errors.New("journal: database is locked") },
			ready:  func(context.Context) error { return nil }},
		{name: "panicking check", wantCode: 503, wantBody: "not ready: readiness check failed",
			ready: func(context.Context) error { panic(secretDSN) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []Option
			if tc.ready != nil {
				opts = append(opts, WithReady(tc.ready))
			}
			base := serveReady(t, tc.health, nil, opts...)
			code, body := get(t, base+"/readyz")
			if code != tc.wantCode || strings.TrimSpace(body) != tc.wantBody {
				t.Errorf("= %d %q, want %d %q", code, body, tc.wantCode, tc.wantBody)
			}
			if strings.Contains(body, "hunter2") {
				t.Errorf("secret served: %q", body)
			}
		})
	}
}

// TestReadyzCheckGetsDeadline: the check's ctx carries the configured bound.
func TestReadyzCheckGetsDeadline(t *testing.T) {
	var left atomic.Int64
	base := serveReady(t, nil, nil, WithReadyTimeout(time.Second), WithReady(func(ctx context.Context) error {
		dl, ok := ctx.Deadline()
		if !ok {
			return NotReady("no deadline", nil)
		}
		left.Store(int64(time.Until(dl)))
		return nil
	}))
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("= %d %q", code, body)
	}
	if d := time.Duration(left.Load()); d <= 0 || d > time.Second {
		t.Errorf("deadline %v away, want within (0, 1s]", d)
	}
}

// TestReadyzHungCheck: a check that ignores ctx and never returns is cut
// off at the timeout; probes during the hang share the one call in flight
// instead of piling up goroutines; once it returns, probes check again.
func TestReadyzHungCheck(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	var hung atomic.Bool
	hung.Store(true)
	base := serveReady(t, nil, nil, WithReadyTimeout(50*time.Millisecond), WithReady(func(context.Context) error {
		calls.Add(1)
		if hung.Load() {
			<-release // ignores ctx, as a wedged driver would
		}
		return nil
	}))

	var wg sync.WaitGroup
	codes := make([]int, 8)
	bodies := make([]string, 8)
	for i := range codes {
		wg.Go(func() { codes[i], bodies[i] = get(t, base+"/readyz") })
	}
	wg.Wait()
	for i := range codes {
		if codes[i] != 503 || strings.TrimSpace(bodies[i]) != "not ready: readiness check timed out" {
			t.Errorf("probe %d during the hang = %d %q", i, codes[i], bodies[i])
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d checks started during the hang, want 1", n)
	}

	hung.Store(false)
	close(release)
	// The hung call ends on its own schedule; probe until a fresh call answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := get(t, base+"/readyz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still not ready 10s after the check returned")
		}
	}
	// The call that answered is over, so this probe starts a new one.
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("after the hang = %d %q", code, body)
	}
	if n := calls.Load(); n < 2 {
		t.Errorf("%d checks, want a new one after the hang", n)
	}
}

// TestReadyzLogsChanges: a change of state is logged once (with the cause,
// which the prober never sees), not on every probe.
func TestReadyzLogsChanges(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var failing atomic.Bool
	base := serveReady(t, nil, log, WithReady(func(context.Context) error {
		if failing.Load() {
			return NotReady("journal unreachable", errors.New("connection refused"))
		}
		return nil
	}))
	steps := []struct {
		failing  bool
		wantCode int
	}{
		{failing: false, wantCode: 200},
		{failing: true, wantCode: 503},
		{failing: true, wantCode: 503},
		{failing: true, wantCode: 503},
		{failing: false, wantCode: 200},
		{failing: false, wantCode: 200},
	}
	for i, s := range steps {
		failing.Store(s.failing)
		if code, body := get(t, base+"/readyz"); code != s.wantCode {
			t.Fatalf("step %d: = %d %q, want %d", i, code, body, s.wantCode)
		}
	}
	out := buf.String()
	if n := strings.Count(out, `msg="not ready"`); n != 1 {
		t.Errorf("%d not-ready lines, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, `reason="journal unreachable"`) || !strings.Contains(out, "connection refused") {
		t.Errorf("the not-ready line lacks its reason or cause:\n%s", out)
	}
	if n := strings.Count(out, "msg=ready"); n != 1 {
		t.Errorf("%d ready lines, want 1 (the recovery):\n%s", n, out)
	}
}
