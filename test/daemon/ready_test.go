package daemon_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
)

// gatewayClients is a gateway section with one client of dev-workspace.
func gatewayClients(listen string) string {
	sum := sha256.Sum256([]byte("gw-client-token-for-the-ready-test"))
	return `roles:
  analyst: {models: [mistral-small-latest], max_tokens_per_request: 500, daily_tokens: 100000}
gateway:
  listen: "` + listen + `"
  clients:
    - {name: reporting-app, role: analyst, workspace: dev-workspace, token_sha256: ` + hex.EncodeToString(sum[:]) + `}
`
}

// logField returns field of the first JSON log line whose msg is msg.
func logField(logs, msg, field string) string {
	for _, line := range strings.Split(logs, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			if s, ok := rec[field].(string); ok {
				return s
			}
		}
	}
	return ""
}

// waitReadyz waits until GET /readyz answers code with body.
func waitReadyz(t *testing.T, url string, code int, body string, stderr *testenv.LogBuffer) {
	t.Helper()
	var got int
	var gotBody string
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if !testenv.Until(ctx, func() bool {
		got, gotBody = httpGet(t, url)
		return got == code && strings.TrimSpace(gotBody) == body
	}) {
		t.Fatalf("/readyz answers %d %q, want %d %q; stderr:\n%s", got, gotBody, code, body, stderr.String())
	}
}

// TestGatewayReadyz: `mrbacd gateway` on a PostgreSQL journal is not ready
// until its workspace's upstream key is in the store, then ready; not ready
// while PostgreSQL refuses connections, and ready again once it accepts
// them, without a restart.
func TestGatewayReadyz(t *testing.T) {
	pg := testenv.Postgres(t)
	e := newEnv(t, startSandbox(t))
	e.writeConfig(cfgOpts{extra: gatewayClients("127.0.0.1:0")})
	cfg, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(cfg), "state: {path: "+e.dir+"/state.db}", "state: {postgres: {dsn_env: MRBACD_READY_TEST_DSN}}", 1)
	if err := os.WriteFile(e.cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr testenv.LogBuffer
	cmd := exec.Command(bin, "gateway", "--config", e.cfgPath)
	cmd.Env = append(os.Environ(), "MISTRAL_ADMIN_KEY="+adminKey, "MRBACD_READY_TEST_DSN="+pg.DSN)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	done := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("mrbacd gateway not reaped after SIGKILL")
			}
		}
		if t.Failed() {
			t.Logf("mrbacd gateway stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
	})
	listening := regexp.MustCompile(`listening on http://\S+`)
	testenv.WaitFor(t, 20*time.Second, "the gateway to listen", func() bool { return listening.MatchString(stdout.String()) })
	readyz := "http://" + logField(stderr.String(), "metrics listening", "metrics_listen") + "/readyz"

	waitReadyz(t, readyz, 503, "not ready: no upstream key for workspace dev-workspace", &stderr)

	k, err := e.sb.AddKey("key-00", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	store, err := file.New(filepath.Join(e.dir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: "team/key-00"},
		IfVersion: secrets.NoVersion, Record: secrets.Record{APIKey: k.Plaintext, KeyID: k.ID, KeyName: k.Name, CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	waitReadyz(t, readyz, 200, "ok", &stderr)

	pg.AllowConnections(t, false)
	t.Cleanup(func() { pg.AllowConnections(t, true) }) // so the database can be dropped
	pg.TerminateSessions(t)
	waitReadyz(t, readyz, 503, "not ready: journal unreachable", &stderr)
	// Not one failed ping after a lost connection: it stays not ready
	// while PostgreSQL refuses connections.
	if code, body := httpGet(t, readyz); code != 503 || strings.TrimSpace(body) != "not ready: journal unreachable" {
		t.Fatalf("/readyz while PostgreSQL refuses connections: %d %q", code, body)
	}
	pg.AllowConnections(t, true)
	waitReadyz(t, readyz, 200, "ok", &stderr)

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if waitErr != nil {
			t.Fatalf("mrbacd gateway after SIGTERM: %v; stderr:\n%s", waitErr, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("mrbacd gateway did not stop on SIGTERM")
	}
	if strings.Contains(stdout.String()+stderr.String(), k.Plaintext) || strings.Contains(stderr.String(), pg.DSN) {
		t.Fatal("a secret appears in the gateway's output")
	}
}

// TestRunNoGateway: `mrbacd run --no-gateway` with gateway.listen set does
// not start the gateway: with the gateway's port held by another listener
// it runs and is ready, where without the flag it cannot start.
func TestRunNoGateway(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	e := newEnv(t, startSandbox(t))
	e.writeConfig(cfgOpts{extra: gatewayClients(held.Addr().String())})

	// Without the flag, the daemon starts its gateway: the port is taken.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", "--config", e.cfgPath)
	cmd.Env = append(os.Environ(), "MISTRAL_ADMIN_KEY="+adminKey)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "gateway") || !strings.Contains(string(out), "address already in use") {
		t.Fatalf("mrbacd run with gateway.listen taken: err %v, want a failure to bind the gateway; output:\n%s", err, out)
	}

	e.runArgs = []string{"--no-gateway"}
	p := e.start()
	readyz := "http://" + p.metricsAddr(t) + "/readyz"
	waitReadyz(t, readyz, 200, "ok", p.stderr)
	if got := logField(p.stderr.String(), "gateway not started (--no-gateway)", "gateway_listen"); got != held.Addr().String() {
		t.Errorf("no log line saying the gateway at %s is not started:\n%s", held.Addr(), p.stderr.String())
	}
	if strings.Contains(p.stderr.String(), `"msg":"gateway listening"`) {
		t.Errorf("the gateway started despite --no-gateway:\n%s", p.stderr.String())
	}
	if code, _ := p.stop(t, syscall.SIGTERM, 6*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}
