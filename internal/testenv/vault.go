package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// VaultVersion is the Vault release the tests run; scripts/ensure-vault.sh builds it.
const VaultVersion = "v1.21.0"

// VaultServer is a running `vault server -dev` on 127.0.0.1. Its storage is in
// memory: Stop and Restart lose every secret; Seal/Unseal and Pause/Resume keep them.
type VaultServer struct {
	// Addr is the server's URL, "http://127.0.0.1:PORT".
	Addr string
	// RootToken is the dev server's root token (random per server).
	RootToken string
	// UnsealKey is the dev server's single unseal key (for Unseal after Seal).
	UnsealKey string
	// Client is an API client for Addr authenticated with RootToken.
	Client *api.Client
	// CACert is the PEM file of the CA that signed the server's certificate
	// (VaultTLS only; "" for plain HTTP).
	CACert string

	t       testing.TB
	bin     string
	port    int
	tls     bool
	certDir string
	mu      sync.Mutex
	proc    *process
}

var vaultBuildMu sync.Mutex

// VaultBinary returns the path of the Vault binary: $MRBACD_VAULT_BIN, else the
// cached build (~/.cache/mrbacd/vault-v1.21.0/vault, see $MRBACD_TOOLS_CACHE),
// else it runs scripts/ensure-vault.sh to build it (several minutes, once per
// machine). It fails the test with instructions when no binary can be had.
func VaultBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MRBACD_VAULT_BIN"); p != "" {
		if err := checkExecutable(p); err != nil {
			t.Fatalf("testenv: MRBACD_VAULT_BIN=%s is not a usable vault binary: %v\n%s", p, err, vaultHowTo)
		}
		return p
	}
	if p := cachedVaultPath(); p != "" {
		if checkExecutable(p) == nil {
			return p
		}
	}
	vaultBuildMu.Lock()
	defer vaultBuildMu.Unlock()
	if p := cachedVaultPath(); p != "" && checkExecutable(p) == nil {
		return p
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("testenv: cannot locate scripts/ensure-vault.sh: %v\n%s", err, vaultHowTo)
	}
	script := filepath.Join(root, "scripts", "ensure-vault.sh")
	t.Logf("testenv: building vault %s with %s (first time only, several minutes)", VaultVersion, script)
	cmd := exec.Command("bash", script)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("testenv: building vault failed: %v\n%s", err, vaultHowTo)
	}
	p := string(regexp.MustCompile(`\s+$`).ReplaceAll(out, nil))
	if err := checkExecutable(p); err != nil {
		t.Fatalf("testenv: ensure-vault.sh printed %q, which is not usable: %v\n%s", p, err, vaultHowTo)
	}
	return p
}

const vaultHowTo = `How to get Vault for the tests:
  run scripts/ensure-vault.sh (needs Go and the Go module proxy; ~4 GB of modules, ~8 min on 2 cores),
  or point MRBACD_VAULT_BIN at an existing vault ` + VaultVersion + ` binary.`

// cachedVaultPath is where ensure-vault.sh puts the binary.
func cachedVaultPath() string {
	cache := os.Getenv("MRBACD_TOOLS_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return ""
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "mrbacd")
	}
	return filepath.Join(cache, "vault-"+VaultVersion, "vault")
}

func checkExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// Vault starts a real Vault dev server on a free 127.0.0.1 port with a random
// root token, waits until it is unsealed and KV v2 is writable at secret/, and
// stops it when the test ends.
func Vault(t testing.TB) *VaultServer {
	t.Helper()
	return startVault(t, false)
}

// VaultTLS is Vault with a TLS listener (-dev-tls): Addr is https and CACert
// names the CA file; the certificate is valid for localhost and 127.0.0.1.
func VaultTLS(t testing.TB) *VaultServer {
	t.Helper()
	return startVault(t, true)
}

func startVault(t testing.TB, tls bool) *VaultServer {
	t.Helper()
	v := &VaultServer{t: t, bin: VaultBinary(t), RootToken: "root-" + randomHex(12), tls: tls}
	if tls {
		v.certDir = t.TempDir()
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		v.port = FreePort(t)
		lastErr = v.start()
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("testenv: starting vault: %v", lastErr)
	}
	t.Cleanup(v.Stop)
	return v
}

var unsealKeyRE = regexp.MustCompile(`Unseal Key: (\S+)`)

