package ctlsock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/scheduler"
	"github.com/mrbacd/mrbacd/journal"
)

// testBackend is a small real backend: a scheduler over a real journal.
type testBackend struct {
	db    *journal.DB
	sched *scheduler.Scheduler
	mu    sync.Mutex
	// reloadErr, when set, makes Reload refuse the config.
	reloadErr string
}

func (b *testBackend) Status(ctx context.Context) (Status, error) {
	js, err := b.Jobs(ctx)
	return Status{Version: "test", PID: os.Getpid(), ConfigHash: "abc", Jobs: js}, err
}

func (b *testBackend) Jobs(ctx context.Context) ([]Job, error) {
	var out []Job
	for _, j := range b.sched.Jobs() {
		job := Job{Name: j.Name, Schedule: j.Schedule}
		if j.Running != nil {
			job.Running = &Run{ID: j.Running.ID, Job: j.Name, Status: "running", Trigger: j.Running.Trigger}
		}
		out = append(out, job)
	}
	return out, nil
}

func (b *testBackend) RunJob(ctx context.Context, job string, req jobs.Request, wait bool) (Run, error) {
	r, err := b.sched.Trigger(ctx, job, req)
	switch {
	case errors.Is(err, scheduler.ErrUnknownJob):
		return Run{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, scheduler.ErrAlreadyRunning):
		return Run{}, fmt.Errorf("%w: %w", ErrConflict, err)
	case err != nil:
		return Run{}, err
	}
	if wait {
		if _, err := r.Wait(ctx); err != nil {
			return Run{}, err
		}
	}
	return b.Run(ctx, r.ID)
}

func (b *testBackend) Runs(ctx context.Context, limit int) ([]Run, error) {
	rs, err := b.db.Runs(ctx, journal.RunFilter{Limit: limit})
	var out []Run
	for _, r := range rs {
		out = append(out, Run{ID: r.ID, Job: r.Job, Trigger: r.Trigger, Status: r.Status, Error: r.Error, Args: r.Args})
	}
	return out, err
}

