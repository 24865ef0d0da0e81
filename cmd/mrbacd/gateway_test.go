package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
)

// TestGatewayCommand runs `mrbacd gateway --config FILE` against the sandbox
// with a file store: it serves, enforces the role, and exits 0 on cancel
// (SIGTERM) without printing the client token or the upstream key.
func TestGatewayCommand(t *testing.T) {
	ctx := context.Background()
	sb := sandbox.New(sandbox.Options{})
	srv := sandboxtest.Serve(t, sb, true)
	k, err := sb.AddKey("dev-key", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	store, err := file.New(filepath.Join(dir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Write(ctx, secrets.WriteRequest{Target: secrets.Target{Path: "mistral/dev"}, IfVersion: secrets.NoVersion,
		Record: secrets.Record{APIKey: k.Plaintext, KeyID: k.ID, KeyName: k.Name}}); err != nil {
		t.Fatal(err)
	}
	const token = "gw-cmd-test-token-0123456789"
	t.Setenv("GW_CMD_TEST_TOKEN", token)
	cfg := writeFile(t, "gw.yaml", fmt.Sprintf(`mistral: {base_url: %s}
state: {path: %s}
secrets: {file: {dir: %s}}
workspaces: [{name: dev}]
keys: [{name: dev-key, workspace: dev, store: {backend: file, path: mistral/dev}}]
roles: {analyst: {models: [mistral-small-latest], max_tokens_per_request: 50}}
gateway:
  listen: 127.0.0.1:1
  clients: [{name: app, role: analyst, workspace: dev, token_env: GW_CMD_TEST_TOKEN}]
`, srv.URL, filepath.Join(dir, "state.db"), filepath.Join(dir, "secrets")))

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stdout, stderr testenv.LogBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(runCtx, &cmdEnv{stdout: &stdout, stderr: &stderr}, []string{"gateway", "--config", cfg, "--listen", "127.0.0.1:0"})
	}()
	addrRE := regexp.MustCompile(`listening on (http://\S+)`)
	var base string
	exited := -1
	testenv.WaitFor(t, 10*time.Second, "the gateway to start", func() bool {
		if m := addrRE.FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
			return true
		}
		select {
		case exited = <-done:
			return true
		default:
			return false
		}
	})
	if base == "" {
		t.Fatalf("exited %d early; stderr:\n%s", exited, stderr.String())
	}
	tests := []struct {
		name, model, token string
		want               int
	}{
		{name: "allowed", model: "mistral-small-latest", token: token, want: 200},
		{name: "model not allowed", model: "mistral-large-latest", token: token, want: 403},
		{name: "unknown token", model: "mistral-small-latest", token: "nope", want: 401},
	}
	for _, tc := range tests {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(
			`{"model":"`+tc.model+`","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.name, resp.StatusCode, tc.want, b)
		}
	}
	// SIGHUP reloads: a client added to the file is served.
	const token2 = "gw-cmd-test-token-second-987654"
	t.Setenv("GW_CMD_TEST_TOKEN2", token2)
	cfgText, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	added := strings.Replace(string(cfgText), "token_env: GW_CMD_TEST_TOKEN}]",
		"token_env: GW_CMD_TEST_TOKEN}, {name: app2, role: analyst, workspace: dev, token_env: GW_CMD_TEST_TOKEN2}]", 1)
	if err := os.WriteFile(cfg, []byte(added), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	status := 0
	reloadCtx, cancelReload := context.WithTimeout(ctx, 10*time.Second)
	defer cancelReload()
	if !testenv.Until(reloadCtx, func() bool {
		req, _ := http.NewRequest("GET", base+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+token2)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		status = resp.StatusCode
		return status == 200
	}) {
		t.Fatalf("the client added before SIGHUP gets %d; stderr:\n%s", status, stderr.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d after cancel; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("gateway did not stop")
	}
	for _, s := range []string{token, token2, k.Plaintext} {
		if strings.Contains(stdout.String()+stderr.String(), s) {
			t.Fatal("a secret appears in the command's output")
		}
	}
}

func TestGatewayCommandUsage(t *testing.T) {
	noListen := writeFile(t, "nl.yaml", "workspaces: [{name: dev}]\nkeys: [{name: dev-key, workspace: dev, store: {backend: file, path: k}}]\nroles: {a: {models: ['*']}}\n")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{name: "no config", args: []string{"gateway"}, code: exitUsage, want: "--config is required"},
		{name: "extra argument", args: []string{"gateway", "--config", noListen, "x"}, code: exitUsage, want: `unexpected argument "x"`},
		{name: "no listen", args: []string{"gateway", "--config", noListen}, code: exitUsage, want: "gateway.listen is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d stderr %q, want %d and %q", code, stderr, tc.code, tc.want)
			}
		})
	}
}