// start runs the dev server on v.port and waits for it.
func (v *VaultServer) start() error {
	scheme := "http"
	if v.tls {
		scheme = "https"
	}
	v.Addr = fmt.Sprintf("%s://127.0.0.1:%d", scheme, v.port)
	args := []string{"server", "-dev",
		"-dev-root-token-id=" + v.RootToken,
		"-dev-listen-address=" + fmt.Sprintf("127.0.0.1:%d", v.port),
		"-dev-no-store-token",
		"-log-level=warn",
	}
	if v.tls {
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+v.certDir)
		v.CACert = filepath.Join(v.certDir, "vault-ca.pem")
	}
	// Keep the caller's VAULT_* environment out of the server.
	env := []string{"VAULT_ADDR=", "VAULT_TOKEN=", "VAULT_NAMESPACE=", "HOME=" + os.TempDir()}
	p, err := startProcess(v.bin, args, env)
	if err != nil {
		return fmt.Errorf("exec %s: %w\n%s", v.bin, err, vaultHowTo)
	}
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	cfg.Timeout = 10 * time.Second
	if v.tls {
		// The CA file appears once the server has started; configure TLS lazily.
		if err := waitFor(p, 30*time.Second, func(context.Context) error {
			_, err := os.Stat(v.CACert)
			return err
		}); err != nil {
			out := p.out.String()
			p.stop()
			return fmt.Errorf("vault -dev-tls wrote no CA file: %w\noutput:\n%s", err, out)
		}
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: v.CACert}); err != nil {
			p.stop()
			return fmt.Errorf("vault client TLS: %w", err)
		}
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		p.stop()
		return fmt.Errorf("vault client: %w", err)
	}
	client.SetToken(v.RootToken)
	client.SetNamespace("")
	err = waitFor(p, 60*time.Second, func(ctx context.Context) error {
		if !unsealKeyRE.MatchString(p.out.String()) {
			return fmt.Errorf("dev server banner (unseal key) not printed yet")
		}
		h, err := client.Sys().HealthWithContext(ctx)
		if err != nil {
			return err
		}
		if !h.Initialized || h.Sealed || h.Standby {
			return fmt.Errorf("health: initialized=%v sealed=%v standby=%v", h.Initialized, h.Sealed, h.Standby)
		}
		mounts, err := client.Sys().ListMountsWithContext(ctx)
		if err != nil {
			return err
		}
		m, ok := mounts["secret/"]
		if !ok || m.Options["version"] != "2" {
			return fmt.Errorf("kv v2 not mounted at secret/ yet")
		}
		// KV v2 upgrades itself after mounting; a write proves it is ready.
		if _, err := client.KVv2("secret").Put(ctx, "testenv-probe", map[string]any{"ok": "1"}); err != nil {
			return err
		}
		return client.KVv2("secret").DeleteMetadata(ctx, "testenv-probe")
	})
	if err != nil {
		out := p.out.String()
		p.stop()
		if addrInUse(out) {
			return fmt.Errorf("port %d in use: %w", v.port, err)
		}
		return fmt.Errorf("vault dev server did not become ready: %w\noutput:\n%s", err, out)
	}
	if m := unsealKeyRE.FindStringSubmatch(p.out.String()); m != nil {
		v.UnsealKey = m[1]
	}
	v.mu.Lock()
	v.proc = p
	v.Client = client
	v.mu.Unlock()
	return nil
}

// Stop kills the server (an outage that loses the dev server's in-memory data).
// Safe to call more than once.
func (v *VaultServer) Stop() {
	v.mu.Lock()
	p := v.proc
	v.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// Restart stops the server and starts a fresh dev server on the same address
// with the same root token. Dev-mode storage is in memory: nothing survives.
func (v *VaultServer) Restart(t testing.TB) {
	t.Helper()
	v.Stop()
	var err error
	for i := 0; i < 20; i++ { // the port may linger briefly
		if err = v.start(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("testenv: restarting vault: %v", err)
}

// Pause freezes the server process (SIGSTOP): connections hang, data is kept.
func (v *VaultServer) Pause() { v.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (v *VaultServer) Resume() { v.signal(syscall.SIGCONT) }

func (v *VaultServer) signal(sig syscall.Signal) {
	v.mu.Lock()
	p := v.proc
	v.mu.Unlock()
	if p != nil {
		p.signal(sig)
	}
}

// Seal seals the server; every request then fails with 503 until Unseal.
func (v *VaultServer) Seal(t testing.TB) {
	t.Helper()
	if err := v.Client.Sys().Seal(); err != nil {
		t.Fatalf("testenv: sealing vault: %v", err)
	}
}

// Unseal unseals a sealed server with its unseal key; data written before Seal is kept.
func (v *VaultServer) Unseal(t testing.TB) {
	t.Helper()
	if v.UnsealKey == "" {
		t.Fatalf("testenv: vault unseal key not found in the dev server output")
	}
	st, err := v.Client.Sys().Unseal(v.UnsealKey)
	if err != nil {
		t.Fatalf("testenv: unsealing vault: %v", err)
	}
	if st.Sealed {
		t.Fatalf("testenv: vault still sealed after unseal")
	}
	// Wait for the KV mount to serve again after unseal.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := v.Client.KVv2("secret").Put(context.Background(), "testenv-probe", map[string]any{"ok": "1"})
		if err == nil {
			_ = v.Client.KVv2("secret").DeleteMetadata(context.Background(), "testenv-probe")
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: vault not writable after unseal: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Output returns the server's recent log output.
func (v *VaultServer) Output() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.proc == nil {
		return ""
	}
	return v.proc.out.String()
}

// NewClient returns a fresh API client for the server holding token.
func (v *VaultServer) NewClient(t testing.TB, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	if v.CACert != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: v.CACert}); err != nil {
			t.Fatalf("testenv: vault client TLS: %v", err)
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("testenv: vault client: %v", err)
	}
	c.SetToken(token)
	c.SetNamespace("")
	return c
}

// WritePolicy creates or replaces an ACL policy.
func (v *VaultServer) WritePolicy(t testing.TB, name, hcl string) {
	t.Helper()
	if err := v.Client.Sys().PutPolicy(name, hcl); err != nil {
		t.Fatalf("testenv: writing vault policy %s: %v", name, err)
	}
}

// Token creates a token holding the named policies plus Vault's "default"
// policy (lookup-self, renew-self; no secrets), with the given TTL (0: the
// server default). The token is renewable.
func (v *VaultServer) Token(t testing.TB, ttl time.Duration, policies ...string) string {
	t.Helper()
	renewable := true
	req := &api.TokenCreateRequest{Policies: policies, Renewable: &renewable}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	s, err := v.Client.Auth().Token().Create(req)
	if err != nil {
		t.Fatalf("testenv: creating vault token: %v", err)
	}
	return s.Auth.ClientToken
}
