package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/ctlsock"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/scheduler"
)

func writeConfig(t *testing.T, path, dir, extra string) {
	t.Helper()
	cfg := fmt.Sprintf(`mistral:
  base_url: http://127.0.0.1:9
state: {path: %[1]s/state.db}
admin: {socket: %[1]s/admin.sock}
secrets:
  file: {dir: %[1]s/secrets}
workspaces:
  - {name: dev-workspace, team: developers, models: [mistral-small-latest], rpm: 60, monthly_budget_usd: 50}
keys:
  - name: dev-team-key
    workspace: dev-workspace
    owner_user_id: u1
    store: {backend: file, path: dev-team}
%[2]s`, dir, extra)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// testRunners are real runners with the behaviours the daemon must survive.
type testRunners struct {
	rotateStarted chan struct{}
	once          sync.Once
	builds        int
	mu            sync.Mutex
	finished      []scheduler.Finished
}

func (tr *testRunners) build(ctx context.Context, env Env) (*Components, error) {
	tr.mu.Lock()
	tr.builds++
	gen := tr.builds
	tr.mu.Unlock()
	return &Components{
		Runners: map[string]jobs.Runner{
			// rotate blocks until cancelled, like a rotation in its propagation wait.
			jobs.Rotate: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
				tr.once.Do(func() { close(tr.rotateStarted) })
				<-ctx.Done()
				return jobs.Result{}, fmt.Errorf("rotate: stopped before the next step: %w", ctx.Err())
			}),
			// audit panics.
			jobs.Audit: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
				var findings []string
				_ = findings[3] // index out of range
				return jobs.Result{}, nil
			}),
			jobs.Budget: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
				return jobs.Result{Summary: fmt.Sprintf("polled 1 workspace (build %d, key %q)", gen, req.Key)}, nil
			}),
		},
		OnRunFinished: func(ctx context.Context, f scheduler.Finished) {
			if f.Trigger == "cron" {
				return // a default schedule's boundary may fall inside a test
			}
			tr.mu.Lock()
			tr.finished = append(tr.finished, f)
			tr.mu.Unlock()
		},
	}, nil
}

type harness struct {
	d      *Daemon
	cfg    string
	dir    string
	client *ctlsock.Client
	logs   *testenv.LogBuffer
	tr     *testRunners
}

func start(t *testing.T, extra string) *harness {
	t.Helper()
	return startWith(t, extra, nil)
}

// startWith is start with opts adjusted by adjust (when not nil).
func startWith(t *testing.T, extra string, adjust func(*Options)) *harness {
	t.Helper()
	dir, err := os.MkdirTemp("", "mrbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfgPath := filepath.Join(dir, "mrbacd.yaml")
	writeConfig(t, cfgPath, dir, extra)
	logs := &testenv.LogBuffer{}
	logger, lv, err := NewLogger(logs, "json", "debug")
	if err != nil {
		t.Fatal(err)
	}
	tr := &testRunners{rotateStarted: make(chan struct{})}
	opts := Options{ConfigPath: cfgPath, Version: "test", Logger: logger, LogLevel: lv, Build: tr.build}
	if adjust != nil {
		adjust(&opts)
	}
	d, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Shutdown(ctx)
	})
	return &harness{d: d, cfg: cfgPath, dir: dir, client: ctlsock.NewClient(d.AdminSocket()), logs: logs, tr: tr}
}

