package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func serve(t *testing.T, m *Metrics, h Health) string {
	t.Helper()
	s, err := Listen("127.0.0.1:0", m, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return "http://" + s.Addr()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsExposition(t *testing.T) {
	m := New("1.2.3", nil)
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }
	next := time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC)
	var pendingErr atomic.Bool
	m.SetSources(Sources{
		KeyCreated: func(ctx context.Context) (map[string]time.Time, error) {
			return map[string]time.Time{"dev-team-key": now.Add(-36 * time.Hour), "unknown-age": {}}, nil
		},
		NextRuns: func() map[string]time.Time { return map[string]time.Time{"rotate": next, "audit": {}} },
		PendingNotifications: func(ctx context.Context) (int, error) {
			if pendingErr.Load() {
				return 0, errors.New("journal closed")
			}
			return 3, nil
		},
	})
	m.ObserveRun("rotate", "ok", 2*time.Second)
	m.ObserveRun("rotate", "ok", time.Second)
	m.ObserveRun("audit", "panicked", 0)
	m.ObserveRotation("rotated")
	m.ObserveRotation("failed")
	m.ObserveReload(false)
	base := serve(t, m, nil)

	code, body := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	tests := []struct {
		line string
		want bool
	}{
		{line: `mrbacd_job_runs_total{job="rotate",result="ok"} 2`, want: true},
		{line: `mrbacd_job_runs_total{job="audit",result="panicked"} 1`, want: true},
		{line: `mrbacd_job_duration_seconds_sum{job="rotate",result="ok"} 3`, want: true},
		{line: `mrbacd_rotations_total{outcome="rotated"} 1`, want: true},
		{line: `mrbacd_rotations_total{outcome="failed"} 1`, want: true},
		{line: `mrbacd_key_age_days{key="dev-team-key"} 1.5`, want: true},
		{line: `mrbacd_key_age_days{key="unknown-age"}`, want: false},
		{line: `mrbacd_job_next_run_timestamp_seconds{job="rotate"} 1.7958348e+09`, want: true},
		{line: `mrbacd_job_next_run_timestamp_seconds{job="audit"}`, want: false},
		{line: `mrbacd_notifications_pending 3`, want: true},
		{line: `mrbacd_config_reloads_total{result="invalid"} 1`, want: true},
		{line: `mrbacd_build_info{version="1.2.3"} 1`, want: true},
		{line: `process_resident_memory_bytes`, want: true},
		{line: `go_goroutines`, want: true},
	}
	for _, tc := range tests {
		if got := strings.Contains(body, tc.line); got != tc.want {
			t.Errorf("metrics contain %q = %v, want %v", tc.line, got, tc.want)
		}
	}

	// A failing source is counted, not fatal to the scrape.
	pendingErr.Store(true)
	code, body = get(t, base+"/metrics")
	if code != 200 || strings.Contains(body, "mrbacd_notifications_pending 3") {
		t.Errorf("scrape with a failing source: %d", code)
	}
	_, body = get(t, base+"/metrics")
	if !strings.Contains(body, `mrbacd_metrics_source_errors_total{source="notifications_pending"} `) {
		t.Errorf("source error not counted:\n%s", body)
	}
}

func TestHealthz(t *testing.T) {
	tests := []struct {
		name     string
		health   Health
		wantCode int
		wantBody string
	}{
		{name: "no check", health: nil, wantCode: 200, wantBody: `{"status":"ok"}`},
		{name: "healthy", health: func(ctx context.Context) error { return nil }, wantCode: 200, wantBody: `{"status":"ok"}`},
		{name: "unhealthy", health: func(ctx context.Context) error { return errors.New("journal: database is locked") }, wantCode: 503,
			wantBody: `{"error":"journal: database is locked","status":"unhealthy"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := serve(t, New("dev", nil), tc.health)
			code, body := get(t, base+"/healthz")
			if code != tc.wantCode || strings.TrimSpace(body) != tc.wantBody {
				t.Errorf("= %d %s, want %d %s", code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
}
