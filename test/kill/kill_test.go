package kill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/mistral/contract"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/awssm"
	"github.com/mrbacd/mrbacd/secrets/file"
	"github.com/mrbacd/mrbacd/secrets/vault"
)

// bin is the mrbacd binary built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mrbacd-kill-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "kill test:", err)
		os.Exit(1)
	}
	if bin, err = testenv.BuildMrbacd(dir); err != nil {
		fmt.Fprintln(os.Stderr, "kill test:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// killTarget is the number of kills over all stores: MRBACD_KILLS or 54.
func killTarget(t *testing.T) int {
	n := 54
	if s := os.Getenv("MRBACD_KILLS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 3 {
			t.Fatalf("MRBACD_KILLS=%q: want a number >= 3", s)
		}
		n = v
	}
	return n
}

// TestKill SIGKILLs `mrbacd rotate --force` at random moments against each
// store and checks I1–I4.
func TestKill(t *testing.T) {
	total := killTarget(t)
	backends := []string{"file", "vault", "aws"}
	counts := map[string]*stats{}
	for i, b := range backends {
		want := total / len(backends)
		if i < total%len(backends) {
			want++
		}
		st := &stats{}
		counts[b] = st
		t.Run(b, func(t *testing.T) { runKills(t, b, want, st) })
	}
	sum, wanted := 0, 0
	var parts []string
	for i, b := range backends {
		c := counts[b]
		if c.runs == 0 {
			continue // filtered out with -run
		}
		wanted += total / len(backends)
		if i < total%len(backends) {
			wanted++
		}
		sum += c.kills
		parts = append(parts, fmt.Sprintf("%s: %d kills (%d inside an injected latency), %d rounds, %d runs, %d store reads checked (%d failed), recoveries: %s",
			b, c.kills, c.latencyKills, c.rounds, c.runs, c.reads, c.readErrs, c.recoveries))
	}
	msg := fmt.Sprintf("kill test: %d kills in total; %s", sum, strings.Join(parts, "; "))
	t.Log(msg)
	fmt.Println(msg)
	if !t.Failed() && sum < wanted {
		t.Fatalf("only %d kills, want %d", sum, wanted)
	}
}

// stats counts what happened against one store.
type stats struct {
	kills, latencyKills, rounds, runs, reads, readErrs int
	recoveries                                         string
}

// recoveryLogs are the engine's log messages that show a restart resumed a
// killed rotation (counted to show the kills exercised recovery).
var recoveryLogs = map[string]string{
	"recreated":       "recovered: discarded any unpublished new key",
	"found-published": "recovered: the store already holds the new key",
	"parked":          "rotation parked for propagation",
	"lease-takeover":  "taking over the rotation lease of a dead process",
	"aborts":          "rotation aborting",
	"strays":          "deleted a stray copy of the new key",
}

// world is one store's test setup.
type world struct {
	t       *testing.T
	dir     string
	sb      *sandbox.Server
	store   secrets.Store
	cfgPath string
	env     []string
	keys    []managedKey
	secrets []string // credentials that must not leak either
	output  bytes.Buffer

	delMu   sync.Mutex
	deletes []deleteSeen
}

type managedKey struct {
	name   string // <backend>-a, -b (adopted) or -c (bootstrapped)
	target secrets.Target
}

func newWorld(t *testing.T, backend string) *world {
	w := &world{t: t, dir: t.TempDir()}
	ctx := context.Background()
	w.sb = sandbox.New(sandbox.Options{})
	srv := httptest.NewServer(w.interceptDeletes(contract.Install(t, w.sb, true)))
	t.Cleanup(srv.Close)
	adminKeyFile := filepath.Join(w.dir, "admin-key")
	must(t, os.WriteFile(adminKeyFile, []byte(w.sb.AdminKey()), 0o600))
	w.secrets = append(w.secrets, w.sb.AdminKey())
	fileDir := filepath.Join(w.dir, "secrets")
	storesYAML := fmt.Sprintf("  file: {dir: %q}\n", fileDir)
	var storeLines [3]string
	switch backend {
	case "file":
		s, err := file.New(fileDir)
		must(t, err)
		w.store = s
		for i, n := range []string{"a", "b", "c"} {
			w.keys = append(w.keys, managedKey{name: "file-" + n, target: secrets.Target{Path: "kill/file-" + n}})
			storeLines[i] = fmt.Sprintf("{backend: file, path: kill/file-%s", n)
		}
	case "vault":
		v := testenv.Vault(t)
		tokenFile := filepath.Join(w.dir, "vault-token")
		must(t, os.WriteFile(tokenFile, []byte(v.RootToken), 0o600))
		w.secrets = append(w.secrets, v.RootToken)
		s, err := vault.New(ctx, vault.Options{Address: v.Addr, Auth: vault.AuthOptions{Method: "token", Token: v.RootToken}})
		must(t, err)
		t.Cleanup(s.Close)
		w.store = s
		storesYAML += fmt.Sprintf("  vault: {address: %q, mount: secret, auth: {method: token, token_file: %q}}\n", v.Addr, tokenFile)
		for i, n := range []string{"a", "b", "c"} {
			w.keys = append(w.keys, managedKey{name: "vault-" + n, target: secrets.Target{Path: "kill/vault-" + n}})
			storeLines[i] = fmt.Sprintf("{backend: vault, path: kill/vault-%s", n)
		}
	case "aws":
		m := testenv.Moto(t)
		s, err := awssm.New(ctx, awssm.Options{Region: m.Region, Endpoint: m.Endpoint,
			Credentials: credentials.NewStaticCredentialsProvider(m.AccessKeyID, m.SecretAccessKey, "")})
		must(t, err)
		w.store = s
		w.env = []string{"AWS_ACCESS_KEY_ID=" + m.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + m.SecretAccessKey,
			"AWS_REGION=" + m.Region, "AWS_EC2_METADATA_DISABLED=true"}
		storesYAML += fmt.Sprintf("  aws: {region: %s, endpoint: %q}\n", m.Region, m.Endpoint)
		for i, n := range []string{"a", "b", "c"} {
			w.keys = append(w.keys, managedKey{name: "aws-" + n, target: secrets.Target{Path: "kill/aws-" + n}})
			storeLines[i] = fmt.Sprintf("{backend: aws, secret_id: kill/aws-%s", n)
		}
	}
	// The second key of every store uses the raw value format: the bare key
	// as the value and the rest as metadata (file sidecar, Vault custom
	// metadata, AWS tags), which Vault and AWS write in separate requests
	// that a kill can separate (see their package docs); the other keys use
	// JSON.
	w.keys[1].target.Format = secrets.FormatRaw
	storeLines[1] += ", value_format: raw"
	var keysYAML strings.Builder
	for i, k := range w.keys {
		fmt.Fprintf(&keysYAML, "  - name: %s\n    workspace: %q\n    owner_user_id: %s\n    store: %s}\n    rotate_every: 90d\n    propagation_wait: 200ms\n",
			k.name, sandbox.DefaultWorkspaceName, w.sb.Users()[0].ID, storeLines[i])
	}
	cfg := fmt.Sprintf(`mistral:
  base_url: %q
  admin_key_file: %q
  max_retries: 3
state: {path: %q}
log: {format: json, level: debug}
secrets:
%sworkspaces:
  - {name: %q, team: kill, models: ["*"], rpm: 600, monthly_budget_usd: 10}
keys:
%sjobs:
  rotate: {concurrency: 2, verify_timeout: 10s}
`, srv.URL, adminKeyFile, filepath.Join(w.dir, "state", "state.db"), storesYAML, sandbox.DefaultWorkspaceName, keysYAML.String())
	w.cfgPath = filepath.Join(w.dir, "mrbacd.yaml")
	must(t, os.WriteFile(w.cfgPath, []byte(cfg), 0o600))
	if _, err := config.Load(w.cfgPath); err != nil {
		t.Fatalf("the kill test's config is invalid:\n%v\n%s", err, cfg)
	}
	// Keys a and b start with a key mrbacd did not create (adopted); key c
	// has no record (bootstrap).
	for _, k := range w.keys[:2] {
		pk, err := w.sb.AddKey("legacy-"+k.name, "", nil)
		must(t, err)
		_, err = w.store.Write(ctx, secrets.WriteRequest{Target: k.target,
			Record: secrets.Record{APIKey: pk.Plaintext, KeyID: pk.ID, KeyName: pk.Name, CreatedAt: time.Now().Add(-time.Hour).UTC()}})
		must(t, err)
	}
	return w
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// latencyRoutes are the platform calls of a rotation; a kill lands inside
// one of them while the sandbox delays it.
var latencyRoutes = []string{
	"POST /v1/admin/api-keys",
	"GET /v1/admin/api-keys",
	"GET /v1/models",
	"DELETE /v1/admin/api-keys/{key_id}",
}

func runKills(t *testing.T, backend string, want int, st *stats) {
	w := newWorld(t, backend)
	ch := startChecker(w)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	typical := 800 * time.Millisecond // a whole run's duration, learned as we go
	deadline := time.Now().Add(4 * time.Minute)
	for st.kills < want {
		st.rounds++
		// One round: rotate --force until a run exits 0 (all keys rotated).
		for {
			if time.Now().After(deadline) {
				t.Fatalf("%s: out of time after %d kills (want %d)", backend, st.kills, want)
			}
			st.runs++
			mode := rng.IntN(3)
			if st.kills >= want {
				mode = -1 // no more kills: let the round finish
			}
			route := latencyRoutes[rng.IntN(len(latencyRoutes))]
			var base int64
			if mode == 0 {
				base = w.sb.Stats()[route]
				// Shorter than the propagation wait: a request of a killed
				// process that lands late lands before the rotation's final
				// look for stray keys (see package rotate).
				w.sb.InjectFault(sandbox.Fault{Route: route, Latency: 150 * time.Millisecond, Times: 1})
			}
			c := w.start()
			start := time.Now()
			killed := false
			switch mode {
			case 0: // inside the injected latency of one platform call
				reached, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				testenv.Until(reached, func() bool { return c.exited() || w.sb.Stats()[route] > base })
				cancel()
				if !c.exited() && w.sb.Stats()[route] > base {
					// Kill at a random moment of the call's latency, unless
					// the process ends first.
					select {
					case <-c.done:
					case <-time.After(time.Duration(rng.Int64N(int64(140 * time.Millisecond)))):
						killed = c.kill()
						if killed {
							st.latencyKills++
						}
					}
				}
			case 1, 2: // at a random moment of a run
				d := time.Duration(rng.Int64N(int64(typical)))
				select {
				case <-c.done:
				case <-time.After(d):
					killed = c.kill()
				}
			}
			code := c.wait()
			w.sb.ClearFaults()
			if killed {
				st.kills++
				continue
			}
			if code == 0 {
				typical = (typical*3 + time.Since(start)) / 4
				break
			}
			t.Fatalf("%s: mrbacd rotate exited %d (not killed); output:\n%s", backend, code, tail(w.output.String(), 6000))
		}
	}
	ch.stop()
	st.reads, st.readErrs = ch.reads, ch.readErrs
	out := w.output.String()
	var rec []string
	for _, name := range []string{"recreated", "found-published", "parked", "lease-takeover", "aborts", "strays"} {
		rec = append(rec, fmt.Sprintf("%s=%d", name, strings.Count(out, recoveryLogs[name])))
	}
	st.recoveries = strings.Join(rec, " ")
	for _, v := range ch.violations {
		t.Error(v)
	}
	w.checkSettled(ch)
	w.checkRevokeLast(ch)
	w.checkNoLeak()
}

// child is one mrbacd process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	code int
}

func (w *world) start() *child {
	cmd := exec.Command(bin, "rotate", "--force", "--config", w.cfgPath)
	cmd.Env = append(append(os.Environ(), w.env...), "MRBACD_LOG_LEVEL=debug")
	cmd.Stdout, cmd.Stderr = &w.output, &w.output
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		c.code = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			c.code = ee.ExitCode()
		} else if err != nil {
			c.code = -2
		}
		close(c.done)
	}()
	return c
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// kill SIGKILLs the child; false if it had already exited.
func (c *child) kill() bool {
	if c.exited() {
		return false
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return false
	}
	<-c.done
	return c.code == -1 // killed by a signal
}

