package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/contract"
)

func TestSandboxUsage(t *testing.T) {
	dir := t.TempDir()
	badSeed := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badSeed, []byte("keys: [{name: a, workspace: nope}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		args      []string
		code      int
		stderrHas string
	}{
		{name: "help", args: []string{"sandbox", "--help"}, code: exitOK, stderrHas: "usage: mrbacd sandbox --listen ADDR [--seed FILE] [--now RFC3339]"},
		{name: "bad flag", args: []string{"sandbox", "--bogus"}, code: exitUsage, stderrHas: "flag provided but not defined: -bogus"},
		{name: "extra argument", args: []string{"sandbox", "more"}, code: exitUsage, stderrHas: `unexpected argument "more"`},
		{name: "bad now", args: []string{"sandbox", "--now", "tomorrow"}, code: exitUsage, stderrHas: `--now "tomorrow": want an RFC 3339 time`},
		{name: "bad seed", args: []string{"sandbox", "--seed", badSeed}, code: exitUsage, stderrHas: `keys[0].workspace: unknown workspace "nope"`},
		{name: "missing seed", args: []string{"sandbox", "--seed", filepath.Join(dir, "none.yaml")}, code: exitUsage, stderrHas: "no such file"},
		{name: "bad listen", args: []string{"sandbox", "--listen", "256.0.0.1:x"}, code: exitFailed, stderrHas: "listen:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), &cmdEnv{stdout: &out, stderr: &errb}, tt.args)
			if code != tt.code || !strings.Contains(errb.String(), tt.stderrHas) {
				t.Errorf("exit %d, stderr %q; want %d containing %q", code, errb.String(), tt.code, tt.stderrHas)
			}
		})
	}
}

var listeningRE = regexp.MustCompile(`listening on (http://\S+)`)

// startSandboxCmd runs `mrbacd sandbox` until the test ends and returns its URL.
func startSandboxCmd(t *testing.T, args ...string) (url string, stderr *testenv.LogBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errb := &testenv.LogBuffer{}, &testenv.LogBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, &cmdEnv{stdout: out, stderr: errb}, append([]string{"sandbox", "--listen", "127.0.0.1:0"}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("sandbox exited %d: %s", code, errb.String())
			}
		case <-time.After(10 * time.Second):
			t.Error("sandbox did not stop")
		}
	})
	deadline := time.Now().Add(30 * time.Second) // generous: -race on a loaded machine
	for time.Now().Before(deadline) {
		if m := listeningRE.FindStringSubmatch(out.String()); m != nil {
			return checkedProxy(t, m[1]), errb
		}
		select {
		case code := <-done:
			t.Fatalf("sandbox exited %d: %s", code, errb.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("sandbox did not start: %s", errb.String())
	return "", nil
}

func TestSandboxServes(t *testing.T) {
	seed := filepath.Join(t.TempDir(), "seed.yaml")
	if err := os.WriteFile(seed, []byte(`
admin_key: sk-admin-seeded-0123456789abcdef
workspaces: [{name: dev-workspace}]
keys: [{name: dev-team-key, key: DevTeamKeyPlaintext0123456789abc, workspace: dev-workspace, expiration_date: 2026-12-01}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	url, stderr := startSandboxCmd(t, "--seed", seed, "--now", "2026-11-27T12:00:00Z")
	c, err := mistral.New(mistral.Options{BaseURL: url, AdminKey: "sk-admin-seeded-0123456789abcdef", AdminAuthHeader: "x-api-key"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys, err := c.ListAllKeys(ctx, "dev-team-key")
	if err != nil || len(keys) != 1 || keys[0].WorkspaceName != "dev-workspace" {
		t.Fatalf("keys = %+v, %v", keys, err)
	}
	if _, err := c.ListModels(ctx, "DevTeamKeyPlaintext0123456789abc"); err != nil {
		t.Fatalf("seeded key refused on 2026-11-27: %v", err)
	}
	keys, _ = c.ListAllKeys(ctx, "dev-team-key")
	if keys[0].LastUsed == nil || keys[0].LastUsed.String() != "2026-11-27" {
		t.Errorf("--now not applied: last_used %v", keys[0].LastUsed)
	}
	if !strings.Contains(stderr.String(), "admin key from seed") || strings.Contains(stderr.String(), "sk-admin-seeded") {
		t.Errorf("stderr = %q", stderr.String())
	}
}

func TestSandboxAdminKeySources(t *testing.T) {
	t.Run("env", func(t *testing.T) {
		t.Setenv("MISTRAL_ADMIN_KEY", "sk-admin-from-env-0123456789abcdef")
		url, stderr := startSandboxCmd(t)
		c, _ := mistral.New(mistral.Options{BaseURL: url, AdminKey: "sk-admin-from-env-0123456789abcdef"})
		if _, err := c.RateLimit(context.Background()); err != nil {
			t.Fatalf("env admin key refused: %v", err)
		}
		if !strings.Contains(stderr.String(), "admin key from MISTRAL_ADMIN_KEY") {
			t.Errorf("stderr = %q", stderr.String())
		}
	})
	t.Run("random", func(t *testing.T) {
		t.Setenv("MISTRAL_ADMIN_KEY", "")
		url, stderr := startSandboxCmd(t)
		m := regexp.MustCompile(`admin key \(random\): (\S+)`).FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatalf("random key not printed: %q", stderr.String())
		}
		c, _ := mistral.New(mistral.Options{BaseURL: url, AdminKey: mistral.Secret(m[1])})
		if _, err := c.ListAllWorkspaces(context.Background()); err != nil {
			t.Fatalf("printed admin key refused: %v", err)
		}
	})
}

// checkedProxy serves target (the sandbox command's listener) through a
// reverse proxy behind the contract checker, so every answer the test sees
// is checked against the spec; it returns the proxy's URL.
func checkedProxy(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(contract.Install(t, httputil.NewSingleHostReverseProxy(u), true))
	t.Cleanup(srv.Close)
	return srv.URL
}
