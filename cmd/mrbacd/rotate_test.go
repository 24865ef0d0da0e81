package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
)

// rotateWorld is a sandbox platform and a config using the file store.
type rotateWorld struct {
	sb      *sandbox.Server
	cfgPath string
	state   string
}

func newRotateWorld(t *testing.T) *rotateWorld {
	t.Helper()
	return newRotateWorldWith(t, "")
}

// newRotateWorldWith is newRotateWorld with extra config appended.
func newRotateWorldWith(t *testing.T, extra string) *rotateWorld {
	t.Helper()
	dir := t.TempDir()
	sb := sandbox.New(sandbox.Options{})
	srv := sandboxtest.Serve(t, sb, true)
	adminKey := filepath.Join(dir, "admin-key")
	if err := os.WriteFile(adminKey, []byte(sb.AdminKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	w := &rotateWorld{sb: sb, state: filepath.Join(dir, "state.db"), cfgPath: filepath.Join(dir, "mrbacd.yaml")}
	cfg := fmt.Sprintf(`mistral: {base_url: %q, admin_key_file: %q, max_retries: 1}
state: {path: %q}
secrets:
  file: {dir: %q}
workspaces:
  - {name: %q, team: t, models: ["*"], rpm: 60, monthly_budget_usd: 10}
keys:
  - {name: one, workspace: %q, owner_user_id: %s, store: {backend: file, path: keys/one}, propagation_wait: 10ms}
  - {name: two, workspace: %q, owner_user_id: %s, store: {backend: file, path: keys/two, value_format: raw}, propagation_wait: 10ms}
jobs:
  rotate: {verify_timeout: 1s}
%s`, srv.URL, adminKey, w.state, filepath.Join(dir, "secrets"), sandbox.DefaultWorkspaceName,
		sandbox.DefaultWorkspaceName, sb.Users()[0].ID, sandbox.DefaultWorkspaceName, sb.Users()[0].ID, extra)
	if err := os.WriteFile(w.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *rotateWorld) run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), &cmdEnv{stdout: &out, stderr: &errb}, args)
	return code, out.String(), errb.String()
}

func TestRotateAndPlanCommands(t *testing.T) {
	w := newRotateWorld(t)
	steps := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		check    func(t *testing.T, out string)
	}{
		{name: "plan before anything: bootstrap both", args: []string{"plan", "--config", w.cfgPath}, wantCode: 0,
			wantOut: []string{"rotate: 2 of 2 keys due", "one", "bootstrap"}, check: func(t *testing.T, _ string) {
				if _, err := os.Stat(w.state); err == nil {
					t.Fatal("plan created the journal")
				}
			}},
		{name: "dry run changes nothing", args: []string{"rotate", "--config", w.cfgPath, "--dry-run"}, wantCode: 0,
			wantOut: []string{"dry run: would rotate 2 of 2 keys", "would_bootstrap"}, check: func(t *testing.T, _ string) {
				if len(w.sb.Keys()) != 0 {
					t.Fatal("dry run created keys")
				}
				for _, p := range []string{w.state, filepath.Join(filepath.Dir(w.state), "secrets")} {
					if _, err := os.Stat(p); !os.IsNotExist(err) {
						t.Fatalf("dry run created %s (stat: %v)", p, err)
					}
				}
			}},
		{name: "rotate bootstraps", args: []string{"rotate", "--config", w.cfgPath}, wantCode: 0,
			wantOut: []string{"rotated 2 of 2 keys", "bootstrapped"}, check: nil},
		{name: "plan: nothing due", args: []string{"plan", "--config", w.cfgPath, "--json"}, wantCode: 0,
			wantOut: []string{`"action": "none"`}, check: func(t *testing.T, out string) {
				var p struct {
					Rotate []struct {
						Key          string `json:"key"`
						Action       string `json:"action"`
						CurrentKeyID string `json:"current_key_id"`
					} `json:"rotate"`
				}
				if err := json.Unmarshal([]byte(out), &p); err != nil || len(p.Rotate) != 2 {
					t.Fatalf("plan --json: %v %s", err, out)
				}
				for _, it := range p.Rotate {
					if it.Action != "none" || it.CurrentKeyID == "" {
						t.Fatalf("plan item %+v", it)
					}
				}
			}},
		{name: "rotate: not due", args: []string{"rotate", "--config", w.cfgPath}, wantCode: 0, wantOut: []string{"rotated 0 of 0 keys", "not_due"}, check: nil},
		{name: "rotate one key by force, as JSON", args: []string{"rotate", "--config", w.cfgPath, "--key", "two", "--force", "--json"}, wantCode: 0,
			wantOut: []string{`"outcome": "rotated"`, `"key": "two"`}, check: func(t *testing.T, out string) {
				if strings.Contains(out, `"key": "one"`) {
					t.Fatal("--key two rotated one too")
				}
			}},
		{name: "unknown key", args: []string{"rotate", "--config", w.cfgPath, "--key", "nope"}, wantCode: 2, wantOut: nil, check: nil},
		{name: "missing config flag", args: []string{"rotate"}, wantCode: 2, wantOut: nil, check: nil},
		{name: "stray argument", args: []string{"plan", "--config", w.cfgPath, "extra"}, wantCode: 2, wantOut: nil, check: nil},
	}
	for _, s := range steps {
		code, out, errOut := w.run(s.args...)
		if code != s.wantCode {
			t.Fatalf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", s.name, code, s.wantCode, out, errOut)
		}
		for _, want := range s.wantOut {
			if !strings.Contains(out, want) {
				t.Fatalf("%s: stdout lacks %q:\n%s", s.name, want, out)
			}
		}
		if s.check != nil {
			s.check(t, out)
		}
		for _, k := range w.sb.Keys() {
			if strings.Contains(out, k.Plaintext) || strings.Contains(errOut, k.Plaintext) {
				t.Fatalf("%s: key material in the output", s.name)
			}
		}
	}
}

func TestRotateFailureExitCode(t *testing.T) {
	w := newRotateWorld(t)
	w.sb.InjectFault(sandbox.Fault{Route: "GET /v1/models", Status: 401})
	code, out, errOut := w.run("rotate", "--config", w.cfgPath)
	if code != exitFailed || !strings.Contains(out, "failed") {
		t.Fatalf("exit %d, want %d\n%s\n%s", code, exitFailed, out, errOut)
	}
	for _, k := range w.sb.Keys() {
		if !k.Deleted {
			t.Fatalf("a failed bootstrap left key %s alive", k.ID)
		}
	}
}

func TestConfigProblemsExitUsage(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(p, []byte("keys:\n  - {name: Bad Name, workspace: nowhere}\nunknown_key: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"rotate", "plan"} {
		var out, errb bytes.Buffer
		code := run(context.Background(), &cmdEnv{stdout: &out, stderr: &errb}, []string{cmd, "--config", p})
		if code != exitUsage {
			t.Fatalf("%s: exit %d, want %d", cmd, code, exitUsage)
		}
		if lines := strings.Count(errb.String(), p+":"); lines < 2 {
			t.Fatalf("%s: want every problem as FILE:LINE:COL, got:\n%s", cmd, errb.String())
		}
	}
}
