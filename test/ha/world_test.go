package ha

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/ctlsock"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
	"github.com/mrbacd/mrbacd/test/invariants"
)

// bin is the mrbacd binary built once by TestMain.
var bin string

func TestMain(m *testing.M) { testenv.MainWithMrbacd(m, &bin) }

// lease is the daemons' ha.lease: the shortest allowed.
const lease = time.Second

// dsnEnv names the variable the daemons read the journal's DSN from.
const dsnEnv = "MRBACD_HA_TEST_DSN"

// world is a sandbox platform, a file store, a PostgreSQL journal and the
// daemons sharing them.
type world struct {
	*invariants.World
	t      *testing.T
	dir    string
	pg     *testenv.PostgresDB
	output testenv.LogBuffer // every daemon's stdout and stderr
	nodes  []*node
}

// node is one daemon's config; proc is its running process.
type node struct {
	name    string
	cfgPath string
	socket  string
	client  *ctlsock.Client
	proc    *child
	out     *testenv.LogBuffer // this node's output, all its processes
}

func newWorld(t *testing.T, propagation time.Duration) *world {
	dir, err := os.MkdirTemp("", "mrha") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w := &world{t: t, dir: dir, pg: testenv.Postgres(t), World: &invariants.World{}}
	w.Sandbox = sandbox.New(sandbox.Options{MaxEvents: 1 << 20})
	w.Explain = func(ids []string) string {
		var b strings.Builder
		for _, line := range strings.Split(w.output.String(), "\n") {
			for _, id := range ids {
				if id != "" && strings.Contains(line, id) {
					b.WriteString(tail(line, 600) + "\n")
					break
				}
			}
		}
		return tail(b.String(), 20000)
	}
	srv := httptest.NewServer(w.InterceptDeletes(w.Sandbox))
	t.Cleanup(srv.Close)
	adminKeyFile := filepath.Join(dir, "admin-key")
	must(t, os.WriteFile(adminKeyFile, []byte(w.Sandbox.AdminKey()), 0o600))
	w.Store, err = file.New(filepath.Join(dir, "secrets"))
	must(t, err)
	var keysYAML strings.Builder
	for _, n := range []string{"a", "b", "c"} {
		k := invariants.Key{Name: "ha-" + n, Target: secrets.Target{Path: "ha/ha-" + n}}
		w.Keys = append(w.Keys, k)
		fmt.Fprintf(&keysYAML, "  - name: %s\n    workspace: %q\n    owner_user_id: %s\n    store: {backend: file, path: %s}\n    rotate_every: 90d\n    propagation_wait: %s\n",
			k.Name, sandbox.DefaultWorkspaceName, w.Sandbox.Users()[0].ID, k.Target.Path, propagation)
	}
	// Keys a and b start with a key mrbacd did not create (adopted); c has
	// no record (bootstrapped).
	for _, k := range w.Keys[:2] {
		pk, err := w.Sandbox.AddKey("legacy-"+k.Name, "", nil)
		must(t, err)
		_, err = w.Store.Write(context.Background(), secrets.WriteRequest{Target: k.Target,
			Record: secrets.Record{APIKey: pk.Plaintext, KeyID: pk.ID, KeyName: pk.Name, CreatedAt: time.Now().Add(-time.Hour).UTC()}})
		must(t, err)
	}
	for _, name := range []string{"a", "b"} {
		n := &node{name: name, cfgPath: filepath.Join(dir, name+".yaml"), socket: filepath.Join(dir, name+".sock"), out: &testenv.LogBuffer{}}
		cfg := fmt.Sprintf(`mistral:
  base_url: %q
  admin_key_file: %q
  max_retries: 3
state: {postgres: {dsn_env: %s}}
admin: {socket: %q}
log: {format: json, level: debug}
shutdown_timeout: 5s
ha: {lease: %s}
secrets:
  file: {dir: %q}
workspaces:
  - {name: %q, team: ha, models: ["*"], rpm: 6000, monthly_budget_usd: 10}
keys:
%sjobs:
  rotate: {concurrency: 2, verify_timeout: 10s}
  audit: {disabled: true}
  budget: {disabled: true}
`, srv.URL, adminKeyFile, dsnEnv, n.socket, lease, filepath.Join(dir, "secrets"), sandbox.DefaultWorkspaceName, keysYAML.String())
		must(t, os.WriteFile(n.cfgPath, []byte(cfg), 0o600))
		if _, err := config.Load(n.cfgPath); err != nil {
			t.Fatalf("the ha test's config is invalid:\n%v\n%s", err, cfg)
		}
		n.client = ctlsock.NewClient(n.socket)
		w.nodes = append(w.nodes, n)
	}
	return w
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// child is one mrbacd process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	code int
}

