// Package testenv starts the real components mrbacd's tests run against: a
// Vault dev server, moto_server (AWS Secrets Manager) and a slacktest server,
// each on a free 127.0.0.1 port and stopped by t.Cleanup, and a database of
// the test's own on the machine's PostgreSQL, dropped by t.Cleanup.
//
// A missing tool fails the test loudly with instructions on how to get it;
// nothing here ever skips a test.
//
//	v := testenv.Vault(t)   // v.Addr, v.RootToken, v.Client; Seal/Unseal, Pause/Resume, Stop/Restart
//	m := testenv.Moto(t)    // m.Endpoint, m.Region, static keys; Pause/Resume, Stop, Reset
//	s := testenv.Slack(t)   // slack.OptionAPIURL(s.APIURL), s.WebhookURL; s.Messages(); RateLimit, FailNext, SetDown
//	p := testenv.Postgres(t) // p.DSN; TerminateSessions (what a server restart does to clients)
//
// The Vault binary comes from $MRBACD_VAULT_BIN, the cache that
// scripts/ensure-vault.sh fills (~/.cache/mrbacd/vault-v1.21.0/vault), or a
// build by that script (minutes: run it once before `go test`).
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Callers that start a server on it should retry with a new port if the
// server reports the address in use (another process may have taken it).
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// repoRoot returns the module root, found relative to this source file.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("runtime.Caller failed")
	}
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("module root not found at %s: %w", root, err)
	}
	return root, nil
}

// lockedBuffer collects a child process's output for failure messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Keep the last 64 KiB at most.
	if b.buf.Len() > 64<<10 {
		rest := b.buf.Bytes()[b.buf.Len()-32<<10:]
		nb := append([]byte(nil), rest...)
		b.buf.Reset()
		b.buf.Write(nb)
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// process is a started child process with its output and exit status.
type process struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	done   chan struct{}
	mu     sync.Mutex
	exited bool
	err    error
}

func startProcess(name string, args []string, env []string) (*process, error) {
	cmd := exec.Command(name, args...)
	out := &lockedBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.Env = append(os.Environ(), env...)
	// Kill the child if the test binary dies without running cleanups, and
	// give it its own process group so signals reach its children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.exited, p.err = true, err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// hasExited reports whether the process ended, and how.
func (p *process) hasExited() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited, p.err
}

// signal sends sig to the process group. For SIGSTOP it waits (up to 2s)
// until every thread of the process is stopped, so a paused server answers
// nothing from the moment signal returns.
func (p *process) signal(sig syscall.Signal) {
	if ex, _ := p.hasExited(); ex {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	if sig != syscall.SIGSTOP {
		return
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && !p.allStopped() {
		time.Sleep(5 * time.Millisecond)
	}
}

// allStopped reports whether every thread of the process is in state T.
func (p *process) allStopped() bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", p.cmd.Process.Pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			return false
		}
		// The state follows the command name in parentheses: "pid (comm) S ...".
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
			return false
		}
	}
	return true
}

// stop kills the process group and waits for the process to exit.
func (p *process) stop() {
	if ex, _ := p.hasExited(); ex {
		return
	}
	p.signal(syscall.SIGCONT) // a paused process must run to die cleanly
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(5 * time.Second):
	}
	p.signal(syscall.SIGKILL)
	<-p.done
}

// waitFor polls ready until it returns nil, the process exits, or the timeout.
func waitFor(p *process, timeout time.Duration, ready func(ctx context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if ex, err := p.hasExited(); ex {
			return fmt.Errorf("process exited early (%v)", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		last = ready(ctx)
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s: %v", timeout, last)
}

// addrInUse reports whether a failed start looks like a port collision.
func addrInUse(out string) bool {
	return strings.Contains(out, "address already in use") || strings.Contains(out, "Address already in use")
}
