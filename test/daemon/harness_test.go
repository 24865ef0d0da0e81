// Package daemon_test runs the real mrbacd binary: `mrbacd run` against the
// sandbox platform (mistral/sandbox, served by the test process over real
// HTTP) and a file store, driven with `mrbacd ctl` and signals.
package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/ctlsock"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
)

const adminKey = "sk-admin-daemon-test-0123456789abcdef"

// bin is the mrbacd binary built once by TestMain.
var bin string

func TestMain(m *testing.M) { testenv.MainWithMrbacd(m, &bin) }

// startSandbox serves a sandbox platform with one workspace and one user.
func startSandbox(t testing.TB) *sandbox.Server {
	t.Helper()
	sb := sandbox.New(sandbox.Options{AdminKey: adminKey, Seed: &sandbox.Seed{
		Workspaces: []sandbox.SeedWorkspace{{Name: "dev-workspace"}},
		Users:      []sandbox.SeedUser{{ID: "d0000000-0000-4000-8000-000000000001", Email: "ops@example.com"}},
	}})
	srv := sandboxtest.Serve(t, sb, true)
	sandboxURLs.Store(sb, srv.URL)
	return sb
}

var sandboxURLs sync.Map

// env is one daemon's directory and config.
type env struct {
	t       testing.TB
	dir     string
	cfgPath string
	socket  string
	sb      *sandbox.Server
	// runArgs are added to `mrbacd run --config FILE`.
	runArgs []string
}

type cfgOpts struct {
	keys            int
	propagationWait string
	socketMode      string
	allowedUIDs     string
	extra           string
}

func newEnv(t testing.TB, sb *sandbox.Server) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "mrbd")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // so another uid can reach a world-writable socket in it
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &env{t: t, dir: dir, cfgPath: filepath.Join(dir, "mrbacd.yaml"), socket: filepath.Join(dir, "admin.sock"), sb: sb}
}

func (e *env) writeConfig(o cfgOpts) {
	e.t.Helper()
	if o.keys == 0 {
		o.keys = 1
	}
	if o.propagationWait == "" {
		o.propagationWait = "1s"
	}
	url, _ := sandboxURLs.Load(e.sb)
	var b strings.Builder
	fmt.Fprintf(&b, `mistral:
  base_url: %s
  max_retries: 1
state: {path: %s/state.db}
admin:
  socket: %s
`, url, e.dir, e.socket)
	if o.socketMode != "" {
		fmt.Fprintf(&b, "  socket_mode: %q\n", o.socketMode)
	}
	if o.allowedUIDs != "" {
		fmt.Fprintf(&b, "  allowed_uids: %s\n", o.allowedUIDs)
	}
	fmt.Fprintf(&b, `metrics: {listen: "127.0.0.1:0"}
log: {format: json, level: debug}
shutdown_timeout: 5s
secrets:
  file: {dir: %s/secrets}
workspaces:
  - {name: dev-workspace, team: developers, models: [mistral-small-latest], rpm: 60, monthly_budget_usd: 50}
keys:
`, e.dir)
	for i := 0; i < o.keys; i++ {
		fmt.Fprintf(&b, `  - name: key-%02d
    workspace: dev-workspace
    owner_user_id: d0000000-0000-4000-8000-000000000001
    store: {backend: file, path: team/key-%02d}
    propagation_wait: %s
`, i, i, o.propagationWait)
	}
	b.WriteString(o.extra)
	if err := os.WriteFile(e.cfgPath, []byte(b.String()), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// proc is a running `mrbacd run`.
type proc struct {
	cmd    *exec.Cmd
	stderr *testenv.LogBuffer
	stdout *testenv.LogBuffer
	// notify holds every sd_notify message, each followed by a "--" line.
	notify  *testenv.LogBuffer
	done    chan struct{}
	code    int
	started time.Time
	// ready is how long READY=1 took from the process start.
	ready time.Duration
	// answered is how long until the admin socket answered a status request.
	answered time.Duration
}

// start runs the daemon and waits for READY=1 on a notify socket and for
// its admin socket to answer.
func (e *env) start(extraEnv ...string) *proc {
	e.t.Helper()
	notifyPath := filepath.Join(e.dir, fmt.Sprintf("notify-%d.sock", time.Now().UnixNano()%1e6))
	nconn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		e.t.Fatal(err)
	}
	p := &proc{stderr: &testenv.LogBuffer{}, stdout: &testenv.LogBuffer{}, notify: &testenv.LogBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"run", "--config", e.cfgPath}, e.runArgs...)...)
	p.cmd.Env = append(append(os.Environ(), "MISTRAL_ADMIN_KEY="+adminKey, "NOTIFY_SOCKET="+notifyPath, "MRBACD_LOG_LEVEL="), extraEnv...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		nconn.Close()
		e.t.Fatal(err)
	}
	ready := make(chan time.Duration, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := nconn.Read(buf)
			if err != nil {
				return
			}
			msg := string(buf[:n])
			p.notify.Write([]byte(msg + "\n--\n"))
			if strings.HasPrefix(msg, "READY=1") {
				select {
				case ready <- time.Since(p.started):
				default:
				}
			}
		}
	}()
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
		nconn.Close()
	}()
	e.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
		if e.t.Failed() {
			e.t.Logf("daemon stderr:\n%s", p.stderr.String())
		}
	})
	select {
	case p.ready = <-ready:
	case <-p.done:
		e.t.Fatalf("daemon exited %d before READY=1; stderr:\n%s", p.code, p.stderr.String())
	case <-time.After(20 * time.Second):
		e.t.Fatalf("no READY=1 from the daemon; stderr:\n%s", p.stderr.String())
	}
	c := ctlsock.NewClient(e.socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var statusErr error
	if !testenv.Until(ctx, func() bool { _, statusErr = c.Status(context.Background()); return statusErr == nil }) {
		e.t.Fatalf("admin socket never answered: %v\n%s", statusErr, p.stderr.String())
	}
	p.answered = time.Since(p.started)
	return p
}

// stop sends sig and waits for the exit; it returns the exit code and how long it took.
func (p *proc) stop(t testing.TB, sig syscall.Signal, bound time.Duration) (int, time.Duration) {
	t.Helper()
	begin := time.Now()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.code, time.Since(begin)
	case <-time.After(bound):
		t.Fatalf("daemon still running %s after %v; stderr:\n%s", bound, sig, p.stderr.String())
		return 0, 0
	}
}

// ctlResult is one `mrbacd ctl` invocation.
type ctlResult struct {
	stdout, stderr string
	code           int
}

// ctl runs `mrbacd ctl --socket SOCK args...`, as uid when uid >= 0.
func (e *env) ctlAs(uid int, args ...string) ctlResult {
	e.t.Helper()
	cmd := exec.Command(bin, append([]string{"ctl", "--socket", e.socket}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		cmd.Dir = "/"
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		e.t.Fatalf("ctl %v: %v", args, err)
	}
	return ctlResult{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
}

func (e *env) ctl(args ...string) ctlResult {
	e.t.Helper()
	return e.ctlAs(-1, args...)
}

// ctlJSON runs ctl --json and decodes stdout into v.
func (e *env) ctlJSON(v any, args ...string) ctlResult {
	e.t.Helper()
	r := e.ctl(append([]string{"--json"}, args...)...)
	if r.code == 0 {
		if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
			e.t.Fatalf("ctl %v: decoding %q: %v", args, r.stdout, err)
		}
	}
	return r
}

// execCommand returns the binary with args and the sandbox admin key in its environment.
func execCommand(args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "MISTRAL_ADMIN_KEY="+adminKey)
	return cmd
}
