package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/journal/postgres"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
)

// testEnv is a real sandbox, a file store holding the workspace's key, a
// journal and a gateway in front, all on 127.0.0.1.
type testEnv struct {
	t      testing.TB
	sb     *sandbox.Server
	sbURL  string
	admin  *mistral.Client
	store  *file.Store
	target secrets.Target
	db     *journal.DB
	dbPath string
	pg     *testenv.PostgresDB // when set, the journal is there (withPostgres)
	opts   Options
	gw     *Gateway
	url    string
	logs   *testenv.LogBuffer
	reg    *prometheus.Registry
	tokens map[string]string // client name → bearer token
	post   []func(*Options)

	mu      sync.Mutex
	keyID   string
	version secrets.Version
	secrets []string // every plaintext to look for in logs
}

const testWorkspace = "dev-workspace"

// testRoles are the roles every env has; each gets a client of its name.
var testRoles = map[string]Role{
	"analyst":   {Models: []string{"mistral-small-latest", "mistral-embed"}, MaxTokensPerRequest: 50},
	"developer": {Models: []string{"codestral-*", "mistral-small-latest", "mistral-embed"}, MaxTokensPerRequest: 200},
	"budget":    {Models: []string{"mistral-small-latest"}, MaxTokensPerRequest: 100, DailyTokens: 1000},
	"limited":   {Models: []string{"*"}, RPM: 3},
	"spender":   {Models: []string{"mistral-large-latest"}, MaxTokensPerRequest: 1000, HourlyUSD: 0.002},
	"unbounded": {Models: []string{"*"}},
}

type envOption func(*testEnv)

func withRoles(r map[string]Role) envOption { return func(e *testEnv) { e.opts.Roles = r } }

func withHandler(wrap func(http.Handler) http.Handler) envOption {
	return func(e *testEnv) { e.sbURL = startServer(e.t, wrap(e.sb)) }
}

// withWorkspace adds a workspace with limits lim (sharing the test key) and
// clients in it: client name → role name. e.do takes the client name.
func withWorkspace(ws string, lim Workspace, clients map[string]string) envOption {
	return func(e *testEnv) {
		e.post = append(e.post, func(o *Options) {
			if o.Workspaces == nil {
				o.Workspaces = map[string]Workspace{}
			}
			o.Workspaces[ws] = lim
			o.Upstreams[ws] = o.Upstreams[testWorkspace]
			for name, roleName := range clients {
				tok := randomToken("gw-" + name + "-")
				e.tokens[name] = tok
				e.secrets = append(e.secrets, tok)
				o.Clients = append(o.Clients, Client{Name: name, Role: roleName, Workspace: ws, TokenSHA256: HashToken(tok)})
			}
		})
	}
}

// opsWorkspace restricts models: ops-dev (role developer) and ops-all (role
// unbounded) are its clients.
func withOpsWorkspace() envOption {
	return withWorkspace("ops-workspace", Workspace{Models: []string{"mistral-small-*", "mistral-large-latest", "mistral-embed"}},
		map[string]string{"ops-dev": "developer", "ops-all": "unbounded"})
}

// withOptions changes the gateway's options after the defaults are set.
func withOptions(f func(*Options)) envOption {
	return func(e *testEnv) { e.post = append(e.post, f) }
}

func startServer(t testing.TB, h http.Handler) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