// start runs `mrbacd run` for n and waits until its admin socket answers.
func (w *world) start(n *node) {
	w.t.Helper()
	cmd := exec.Command(bin, "run", "--config", n.cfgPath)
	cmd.Env = append(os.Environ(), dsnEnv+"="+w.pg.DSN, "MRBACD_LOG_LEVEL=debug")
	out := ioMulti{&w.output, n.out}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(w.t, cmd.Start())
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			c.code = ee.ExitCode()
		case err != nil:
			c.code = -2
		}
		close(c.done)
	}()
	n.proc = c
	w.t.Cleanup(func() { c.signal(syscall.SIGKILL); <-c.done })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var err error
	if !testenv.Until(ctx, func() bool {
		if c.exited() {
			return true
		}
		_, err = n.client.Status(context.Background())
		return err == nil
	}) || c.exited() {
		w.t.Fatalf("daemon %s did not come up (exit %d, %v):\n%s", n.name, c.code, err, tail(n.out.String(), 6000))
	}
}

type ioMulti []interface{ Write([]byte) (int, error) }

func (m ioMulti) Write(p []byte) (int, error) {
	for _, w := range m {
		w.Write(p)
	}
	return len(p), nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *child) signal(sig syscall.Signal) {
	if !c.exited() {
		c.cmd.Process.Signal(sig)
	}
}

// kill SIGKILLs the process and waits for it to end.
func (c *child) kill() {
	c.signal(syscall.SIGKILL)
	<-c.done
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// leader returns the node whose daemon says it leads, with every other
// live daemon naming it, waiting up to within.
func (w *world) leader(within time.Duration) *node {
	w.t.Helper()
	var l *node
	testenv.WaitFor(w.t, within, "one leader every daemon names", func() bool {
		l = nil
		var named string
		for _, n := range w.nodes {
			if n.proc == nil || n.proc.exited() {
				continue
			}
			st, err := n.client.Status(context.Background())
			if err != nil || st.LeaderInstance == "" || (named != "" && st.LeaderInstance != named) {
				return false
			}
			named = st.LeaderInstance
			if st.Leader {
				l = n
			}
		}
		return l != nil
	})
	return l
}

func (w *world) other(n *node) *node {
	for _, o := range w.nodes {
		if o != n {
			return o
		}
	}
	return nil
}

// journalConn opens the poller's own connection to the journal's database.
func (w *world) journalConn() *pgx.Conn {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, w.pg.DSN)
	must(w.t, err)
	w.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// openRequests counts the run requests queued or taken, not yet started
// or refused.
func openRequests(ctx context.Context, c *pgx.Conn) (int, error) {
	var n int
	err := c.QueryRow(ctx, `SELECT count(*) FROM run_requests WHERE status IN ('queued', 'taken')`).Scan(&n)
	return n, err
}

// inFlight counts the journal's rotations in flight.
func inFlight(ctx context.Context, c *pgx.Conn) (int, error) {
	var n int
	err := c.QueryRow(ctx, `SELECT count(*) FROM rotations WHERE status = 'in_flight'`).Scan(&n)
	return n, err
}