func TestRunJobsThroughTheSocket(t *testing.T) {
	h := start(t, "")
	ctx := context.Background()
	tests := []struct {
		name       string
		job        string
		req        ctlsock.RunRequest
		wantStatus string
		wantErr    int
		wantText   string
	}{
		{name: "ok with wait", job: "budget", req: ctlsock.RunRequest{Wait: true}, wantStatus: "ok", wantErr: 0, wantText: "polled 1 workspace (build 1"},
		{name: "panic recorded", job: "audit", req: ctlsock.RunRequest{Wait: true}, wantStatus: "panicked", wantErr: 0, wantText: "index out of range"},
		{name: "scheduler alive after panic", job: "budget", req: ctlsock.RunRequest{Wait: true, Key: "dev-team-key"}, wantStatus: "ok", wantErr: 0, wantText: `key "dev-team-key"`},
		{name: "unknown job", job: "nope", req: ctlsock.RunRequest{}, wantStatus: "", wantErr: 404, wantText: "unknown job"},
		{name: "unknown key", job: "rotate", req: ctlsock.RunRequest{Key: "ghost"}, wantStatus: "", wantErr: 422, wantText: `unknown key "ghost" (managed keys: dev-team-key)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run, err := h.client.RunJob(ctx, tc.job, tc.req)
			if tc.wantErr != 0 {
				var ae *ctlsock.APIError
				if !errors.As(err, &ae) || ae.StatusCode != tc.wantErr || !strings.Contains(ae.Message, tc.wantText) {
					t.Fatalf("err = %v, want %d %q", err, tc.wantErr, tc.wantText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if run.Status != tc.wantStatus || !strings.Contains(run.Summary+run.Error, tc.wantText) {
				t.Errorf("run = %+v, want %s with %q", run, tc.wantStatus, tc.wantText)
			}
			if run.Trigger != fmt.Sprintf("uid:%d", os.Getuid()) {
				t.Errorf("trigger = %q", run.Trigger)
			}
		})
	}
	// A running job refuses a second trigger with 409.
	if _, err := h.client.RunJob(ctx, "rotate", ctlsock.RunRequest{}); err != nil {
		t.Fatal(err)
	}
	<-h.tr.rotateStarted
	_, err := h.client.RunJob(ctx, "rotate", ctlsock.RunRequest{})
	var ae *ctlsock.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 409 || !strings.Contains(ae.Message, "already running") {
		t.Errorf("second rotate: %v", err)
	}
	st, err := h.client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "test" || st.ConfigHash == "" || len(st.Jobs) != 3 {
		t.Errorf("status = %+v", st)
	}
	for _, j := range st.Jobs {
		if j.NextRun == nil {
			t.Errorf("job %s has no next run", j.Name)
		}
		if j.Name == "rotate" && j.Running == nil {
			t.Error("rotate not shown running")
		}
		if j.Name == "audit" && (j.LastRun == nil || j.LastRun.Status != "panicked") {
			t.Errorf("audit last run = %+v", j.LastRun)
		}
	}
	h.tr.mu.Lock()
	n := len(h.tr.finished)
	h.tr.mu.Unlock()
	if n != 3 {
		t.Errorf("OnRunFinished called %d times, want 3", n)
	}
}

func TestReloadKeepsOldConfigWhenInvalid(t *testing.T) {
	h := start(t, "")
	ctx := context.Background()
	before, _ := h.client.Status(ctx)
	tests := []struct {
		name     string
		extra    string
		raw      string
		wantOK   bool
		wantText string
		wantSch  string
	}{
		{name: "broken yaml", extra: "", raw: "keys: [\n", wantOK: false, wantText: "mrbacd.yaml", wantSch: "*/30 * * * *"},
		{name: "invalid schedule", extra: "jobs:\n  budget: {schedule: \"61 * * * *\"}\n", raw: "", wantOK: false, wantText: "jobs.budget.schedule", wantSch: "*/30 * * * *"},
		{name: "unknown field", extra: "jobz: {}\n", raw: "", wantOK: false, wantText: "jobz", wantSch: "*/30 * * * *"},
		{name: "valid change", extra: "jobs:\n  budget: {schedule: \"*/5 * * * *\"}\n", raw: "", wantOK: true, wantText: "", wantSch: "*/5 * * * *"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.raw != "" {
				os.WriteFile(h.cfg, []byte(tc.raw), 0o600)
			} else {
				writeConfig(t, h.cfg, h.dir, tc.extra)
			}
			rel, err := h.client.Reload(ctx)
			if tc.wantOK {
				if err != nil || !rel.OK {
					t.Fatalf("reload: %v %+v", err, rel)
				}
			} else {
				var ae *ctlsock.APIError
				if !errors.As(err, &ae) || ae.StatusCode != 422 || ae.Reload == nil || !strings.Contains(ae.Reload.Error, tc.wantText) {
					t.Fatalf("reload err = %v, want 422 naming %q", err, tc.wantText)
				}
			}
			st, err := h.client.Status(ctx)
			if err != nil {
				t.Fatalf("still serving? %v", err)
			}
			for _, j := range st.Jobs {
				if j.Name == "budget" && j.Schedule != tc.wantSch {
					t.Errorf("budget schedule = %q, want %q", j.Schedule, tc.wantSch)
				}
			}
			if st.LastReload == nil || st.LastReload.OK != tc.wantOK {
				t.Errorf("last reload = %+v", st.LastReload)
			}
			if !tc.wantOK && st.ConfigHash != before.ConfigHash {
				t.Error("config hash changed on a refused reload")
			}
		})
	}
	// The reloaded runners are in use.
	run, err := h.client.RunJob(ctx, "budget", ctlsock.RunRequest{Wait: true})
	if err != nil || !strings.Contains(run.Summary, "build 2") {
		t.Errorf("after reload: %+v %v", run, err)
	}
	if !strings.Contains(h.logs.String(), `"msg":"reload refused; the old config keeps running"`) {
		t.Error("refused reload not logged")
	}
}

// TestReloadedTellsTheServices: a reload that succeeds calls
// Options.Reloaded with the new and the replaced config, and what it
// returns is among the reload's notes; a refused reload does not call it.
func TestReloadedTellsTheServices(t *testing.T) {
	type call struct{ oldSchedule, newSchedule string }
	var mu sync.Mutex
	var calls []call
	h := startWith(t, "", func(o *Options) {
		o.Reloaded = func(ctx context.Context, env Env, old *config.Config) []string {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, call{old.Jobs.Budget.Schedule, env.Config.Jobs.Budget.Schedule})
			return []string{"gateway not reloaded, it keeps its previous clients: test"}
		}
	})
	ctx := context.Background()
	steps := []struct {
		name      string
		extra     string
		wantOK    bool
		wantCalls []call
	}{
		{name: "refused: not called", extra: "jobs:\n  budget: {schedule: \"61 * * * *\"}\n", wantOK: false, wantCalls: nil},
		{name: "accepted: called with both configs", extra: "jobs:\n  budget: {schedule: \"*/5 * * * *\"}\n", wantOK: true,
			wantCalls: []call{{oldSchedule: "*/30 * * * *", newSchedule: "*/5 * * * *"}}},
	}
	for _, s := range steps {
		writeConfig(t, h.cfg, h.dir, s.extra)
		rel, err := h.client.Reload(ctx)
		if (err == nil) != s.wantOK {
			t.Fatalf("%s: reload err = %v", s.name, err)
		}
		mu.Lock()
		got := append([]call(nil), calls...)
		mu.Unlock()
		if fmt.Sprint(got) != fmt.Sprint(s.wantCalls) {
			t.Fatalf("%s: Reloaded calls %v, want %v", s.name, got, s.wantCalls)
		}
		if s.wantOK {
			st, err := h.client.Status(ctx)
			if err != nil || st.LastReload == nil {
				t.Fatalf("%s: status %v %+v", s.name, err, st)
			}
			for _, notes := range [][]string{rel.Notes, st.LastReload.Notes} {
				if !strings.Contains(strings.Join(notes, "\n"), "gateway not reloaded") {
					t.Errorf("%s: notes %q lack the service's note", s.name, notes)
				}
			}
		}
	}
	if !strings.Contains(h.logs.String(), `"msg":"reload: a service did not take all of the new config"`) {
		t.Error("the service's note is not logged")
	}
}

func TestShutdownCancelsRunsWithinBound(t *testing.T) {
	h := start(t, "shutdown_timeout: 5s\n")
	ctx := context.Background()
	run, err := h.client.RunJob(ctx, "rotate", ctlsock.RunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	<-h.tr.rotateStarted
	sctx, cancel := context.WithTimeout(ctx, h.d.Config().ShutdownTimeout.D())
	defer cancel()
	begin := time.Now()
	if err := h.d.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("shutdown took %s", took)
	}
	if _, err := os.Stat(h.d.AdminSocket()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := h.client.Status(ctx); err == nil {
		t.Error("still answering after shutdown")
	}
	// The journal says canceled; reopen it the way the next start would.
	d2, err := New(ctx, Options{ConfigPath: h.cfg, Version: "test", Logger: slog.New(slog.DiscardHandler), Build: h.tr.build})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Shutdown(ctx)
	r, err := d2.Journal().GetRun(ctx, run.ID)
	if err != nil || r.Status != "canceled" || !strings.Contains(r.Error, "shutdown") {
		t.Errorf("run after shutdown = %+v %v", r, err)
	}
}

// TestShutdownCancelsAReloadInProgress: a reload whose Build hangs (a store
// that does not answer) gives up as Shutdown begins, so the stop keeps its
// bound and the reload is refused.
func TestShutdownCancelsAReloadInProgress(t *testing.T) {
	building := make(chan struct{})
	h := startWith(t, "", func(o *Options) {
		first := o.Build
		var calls atomic.Int32
		o.Build = func(ctx context.Context, env Env) (*Components, error) {
			if calls.Add(1) == 1 {
				return first(ctx, env)
			}
			close(building)
			<-ctx.Done()
			return nil, fmt.Errorf("opening stores: %w", ctx.Err())
		}
	})
	errc := make(chan error, 1)
	go func() {
		_, err := h.d.Reload(context.Background(), "signal")
		errc <- err
	}()
	select {
	case <-building:
	case <-time.After(10 * time.Second):
		t.Fatal("the reload never reached Build")
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.d.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ctlsock.ErrUnavailable) || !errors.Is(err, context.Canceled) {
			t.Errorf("reload err = %v, want unavailable: cancelled by the shutdown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reload still runs after Shutdown returned")
	}
}

func TestSdNotify(t *testing.T) {
	dir, err := os.MkdirTemp("", "mrbn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", fmt.Sprint(os.Getpid()))
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	expect := func(prefix string) string {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.HasPrefix(m, prefix) {
					return m
				}
			case <-deadline:
				t.Fatalf("no %q from the daemon", prefix)
			}
		}
	}
	h := start(t, "")
	expect("READY=1")
	expect("WATCHDOG=1")
	if _, err := h.client.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := expect("RELOADING=1")
	if !strings.Contains(m, "\nMONOTONIC_USEC=") {
		t.Errorf("reloading message %q lacks MONOTONIC_USEC", m)
	}
	expect("READY=1")
	h.d.Shutdown(context.Background())
	expect("STOPPING=1")
}

func TestWatchdogInterval(t *testing.T) {
	tests := []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{usec: "", pid: "", want: 0, ok: false},
		{usec: "junk", pid: "", want: 0, ok: false},
		{usec: "30000000", pid: "", want: 15 * time.Second, ok: true},
		{usec: "30000000", pid: fmt.Sprint(os.Getpid()), want: 15 * time.Second, ok: true},
		{usec: "30000000", pid: "1", want: 0, ok: false},
	}
	for _, tc := range tests {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		got, ok := WatchdogInterval()
		if got != tc.want || ok != tc.ok {
			t.Errorf("usec %q pid %q: = %v %v, want %v %v", tc.usec, tc.pid, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNewLogger(t *testing.T) {
	tests := []struct {
		format, level, env string
		wantErr            string
		debugShown         bool
	}{
		{format: "json", level: "debug", env: "", wantErr: "", debugShown: true},
		{format: "text", level: "info", env: "", wantErr: "", debugShown: false},
		{format: "text", level: "info", env: "debug", wantErr: "", debugShown: true},
		{format: "xml", level: "info", env: "", wantErr: `log format "xml"`, debugShown: false},
		{format: "text", level: "loud", env: "", wantErr: `log.level "loud"`, debugShown: false},
		{format: "text", level: "info", env: "loud", wantErr: `MRBACD_LOG_LEVEL "loud"`, debugShown: false},
	}
	for _, tc := range tests {
		t.Setenv(LevelEnv, tc.env)
		var buf bytes.Buffer
		l, _, err := NewLogger(&buf, tc.format, tc.level)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: err = %v", tc, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		l.Debug("probe", "job", "rotate")
		if got := strings.Contains(buf.String(), "probe"); got != tc.debugShown {
			t.Errorf("%+v: debug shown = %v", tc, got)
		}
	}
}

func TestNewCleansUpOnError(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		extra   string
		build   func(ctx context.Context, env Env) (*Components, error)
		wantErr string
	}{
		{name: "regular file at the socket path", prepare: func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "admin.sock"), []byte("precious"), 0o600)
		}, extra: "", build: nil, wantErr: "is not a socket"},
		{name: "build fails", prepare: nil, extra: "", build: func(ctx context.Context, env Env) (*Components, error) {
			return nil, errors.New("vault store: permission denied")
		}, wantErr: "vault store: permission denied"},
		{name: "metrics address taken", prepare: nil, extra: "metrics: {listen: \"256.0.0.1:1\"}\n", build: nil, wantErr: "metrics listener"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "mrbd")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			cfgPath := filepath.Join(dir, "mrbacd.yaml")
			writeConfig(t, cfgPath, dir, tc.extra)
			if tc.prepare != nil {
				tc.prepare(t, dir)
			}
			tr := &testRunners{rotateStarted: make(chan struct{})}
			build := tc.build
			if build == nil {
				build = tr.build
			}
			d, err := New(context.Background(), Options{ConfigPath: cfgPath, Logger: slog.New(slog.DiscardHandler), Build: build})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || d != nil {
				t.Fatalf("New = %v, %v; want error %q", d, err, tc.wantErr)
			}
			if tc.name == "regular file at the socket path" {
				if data, _ := os.ReadFile(filepath.Join(dir, "admin.sock")); string(data) != "precious" {
					t.Error("the file at the socket path was touched")
				}
			} else if _, err := os.Lstat(filepath.Join(dir, "admin.sock")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket left behind: %v", err)
			}
		})
	}
}
