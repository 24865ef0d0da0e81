package kill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
	"github.com/mrbacd/mrbacd/test/invariants"
)

// bin is the mrbacd binary built once by TestMain.
var bin string

func TestMain(m *testing.M) { testenv.MainWithMrbacd(m, &bin) }

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
	*invariants.World // keys: <backend>-a, -b (adopted) or -c (bootstrapped)
	t                 *testing.T
	dir               string
	cfgPath           string
	env               []string
	secrets           []string // credentials that must not leak either
	output            bytes.Buffer
}

func newWorld(t *testing.T, backend string) *world {
	w := &world{t: t, dir: t.TempDir(), World: &invariants.World{}}
	w.Explain = w.linesAbout
	ctx := context.Background()
	w.Sandbox = sandbox.New(sandbox.Options{})
	srv := httptest.NewServer(w.InterceptDeletes(contract.Install(t, w.Sandbox, true)))
	t.Cleanup(srv.Close)
	adminKeyFile := filepath.Join(w.dir, "admin-key")
	must(t, os.WriteFile(adminKeyFile, []byte(w.Sandbox.AdminKey()), 0o600))
	w.secrets = append(w.secrets, w.Sandbox.AdminKey())
	fileDir := filepath.Join(w.dir, "secrets")
	storesYAML := fmt.Sprintf("  file: {dir: %q}\n", fileDir)
	var storeLines [3]string
	switch backend {
	case "file":
		s, err := file.New(fileDir)
		must(t, err)
		w.Store = s
		for i, n := range []string{"a", "b", "c"} {
			w.Keys = append(w.Keys, invariants.Key{Name: "file-" + n, Target: secrets.Target{Path: "kill/file-" + n}})
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
		w.Store = s
		storesYAML += fmt.Sprintf("  vault: {address: %q, mount: secret, auth: {method: token, token_file: %q}}\n", v.Addr, tokenFile)
		for i, n := range []string{"a", "b", "c"} {
			w.Keys = append(w.Keys, invariants.Key{Name: "vault-" + n, Target: secrets.Target{Path: "kill/vault-" + n}})
			storeLines[i] = fmt.Sprintf("{backend: vault, path: kill/vault-%s", n)
		}
	case "aws":
		m := testenv.Moto(t)
		s, err := awssm.New(ctx, awssm.Options{Region: m.Region, Endpoint: m.Endpoint,
			Credentials: credentials.NewStaticCredentialsProvider(m.AccessKeyID, m.SecretAccessKey, "")})
		must(t, err)
		w.Store = s
		w.env = []string{"AWS_ACCESS_KEY_ID=" + m.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + m.SecretAccessKey,
			"AWS_REGION=" + m.Region, "AWS_EC2_METADATA_DISABLED=true"}
		storesYAML += fmt.Sprintf("  aws: {region: %s, endpoint: %q}\n", m.Region, m.Endpoint)
		for i, n := range []string{"a", "b", "c"} {
			w.Keys = append(w.Keys, invariants.Key{Name: "aws-" + n, Target: secrets.Target{Path: "kill/aws-" + n}})
			storeLines[i] = fmt.Sprintf("{backend: aws, secret_id: kill/aws-%s", n)
		}
	}
	// The second key of every store uses the raw value format: the bare key
	// as the value and the rest as metadata (file sidecar, Vault custom
	// metadata, AWS tags), which Vault and AWS write in separate requests
	// that a kill can separate (see their package docs); the other keys use
	// JSON.
	w.Keys[1].Target.Format = secrets.FormatRaw
	storeLines[1] += ", value_format: raw"
	var keysYAML strings.Builder
	for i, k := range w.Keys {
		fmt.Fprintf(&keysYAML, "  - name: %s\n    workspace: %q\n    owner_user_id: %s\n    store: %s}\n    rotate_every: 90d\n    propagation_wait: 200ms\n",
			k.Name, sandbox.DefaultWorkspaceName, w.Sandbox.Users()[0].ID, storeLines[i])
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
	for _, k := range w.Keys[:2] {
		pk, err := w.Sandbox.AddKey("legacy-"+k.Name, "", nil)
		must(t, err)
		_, err = w.Store.Write(ctx, secrets.WriteRequest{Target: k.Target,
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
	ch := w.StartChecker(nil)
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
				base = w.Sandbox.Stats()[route]
				// Shorter than the propagation wait: a request of a killed
				// process that lands late lands before the rotation's final
				// look for stray keys (see package rotate).
				w.Sandbox.InjectFault(sandbox.Fault{Route: route, Latency: 150 * time.Millisecond, Times: 1})
			}
			c := w.start()
			start := time.Now()
			killed := false
			switch mode {
			case 0: // inside the injected latency of one platform call
				reached, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				testenv.Until(reached, func() bool { return c.exited() || w.Sandbox.Stats()[route] > base })
				cancel()
				if !c.exited() && w.Sandbox.Stats()[route] > base {
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
			w.Sandbox.ClearFaults()
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
	violations := ch.Stop()
	st.reads, st.readErrs = ch.Reads()
	out := w.output.String()
	var rec []string
	for _, name := range []string{"recreated", "found-published", "parked", "lease-takeover", "aborts", "strays"} {
		rec = append(rec, fmt.Sprintf("%s=%d", name, strings.Count(out, recoveryLogs[name])))
	}
	st.recoveries = strings.Join(rec, " ")
	for _, v := range violations {
		t.Error(v)
	}
	w.CheckSettled(t, ch)
	w.CheckRevokeLast(t, ch)
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

// checkNoLeak asserts I4 over the journal's files and the children's output.
func (w *world) checkNoLeak() {
	t := w.t
	var journal []byte
	files, _ := filepath.Glob(filepath.Join(w.dir, "state", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		must(t, err)
		journal = append(journal, b...)
	}
	w.CheckNoLeak(t, journal, w.output.Bytes(), w.secrets...)
}

// linesAbout returns the children's log lines that mention one of ids, and
// the lines of the rotations that created them, for a failure message.
func (w *world) linesAbout(ids []string) string {
	var b strings.Builder
	for _, pk := range w.Sandbox.Keys() {
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
