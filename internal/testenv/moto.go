package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MotoServer is a running `moto_server` (in-memory AWS, used for Secrets
// Manager). Stop loses its data; Pause/Resume keep it.
type MotoServer struct {
	// Endpoint is the base URL to give aws-sdk-go-v2 as BaseEndpoint.
	Endpoint string
	// Region is the region tests should use ("us-east-1").
	Region string
	// AccessKeyID and SecretAccessKey are static test credentials moto accepts.
	AccessKeyID, SecretAccessKey string

	mu   sync.Mutex
	proc *process
}

const motoHowTo = `How to get moto_server for the tests:
  pip install 'moto[server]==5.2.1'   (the machine image ships it; check that moto_server is on PATH)`

// Moto starts a real moto_server on a free 127.0.0.1 port, waits until it
// answers, and stops it when the test ends.
func Moto(t testing.TB) *MotoServer {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		t.Fatalf("testenv: moto_server not found on PATH: %v\n%s", err, motoHowTo)
	}
	m := &MotoServer{Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing"}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := FreePort(t)
		lastErr = m.start(bin, port)
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("testenv: starting moto_server: %v\n%s", lastErr, motoHowTo)
	}
	t.Cleanup(m.Stop)
	return m
}

func (m *MotoServer) start(bin string, port int) error {
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	env := []string{"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_DEFAULT_REGION=us-east-1"}
	p, err := startProcess(bin, []string{"-H", "127.0.0.1", "-p", fmt.Sprint(port)}, env)
	if err != nil {
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	err = waitFor(p, 60*time.Second, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/moto-api/", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /moto-api/: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		out := p.out.String()
		p.stop()
		if addrInUse(out) {
			return fmt.Errorf("port %d in use: %w", port, err)
		}
		return fmt.Errorf("moto_server did not become ready: %w\noutput:\n%s", err, out)
	}
	m.mu.Lock()
	m.Endpoint, m.proc = endpoint, p
	m.mu.Unlock()
	return nil
}

// Stop kills the server (its in-memory data is lost). Safe to call more than once.
func (m *MotoServer) Stop() {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// Pause freezes the server process (SIGSTOP): connections hang, data is kept.
func (m *MotoServer) Pause() { m.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (m *MotoServer) Resume() { m.signal(syscall.SIGCONT) }

func (m *MotoServer) signal(sig syscall.Signal) {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p != nil {
		p.signal(sig)
	}
}

// Reset clears all of moto's state (POST /moto-api/reset).
func (m *MotoServer) Reset(t testing.TB) {
	t.Helper()
	resp, err := http.Post(m.Endpoint+"/moto-api/reset", "application/json", nil)
	if err != nil {
		t.Fatalf("testenv: resetting moto: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("testenv: resetting moto: %s", resp.Status)
	}
}

// Output returns the server's recent log output.
func (m *MotoServer) Output() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return ""
	}
	return m.proc.out.String()
}