func (c *child) wait() int {
	<-c.done
	return c.code
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// checker watches the store continuously, independently of the engine.
type checker struct {
	w          *world
	quit, done chan struct{}

	mu         sync.Mutex
	reads      int
	readErrs   int
	violations []string
	// history is the sequence of key ids each target held.
	history map[string][]string
	idOf    map[string]string // plaintext -> platform key id
}

func startChecker(w *world) *checker {
	c := &checker{w: w, quit: make(chan struct{}), done: make(chan struct{}),
		history: map[string][]string{}, idOf: map[string]string{}}
	go c.loop()
	return c
}

func (c *checker) loop() {
	defer close(c.done)
	ctx := context.Background()
	for {
		select {
		case <-c.quit:
			return
		default:
		}
		for _, k := range c.w.keys {
			v, err := c.w.store.Read(ctx, k.target)
			if errors.Is(err, secrets.ErrNotFound) && len(c.history[k.name]) == 0 {
				continue // key c before its bootstrap
			}
			if err != nil {
				c.mu.Lock()
				c.readErrs++
				// A store hiccup is not a served key, but a record whose
				// metadata does not match its value is a torn write.
				if strings.Contains(err.Error(), "not written yet") {
					c.violations = append(c.violations, fmt.Sprintf("%s: torn record: %v", k.name, err))
				}
				c.mu.Unlock()
				continue
			}
			accepted := c.w.sb.Accepts(v.APIKey)
			c.mu.Lock()
			c.reads++
			// The record's key id must be the id of the key it holds: a raw
			// record with another version's metadata is a torn write.
			if id := c.keyIDOf(v.APIKey); id != "" && id != v.KeyID {
				c.violations = append(c.violations, fmt.Sprintf("%s: torn record: version %s holds key %s with the metadata of key %q",
					k.name, v.Version, id, v.KeyID))
			}
			h := c.history[k.name]
			if len(h) == 0 || h[len(h)-1] != v.KeyID {
				c.history[k.name] = append(h, v.KeyID)
			}
			c.mu.Unlock()
			if accepted {
				continue
			}
			// Rejected: a violation if the store still serves that very
			// version (so it served it at the moment of the check).
			v2, err := c.w.store.Read(ctx, k.target)
			if err == nil && v2.Version == v.Version && v2.KeyID == v.KeyID {
				c.mu.Lock()
				c.violations = append(c.violations, fmt.Sprintf("I1: %s: the store served key %s (version %s), which the platform rejected",
					k.name, v.KeyID, v.Version))
				c.mu.Unlock()
			}
		}
	}
}

// keyIDOf returns the platform id of the key with plaintext p ("" if the
// platform never issued it). Called with c.mu held.
func (c *checker) keyIDOf(p string) string {
	if id, ok := c.idOf[p]; ok {
		return id
	}
	for _, k := range c.w.sb.Keys() {
		c.idOf[k.Plaintext] = k.ID
	}
	return c.idOf[p]
}

func (c *checker) stop() {
	close(c.quit)
	<-c.done
}

var mrbacdName = regexp.MustCompile(`-\d{8}-[0-9a-f]{8}$`)

// checkSettled asserts I2: one live mrbacd key per managed key, the store's.
func (w *world) checkSettled(ch *checker) {
	t := w.t
	for _, k := range w.keys {
		v, err := w.store.Read(context.Background(), k.target)
		if err != nil {
			t.Fatalf("I2: %s: read store: %v", k.name, err)
		}
		var live []string
		for _, pk := range w.sb.Keys() {
			if !pk.Deleted && strings.HasPrefix(pk.Name, k.name+"-") && mrbacdName.MatchString(pk.Name) {
				live = append(live, pk.ID)
			}
		}
		if len(live) != 1 || live[0] != v.KeyID {
			t.Errorf("I2: %s: live mrbacd keys %v, want exactly the store's %s; history %v\n%s", k.name, live, v.KeyID,
				ch.history[k.name], w.linesAbout(live))
		}
		if !w.sb.Accepts(v.APIKey) {
			t.Errorf("I1: %s: the settled store key %s is rejected", k.name, v.KeyID)
		}
		for _, pk := range w.sb.Keys() {
			if pk.Name == "legacy-"+k.name && !pk.Deleted {
				t.Errorf("I2: %s: the adopted legacy key %s is still alive", k.name, pk.ID)
			}
		}
		if n := len(ch.history[k.name]); n < 2 && !strings.HasSuffix(k.name, "-c") {
			t.Errorf("%s: the checker saw only %d keys in the store", k.name, n)
		}
	}
}

// deleteSeen is what the store held when a DELETE of a key reached the
// platform (taken synchronously, before the platform acted on it).
type deleteSeen struct {
	keyID   string // the key being deleted
	managed string // the managed key it belongs to
	current string // the key id the store held at that moment
	uses    int    // use events of that current key so far
	readErr error
}

// interceptDeletes wraps the platform's handler: every DELETE of a key first
// snapshots the store of the managed key it belongs to.
func (w *world) interceptDeletes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if id, ok := strings.CutPrefix(r.URL.Path, "/v1/admin/api-keys/"); ok && r.Method == http.MethodDelete {
			w.snapshotDelete(id)
		}
		next.ServeHTTP(rw, r)
	})
}