func randomToken(prefix string) string {
	b := make([]byte, 16)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func newEnv(t testing.TB, opts ...envOption) *testEnv {
	t.Helper()
	ctx := context.Background()
	e := &testEnv{t: t, logs: &testenv.LogBuffer{}, reg: prometheus.NewRegistry(), tokens: map[string]string{}}
	e.sb = sandbox.New(sandbox.Options{AdminKey: randomToken("sk-admin-")})
	e.secrets = append(e.secrets, e.sb.AdminKey())
	e.opts.Roles = testRoles
	for _, o := range opts {
		o(e)
	}
	if e.sbURL == "" {
		// Every answer the gateway relays is checked against the spec;
		// requests are not (attack tests send bad ones on purpose).
		e.sbURL = sandboxtest.Serve(t, e.sb, false).URL
	}
	var err error
	e.admin, err = mistral.New(mistral.Options{BaseURL: e.sbURL, AdminKey: mistral.Secret(e.sb.AdminKey())})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if e.store, err = file.New(filepath.Join(dir, "secrets")); err != nil {
		t.Fatal(err)
	}
	e.target = secrets.Target{Path: "mistral/dev-team"}
	k, err := e.sb.AddKey("dev-team-key", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, k.Plaintext)
	if e.version, err = e.store.Write(ctx, secrets.WriteRequest{Target: e.target, IfVersion: secrets.NoVersion,
		Record: secrets.Record{APIKey: k.Plaintext, KeyID: k.ID, KeyName: k.Name, CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	e.keyID = k.ID
	e.dbPath = filepath.Join(dir, "state.db")
	if e.pg != nil {
		e.dbPath = ""
		e.db, err = postgres.Open(ctx, e.pg.DSN)
	} else {
		e.db, err = journal.Open(ctx, e.dbPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.db.Close() })

	e.opts.UpstreamURL = e.sbURL
	e.opts.Upstreams = map[string]Upstream{testWorkspace: {KeyName: "dev-team-key", Store: e.store, Target: e.target}}
	e.opts.Usage = e.db
	e.opts.Registerer = e.reg
	e.opts.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.opts.Price = func(m string) (Price, bool) {
		p, ok := (*config.Config)(nil).Price(m)
		return Price{p.InputPerM, p.OutputPerM}, ok
	}
	e.opts.MaxBodyBytes = 64 << 10
	e.opts.KeyPollInterval = 200 * time.Millisecond
	e.opts.FlushInterval = 100 * time.Millisecond
	for name := range e.opts.Roles {
		tok := randomToken("gw-" + name + "-")
		e.tokens[name] = tok
		e.secrets = append(e.secrets, tok)
		e.opts.Clients = append(e.opts.Clients, Client{Name: name + "-app", Role: name, Workspace: testWorkspace, TokenSHA256: HashToken(tok)})
	}
	for _, f := range e.post {
		f(&e.opts)
	}
	e.start()
	t.Cleanup(e.checkNoSecrets)
	return e
}

// start builds the gateway from e.opts and serves it.
func (e *testEnv) start() {
	e.t.Helper()
	gw, err := New(context.Background(), e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.gw = gw
	// Served as in production (Serve: its server timeouts included).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln) }()
	e.url = "http://" + ln.Addr().String()
	e.t.Cleanup(func() {
		cancel()
		<-done
		gw.Close(context.Background())
	})
}

// restart stops the gateway (flushing usage) and starts a new one on the
// same journal, as a process restart would.
func (e *testEnv) restart() {
	e.t.Helper()
	if err := e.gw.Close(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.opts.Registerer = prometheus.NewRegistry()
	e.start()
}

// checkNoSecrets scans the captured logs and the metrics for any client
// token, upstream key or the admin key.
func (e *testEnv) checkNoSecrets() {
	var metrics bytes.Buffer
	if mfs, err := e.reg.Gather(); err == nil {
		for _, mf := range mfs {
			metrics.WriteString(mf.String())
		}
	}
	logs := e.logs.String()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.secrets {
		if strings.Contains(logs, s) {
			e.t.Errorf("a secret (%s...) appears in the gateway's logs", s[:6])
		}
		if strings.Contains(metrics.String(), s) {
			e.t.Errorf("a secret (%s...) appears in the metrics", s[:6])
		}
	}
}

// rotate replaces the workspace key the way the rotation engine does:
// create a new key on the platform, publish it with compare-and-set, wait,
// delete the old key.
func (e *testEnv) rotate(ctx context.Context, wait time.Duration) error {
	ws := e.sb.Workspaces()[0]
	user := e.sb.Users()[0]
	k, err := e.admin.CreateKey(ctx, mistral.CreateKeyRequest{Name: randomToken("dev-team-key-"), WorkspaceUUID: ws.UUID, UserID: user.ID})
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.secrets = append(e.secrets, k.Key.Reveal())
	oldID, oldVersion := e.keyID, e.version
	e.mu.Unlock()
	v, err := e.store.Write(ctx, secrets.WriteRequest{Target: e.target, IfVersion: oldVersion,
		Record: secrets.Record{APIKey: k.Key.Reveal(), KeyID: k.KeyID, KeyName: k.Name, CreatedAt: time.Now()}})
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.keyID, e.version = k.KeyID, v
	e.mu.Unlock()
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		return ctx.Err()
	}
	return e.admin.DeleteKey(ctx, oldID)
}

// client returns a principal by role name.
func (e *testEnv) principal(roleName string) *principal {
	for _, p := range e.gw.snap.Load().clients {
		if p.role.name == roleName {
			return p
		}
	}
	e.t.Fatalf("no client of role %s", roleName)
	return nil
}

var testHTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxIdleConns: 1024}, Timeout: 30 * time.Second}

// do sends a request as the client of roleName ("" for no token).
func (e *testEnv) do(ctx context.Context, roleName, method, path, body string) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, rd)
	if err != nil {
		return nil, nil, err
	}
	if roleName != "" {
		tok, ok := e.tokens[roleName]
		if !ok {
			tok = roleName // a raw token
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := testHTTP.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func chatBody(model string, maxTokens int, stream bool, content string) string {
	m := map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": content}}}
	if maxTokens >= 0 {
		m["max_tokens"] = maxTokens
	}
	if stream {
		m["stream"] = true
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// metricValue reads one counter of the env's registry.
func (e *testEnv) counter(c *prometheus.CounterVec, labels ...string) float64 {
	var m dto.Metric
	if err := c.WithLabelValues(labels...).Write(&m); err != nil {
		e.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