func (b *testBackend) Run(ctx context.Context, id int64) (Run, error) {
	r, err := b.db.GetRun(ctx, id)
	if errors.Is(err, journal.ErrNotFound) {
		return Run{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return Run{ID: r.ID, Job: r.Job, Trigger: r.Trigger, Status: r.Status, Error: r.Error, Args: r.Args}, err
}

func (b *testBackend) Reload(ctx context.Context) (Reload, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	rel := Reload{At: time.Now(), Trigger: ReloadTrigger(ctx)}
	if b.reloadErr != "" {
		rel.Error = b.reloadErr
		return rel, fmt.Errorf("%w: config refused: %s", ErrInvalid, b.reloadErr)
	}
	rel.OK = true
	return rel, nil
}

func newBackend(t *testing.T) (*testBackend, chan struct{}) {
	t.Helper()
	db, err := journal.Open(context.Background(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	release := make(chan struct{})
	s := scheduler.New(scheduler.Options{Journal: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	err = s.SetJobs(time.UTC, []scheduler.Job{
		{Name: "audit", Runner: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
			return jobs.Result{Summary: "2 findings"}, nil
		})},
		{Name: "rotate", Runner: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
			select {
			case <-release:
				return jobs.Result{Summary: "rotated"}, nil
			case <-ctx.Done():
				return jobs.Result{}, ctx.Err()
			}
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	return &testBackend{db: db, sched: s}, release
}

// shortDir returns a directory short enough for a unix socket path.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mrb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startServer(t *testing.T, opts ServerOptions) *Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := Listen(opts)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go s.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s
}

func TestSocketModeAndStaleHandling(t *testing.T) {
	b, _ := newBackend(t)
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		mode    os.FileMode
		group   string
		want    os.FileMode
		wantErr string
	}{
		{name: "default mode", prepare: nil, mode: 0, group: "", want: 0o600, wantErr: ""},
		{name: "group mode", prepare: nil, mode: 0o660, group: "0", want: 0o660, wantErr: ""},
		{name: "stale socket removed", prepare: func(t *testing.T, path string) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			ln.Close()
		}, mode: 0, group: "", want: 0o600, wantErr: ""},
		{name: "regular file refused", prepare: func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, mode: 0, group: "", want: 0, wantErr: "is not a socket"},
		{name: "live socket refused", prepare: func(t *testing.T, path string) {
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}, mode: 0, group: "", want: 0, wantErr: "another process answers"},
		{name: "unknown group", prepare: nil, mode: 0o660, group: "no-such-group-mrbacd", want: 0, wantErr: "no-such-group-mrbacd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(shortDir(t), "admin.sock")
			if tc.prepare != nil {
				tc.prepare(t, path)
			}
			s, err := Listen(ServerOptions{Socket: path, Mode: tc.mode, Group: tc.group, Backend: b})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if tc.name == "regular file refused" {
					if data, _ := os.ReadFile(path); string(data) != "not a socket" {
						t.Error("the regular file was touched")
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			go s.Serve()
			defer s.Shutdown(context.Background())
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != tc.want {
				t.Errorf("mode = %v, want socket %o", fi.Mode(), tc.want)
			}
			if _, err := NewClient(path).Status(context.Background()); err != nil {
				t.Errorf("status: %v", err)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	b, release := newBackend(t)
	path := filepath.Join(shortDir(t), "admin.sock")
	startServer(t, ServerOptions{Socket: path, Backend: b, MaxBodyBytes: 1024})
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	ctx := context.Background()
	// Start a rotate run that blocks, so a second trigger conflicts.
	c := NewClient(path)
	first, err := c.RunJob(ctx, "rotate", RunRequest{Key: "dev-team-key"})
	if err != nil {
		t.Fatal(err)
	}
	if first.Status != "running" || first.Trigger != fmt.Sprintf("uid:%d", os.Getuid()) {
		t.Errorf("started run = %+v", first)
	}

	tests := []struct {
		name, method, path, body string
		wantCode                 int
		wantBody                 string
	}{
		{name: "status", method: "GET", path: "/v1/status", body: "", wantCode: 200, wantBody: `"config_hash":"abc"`},
		{name: "jobs shows running", method: "GET", path: "/v1/jobs", body: "", wantCode: 200, wantBody: `"running":{"id":1`},
		{name: "wrong method", method: "POST", path: "/v1/status", body: "", wantCode: 405, wantBody: `"error":"method POST not allowed`},
		{name: "no route", method: "GET", path: "/v1/nope", body: "", wantCode: 404, wantBody: `"error":"no route GET /v1/nope"`},
		{name: "unknown job", method: "POST", path: "/v1/jobs/nope/run", body: "", wantCode: 404, wantBody: `unknown job`},
		{name: "already running", method: "POST", path: "/v1/jobs/rotate/run", body: `{}`, wantCode: 409, wantBody: `job already running`},
		{name: "body too large", method: "POST", path: "/v1/jobs/audit/run", body: `{"key":"` + strings.Repeat("x", 2000) + `"}`, wantCode: 413, wantBody: `larger than 1024 bytes`},
		{name: "unknown field", method: "POST", path: "/v1/jobs/audit/run", body: `{"keyy":"a"}`, wantCode: 400, wantBody: `unknown field`},
		{name: "bad json", method: "POST", path: "/v1/jobs/audit/run", body: `{"key":`, wantCode: 400, wantBody: `invalid JSON body`},
		{name: "run and wait", method: "POST", path: "/v1/jobs/audit/run", body: `{"wait":true,"dry_run":true}`, wantCode: 200, wantBody: `"status":"ok"`},
		{name: "run async", method: "POST", path: "/v1/jobs/audit/run", body: `{}`, wantCode: 202, wantBody: `"job":"audit"`},
		{name: "bad limit", method: "GET", path: "/v1/runs?limit=0", body: "", wantCode: 400, wantBody: `limit must be an integer from 1 to 1000`},
		{name: "runs", method: "GET", path: "/v1/runs?limit=2", body: "", wantCode: 200, wantBody: `"job":"audit"`},
		{name: "bad run id", method: "GET", path: "/v1/runs/abc", body: "", wantCode: 400, wantBody: `run id must be a positive integer`},
		{name: "missing run", method: "GET", path: "/v1/runs/9999", body: "", wantCode: 404, wantBody: `not found`},
		{name: "one run", method: "GET", path: "/v1/runs/1", body: "", wantCode: 200, wantBody: `"args":"{\"key\":\"dev-team-key\"}"`},
		{name: "reload ok", method: "POST", path: "/v1/reload", body: "", wantCode: 200, wantBody: `"ok":true,"trigger":"uid:`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://mrbacd"+tc.path, strings.NewReader(tc.body))
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(data), tc.wantBody) {
				t.Errorf("%s %s = %d %s, want %d containing %s", tc.method, tc.path, resp.StatusCode, data, tc.wantCode, tc.wantBody)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q", ct)
			}
			if resp.StatusCode >= 400 {
				var eb map[string]any
				if err := json.Unmarshal(data, &eb); err != nil || eb["error"] == "" {
					t.Errorf("error body not JSON {error}: %s", data)
				}
			}
		})
	}
	close(release)

	b.reloadErr = "config.yaml:3:5: jobs.rotate.schedule: invalid cron schedule"
	_, err = c.Reload(ctx)
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 422 || ae.Reload == nil || !strings.Contains(ae.Reload.Error, "jobs.rotate.schedule") {
		t.Errorf("refused reload: %v (%+v)", err, ae)
	}
}

func TestPeerUIDRefused(t *testing.T) {
	b, _ := newBackend(t)
	s := &Server{opts: ServerOptions{Backend: b, MaxBodyBytes: 1024}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s.SetAllowedUIDs([]int{1000})
	tests := []struct {
		name string
		p    *peer
		want int
		msg  string
	}{
		{name: "own uid", p: &peer{uid: uint32(os.Getuid())}, want: 200, msg: ""},
		{name: "allowed uid", p: &peer{uid: 1000}, want: 200, msg: ""},
		{name: "other uid", p: &peer{uid: 65534, pid: 42}, want: 403, msg: "uid 65534 is not allowed"},
		{name: "no credentials", p: &peer{err: errors.New("SO_PEERCRED failed")}, want: 403, msg: "cannot identify"},
		{name: "no peer at all", p: nil, want: 403, msg: "cannot identify"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/v1/jobs", nil)
			if tc.p != nil {
				req = req.WithContext(context.WithValue(req.Context(), peerKey, *tc.p))
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != tc.want || !strings.Contains(rec.Body.String(), tc.msg) {
				t.Errorf("= %d %s, want %d %q", rec.Code, rec.Body, tc.want, tc.msg)
			}
		})
	}
}

func TestClientUnreachable(t *testing.T) {
	path := filepath.Join(shortDir(t), "absent.sock")
	_, err := NewClient(path).Status(context.Background())
	var ue *UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "no such file") || ue.Socket != path {
		t.Errorf("err = %v, want UnreachableError naming the socket", err)
	}
}