func (w *world) snapshotDelete(id string) {
	pk, ok := w.sb.Key(id)
	if !ok {
		return
	}
	var mk *managedKey
	for i := range w.keys {
		k := &w.keys[i]
		if pk.Name == "legacy-"+k.name || (strings.HasPrefix(pk.Name, k.name+"-") && mrbacdName.MatchString(pk.Name)) {
			mk = k
		}
	}
	if mk == nil {
		return
	}
	d := deleteSeen{keyID: id, managed: mk.name}
	v, err := w.store.Read(context.Background(), mk.target)
	if err != nil {
		d.readErr = err
	} else {
		d.current = v.KeyID
		for _, ev := range w.sb.Events() {
			if ev.Kind == sandbox.EventUse && ev.KeyID == v.KeyID {
				d.uses++
			}
		}
	}
	w.delMu.Lock()
	w.deletes = append(w.deletes, d)
	w.delMu.Unlock()
}

// checkRevokeLast asserts I3 for every key the store served that the
// platform deleted: at the moment of the delete the store held another key
// (its successor was published) and that key had been used at least twice
// (verify before publish, re-verify after it: a successful verify stops at
// its first use, and the checker never calls the platform).
func (w *world) checkRevokeLast(ch *checker) {
	t := w.t
	deleted := map[string]bool{}
	for _, ev := range w.sb.Events() {
		if ev.Kind == sandbox.EventDelete {
			deleted[ev.KeyID] = true
		}
	}
	served := map[string]bool{}
	for _, h := range ch.history {
		for _, id := range h {
			served[id] = true
		}
	}
	w.delMu.Lock()
	defer w.delMu.Unlock()
	checked := 0
	for _, d := range w.deletes {
		if !deleted[d.keyID] {
			continue // the request died with its process before the platform acted
		}
		if d.readErr == nil && d.current == d.keyID {
			t.Errorf("I3: %s: key %s deleted while the store still served it\n%s", d.managed, d.keyID, w.linesAbout([]string{d.keyID}))
			continue
		}
		if !served[d.keyID] {
			continue // an unpublished key of an aborted or recovered attempt
		}
		checked++
		if d.readErr != nil {
			t.Errorf("I3: %s: could not read the store when key %s was deleted: %v", d.managed, d.keyID, d.readErr)
			continue
		}
		if d.uses < 2 {
			t.Errorf("I3: %s: key %s deleted when its successor %s had been used %d time(s): not re-verified after publish\n%s",
				d.managed, d.keyID, d.current, d.uses, w.linesAbout([]string{d.keyID, d.current}))
		}
	}
	if checked == 0 {
		t.Error("I3: no revocation of a served key was observed")
	}
}

// checkNoLeak asserts I4: no key material or credential in the journal
// files or the children's output.
func (w *world) checkNoLeak() {
	t := w.t
	var journal []byte
	files, _ := filepath.Glob(filepath.Join(w.dir, "state", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		must(t, err)
		journal = append(journal, b...)
	}
	if len(journal) == 0 {
		t.Fatal("I4: no journal files to scan")
	}
	out := w.output.Bytes()
	if len(out) == 0 {
		t.Fatal("I4: no child output to scan")
	}
	material := append([]string(nil), w.secrets...)
	for _, k := range w.sb.Keys() {
		material = append(material, k.Plaintext)
	}
	for _, m := range material {
		if bytes.Contains(journal, []byte(m)) {
			t.Errorf("I4: key material found in the journal")
		}
		if bytes.Contains(out, []byte(m)) {
			t.Errorf("I4: key material found in mrbacd's stdout/stderr")
		}
	}
}

// linesAbout returns the children's log lines that mention one of ids, and
// the lines of the rotations that created them, for a failure message.
func (w *world) linesAbout(ids []string) string {
	var b strings.Builder
	for _, pk := range w.sb.Keys() {
		for _, id := range ids {
			if pk.ID != id {
				continue
			}
			fmt.Fprintf(&b, "key %s name %s created %s\n", pk.ID, pk.Name, pk.CreatedAt.Format(time.RFC3339Nano))
			short := pk.Name[len(pk.Name)-8:]
			for _, line := range strings.Split(w.output.String(), "\n") {
				if strings.Contains(line, id) || strings.Contains(line, short) {
					b.WriteString(tail(line, 600))
					b.WriteByte('\n')
				}
			}
		}
	}
	return tail(b.String(), 20000)
}
