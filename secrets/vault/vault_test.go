package vault

import (
	"context"
	"crypto"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/storetest"
)

// mrbacdPolicy is the documented least privilege, on the test prefix.
const mrbacdPolicy = `
path "secret/data/mrbacd-test/*" { capabilities = ["create", "update", "read"] }
path "secret/metadata/mrbacd-test/*" { capabilities = ["read", "patch", "create"] }
`

func newStore(t *testing.T, v *testenv.VaultServer, auth AuthOptions, logs *testenv.LogBuffer) *Store {
	t.Helper()
	if logs == nil {
		logs = &testenv.LogBuffer{}
	}
	s, err := New(context.Background(), Options{Address: v.Addr, Auth: auth,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func peek(t *testing.T, v *testenv.VaultServer, p string) map[string]any {
	t.Helper()
	sec, err := v.Client.KVv2("secret").Get(context.Background(), p)
	if err != nil {
		t.Fatalf("peek %s: %v", p, err)
	}
	return sec.Data
}

func TestContract(t *testing.T) {
	v := testenv.Vault(t)
	v.WritePolicy(t, "mrbacd", mrbacdPolicy)
	v.WritePolicy(t, "elsewhere", `path "secret/data/elsewhere/*" { capabilities = ["create", "update", "read"] }
path "secret/metadata/elsewhere/*" { capabilities = ["read", "patch"] }`)
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		logs := &testenv.LogBuffer{}
		s := newStore(t, v, AuthOptions{Method: "token", Token: v.Token(t, time.Hour, "mrbacd")}, logs)
		return storetest.Harness{
			Store: s,
			Peek: func(t *testing.T, p string) string {
				data := peek(t, v, p)
				if len(data) == 1 {
					key, _ := data["api_key"].(string)
					return key
				}
				b, _ := json.Marshal(data)
				return string(b)
			},
			Denied: func(t *testing.T, p string) (secrets.Store, func()) {
				return newStore(t, v, AuthOptions{Method: "token", Token: v.Token(t, time.Hour, "elsewhere")}, logs), nil
			},
			Outage:        func(t *testing.T) { v.Pause() },
			Restore:       func(t *testing.T) { v.Resume() },
			OutageTimeout: time.Second,
			Logs:          logs.String,
			Crash: func(t *testing.T, n int) secrets.Store {
				return crashingStore(t, v, v.Token(t, time.Hour, "mrbacd"), n, logs)
			},
		}
	})
}

// crashingStore returns a store that dies after n requests changing the KV
// mount (see storetest.CrashTransport).
func crashingStore(t *testing.T, v *testenv.VaultServer, token string, n int, logs *testenv.LogBuffer) *Store {
	t.Helper()
	o := Options{Address: v.Addr, MaxRetries: -1, Auth: AuthOptions{Method: "token", Token: token},
		wrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return storetest.CrashTransport(rt, n, func(r *http.Request) bool {
				return r.Method != http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/secret/")
			})
		}}
	o.Logger = slog.New(slog.DiscardHandler)
	if logs != nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestRawMetadataStaysBounded: writers that crash after patching the next
// version's metadata, and writers that lose the CAS race, leave entries that
// later writes prune, so the custom metadata stays far below Vault's 64 keys
// and the record stays readable throughout.
func TestRawMetadataStaysBounded(t *testing.T) {
	v := testenv.Vault(t)
	v.WritePolicy(t, "mrbacd", mrbacdPolicy)
	tok := v.Token(t, time.Hour, "mrbacd")
	s := newStore(t, v, AuthOptions{Method: "token", Token: tok}, nil)
	ctx := context.Background()
	tg := secrets.Target{Path: "mrbacd-test/bounded", Format: secrets.FormatRaw}
	rec := func(i int) secrets.Record {
		return secrets.Record{APIKey: fmt.Sprintf("sk-bounded-%d", i), KeyID: fmt.Sprintf("k%d", i), KeyName: "n",
			RotationID: fmt.Sprintf("r%d", i), CreatedAt: time.Now().UTC().Truncate(time.Second)}
	}
	cur, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec(0), Token: "r0"})
	if err != nil {
		t.Fatal(err)
	}
	maxKeys := 0
	for round := 1; round <= 6; round++ {
		// Ten writers die after their metadata patch (before the data)...
		for i := 0; i < 10; i++ {
			r := rec(round*100 + i)
			_, err := crashingStore(t, v, tok, 1, nil).Write(ctx, secrets.WriteRequest{Target: tg, Record: r, IfVersion: cur, Token: r.RotationID})
			if !errors.Is(err, storetest.ErrCrashed) {
				t.Fatalf("crashing write err = %v", err)
			}
			got, err := s.Read(ctx, tg)
			if err != nil || got.Version != cur {
				t.Fatalf("Read after a crashed write = %v %q, %v; want version %s", got.Record, got.Version, err, cur)
			}
		}
		// ...then four race, and one wins.
		recs := make([]secrets.Record, 4)
		for i := range recs {
			recs[i] = rec(round*100 + 50 + i)
		}
		cur = storetest.RaceWrites(ctx, t, fmt.Sprintf("round %d", round), s, tg, cur, recs)
		m, err := v.Client.KVv2("secret").GetMetadata(ctx, tg.Path)
		if err != nil {
			t.Fatal(err)
		}
		maxKeys = max(maxKeys, len(m.CustomMetadata))
	}
	// managed-by, 5 flat keys, the current and previous versions' entries
	// (and the losers' of the current version, pruned by the next write).
	if maxKeys > 1+5+2+3 {
		t.Fatalf("custom metadata grew to %d keys", maxKeys)
	}
}

func TestSealedAndStopped(t *testing.T) {
	v := testenv.Vault(t)
	s, err := New(context.Background(), Options{Address: v.Addr, MaxRetries: -1, Auth: AuthOptions{Method: "token", Token: v.RootToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	tg := secrets.Target{Path: "mrbacd-test/sealed"}
	rec := secrets.Record{APIKey: "sk-sealed-secret", KeyID: "k1", RotationID: "r1", CreatedAt: time.Now().UTC().Truncate(time.Second)}
	v1, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec, Token: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	v.Seal(t)
	_, err = s.Read(ctx, tg)
	if !secrets.Retryable(err) || strings.Contains(err.Error(), rec.APIKey) {
		t.Fatalf("Read(sealed) err = %v, want retryable", err)
	}
	_, err = s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec, IfVersion: v1, Token: "r2"})
	if !secrets.Retryable(err) || strings.Contains(err.Error(), rec.APIKey) {
		t.Fatalf("Write(sealed) err = %v, want retryable", err)
	}
	v.Unseal(t)
	got, err := s.Read(ctx, tg)
	if err != nil || got.APIKey != rec.APIKey || got.Version != v1 {
		t.Fatalf("Read after unseal = %v %q, %v", got.Record, got.Version, err)
	}
	v.Stop()
	for name, call := range map[string]func() error{
		"read":     func() error { _, err := s.Read(ctx, tg); return err },
		"describe": func() error { _, err := s.Describe(ctx, tg); return err },
		"write": func() error {
			_, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec, IfVersion: v1, Token: "r3"})
			return err
		},
	} {
		if err := call(); !secrets.Retryable(err) {
			t.Errorf("%s with vault stopped: err = %v, want retryable", name, err)
		}
	}
}

func TestDeletedVersionIsNotFound(t *testing.T) {
	v := testenv.Vault(t)
	s := newStore(t, v, AuthOptions{Method: "token", Token: v.RootToken}, nil)
	ctx := context.Background()
	kv := v.Client.KVv2("secret")
	tests := []struct {
		name   string
		remove func(p string, ver int) error
	}{
		{name: "deleted", remove: func(p string, _ int) error { return kv.Delete(ctx, p) }},
		{name: "destroyed", remove: func(p string, ver int) error { return kv.Destroy(ctx, p, []int{ver}) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := secrets.Target{Path: "mrbacd-test/" + tc.name}
			rec := secrets.Record{APIKey: "sk-x", KeyID: "k1", RotationID: "r1"}
			v1, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec, Token: "r1"})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.remove(tg.Path, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Read(ctx, tg); !errors.Is(err, secrets.ErrNotFound) {
				t.Fatalf("Read err = %v, want ErrNotFound", err)
			}
			d, err := s.Describe(ctx, tg)
			if err != nil || d.Exists || d.Versions != 0 {
				t.Fatalf("Describe = %+v, %v; want not existing", d, err)
			}
			// The old version is not a valid precondition any more; "absent" is.
			if _, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec, IfVersion: v1, Token: "r2"}); !errors.Is(err, secrets.ErrConflict) {
				t.Fatalf("Write(if %s) err = %v, want ErrConflict", v1, err)
			}
			rec2 := secrets.Record{APIKey: "sk-y", KeyID: "k2", RotationID: "r2"}
			v2, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec2, IfVersion: secrets.NoVersion, Token: "r2"})
			if err != nil || v2 != "2" {
				t.Fatalf("Write(absent) = %q, %v; want version 2", v2, err)
			}
		})
	}
}

// TestRawRetryCompletesMetadata: a version whose data landed without its
// entry (a write cut off between its requests) reads as a retryable error,
// and the retry of that write completes it instead of conflicting.
func TestRawRetryCompletesMetadata(t *testing.T) {
	v := testenv.Vault(t)
	s := newStore(t, v, AuthOptions{Method: "token", Token: v.RootToken}, nil)
	ctx := context.Background()
	tg := secrets.Target{Path: "mrbacd-test/raw", Format: secrets.FormatRaw}
	r1 := secrets.Record{APIKey: "sk-one", KeyID: "k1", KeyName: "n", RotationID: "r1", CreatedAt: time.Now().UTC().Truncate(time.Second)}
	v1, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r1, Token: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	r2 := secrets.Record{APIKey: "sk-two", KeyID: "k2", KeyName: "n", RotationID: "r2", CreatedAt: time.Now().UTC().Truncate(time.Second)}
	// The crashed attempt's first request.
	if _, err := v.Client.KVv2("secret").Put(ctx, tg.Path, map[string]any{"api_key": r2.APIKey}, api.WithCheckAndSet(1)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Read(ctx, tg)
	if !secrets.Retryable(err) || strings.Contains(err.Error(), "sk-two") {
		t.Fatalf("Read with stale metadata err = %v, want retryable", err)
	}
	// Another rotation's write still conflicts.
	r3 := secrets.Record{APIKey: "sk-three", KeyID: "k3", RotationID: "r3"}
	if _, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r3, IfVersion: v1, Token: "r3"}); !errors.Is(err, secrets.ErrConflict) {
		t.Fatalf("Write by another rotation err = %v, want ErrConflict", err)
	}
	v2, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r2, IfVersion: v1, Token: "r2"})
	if err != nil || v2 != "2" {
		t.Fatalf("retried Write = %q, %v; want 2", v2, err)
	}
	got, err := s.Read(ctx, tg)
	if err != nil || got.KeyID != "k2" || got.APIKey != "sk-two" || !got.CreatedAt.Equal(r2.CreatedAt) {
		t.Fatalf("Read = %v, %v", got.Record, err)
	}
}

func enableAppRole(t *testing.T, v *testenv.VaultServer, ttl, maxTTL string) (roleID, secretID string) {
	t.Helper()
	if err := v.Client.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	v.WritePolicy(t, "mrbacd", mrbacdPolicy)
	if _, err := v.Client.Logical().Write("auth/approle/role/mrbacd", map[string]any{
		"token_policies": "mrbacd", "token_ttl": ttl, "token_max_ttl": maxTTL,
	}); err != nil {
		t.Fatal(err)
	}
	r, err := v.Client.Logical().Read("auth/approle/role/mrbacd/role-id")
	if err != nil {
		t.Fatal(err)
	}
	s, err := v.Client.Logical().Write("auth/approle/role/mrbacd/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Data["role_id"].(string), s.Data["secret_id"].(string)
}

// TestAppRoleRenewalAndRelogin: a 2s token with a 5s max TTL is renewed by the
// lifetime watcher, then, at max TTL, replaced by a fresh login.
func TestAppRoleRenewalAndRelogin(t *testing.T) {
	v := testenv.Vault(t)
	roleID, secretID := enableAppRole(t, v, "2s", "5s")
	logs := &testenv.LogBuffer{}
	s := newStore(t, v, AuthOptions{Method: "approle", RoleID: roleID, SecretID: secretID}, logs)
	ctx := context.Background()
	tg := secrets.Target{Path: "mrbacd-test/approle"}
	rec := secrets.Record{APIKey: "sk-approle", KeyID: "k1", RotationID: "r1"}
	first := s.client.Token()
	if _, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec, Token: "r1"}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 25*time.Second)
	defer cancel()
	if !testenv.Until(wctx, func() bool { return logs.Count("vault login") >= 2 && logs.Count("vault token renewed") >= 1 }) {
		t.Fatalf("no renewal and re-login seen; logs:\n%s", logs.String())
	}
	if s.client.Token() == first {
		t.Fatalf("token unchanged after re-login")
	}
	// The first token reaches its max TTL (the watcher gives up a little
	// before it): from then on the store works only because it logged in again.
	if !testenv.Until(wctx, func() bool {
		_, err := v.NewClient(t, first).Auth().Token().LookupSelf()
		return err != nil
	}) {
		t.Fatalf("first token still valid long after its max TTL")
	}
	if got, err := s.Read(ctx, tg); err != nil || got.APIKey != rec.APIKey {
		t.Fatalf("Read after re-login = %v, %v", got.Record, err)
	}
	for _, leak := range []string{secretID, first, s.client.Token(), rec.APIKey} {
		if strings.Contains(logs.String(), leak) {
			t.Fatalf("logs hold a credential")
		}
	}
}

func TestAppRoleWrappedSecretID(t *testing.T) {
	v := testenv.Vault(t)
	roleID, _ := enableAppRole(t, v, "1h", "2h")
	c, err := v.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(v.RootToken)
	c.SetWrappingLookupFunc(func(string, string) string { return "60s" })
	w, err := c.Logical().Write("auth/approle/role/mrbacd/secret-id", nil)
	if err != nil || w.WrapInfo == nil {
		t.Fatalf("wrapped secret id: %v", err)
	}
	s := newStore(t, v, AuthOptions{Method: "approle", RoleID: roleID, SecretID: w.WrapInfo.Token, WrappedSecretID: true}, nil)
	if _, err := s.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: "mrbacd-test/w"},
		Record: secrets.Record{APIKey: "sk-w", KeyID: "k"}, Token: "t"}); err != nil {
		t.Fatalf("write with unwrapped secret id: %v", err)
	}
	// A wrapping token works once: a second store with it is refused.
	_, err = New(context.Background(), Options{Address: v.Addr, Auth: AuthOptions{Method: "approle", RoleID: roleID,
		SecretID: w.WrapInfo.Token, WrappedSecretID: true}})
	if err == nil {
		t.Fatalf("a used wrapping token was accepted")
	}
}

func TestTokenRenewal(t *testing.T) {
	v := testenv.Vault(t)
	v.WritePolicy(t, "mrbacd", mrbacdPolicy)
	tok := v.Token(t, 2*time.Second, "mrbacd")
	logs := &testenv.LogBuffer{}
	start := time.Now()
	s := newStore(t, v, AuthOptions{Method: "token", Token: tok}, logs)
	// Past twice the TTL, with renewals seen: only renewal keeps it alive.
	wctx, cancel := context.WithDeadline(context.Background(), start.Add(30*time.Second))
	defer cancel()
	if !testenv.Until(wctx, func() bool { return time.Since(start) >= 4*time.Second && logs.Count("vault token renewed") >= 2 }) {
		t.Fatalf("fewer than 2 renewals logged in %s:\n%s", time.Since(start).Round(time.Second), logs.String())
	}
	if _, err := s.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: "mrbacd-test/tok"},
		Record: secrets.Record{APIKey: "sk-t", KeyID: "k"}, Token: "t"}); err != nil {
		t.Fatalf("write after renewal: %v", err)
	}
	if strings.Contains(logs.String(), tok) {
		t.Fatalf("logs hold the token")
	}
}

func TestNewErrors(t *testing.T) {
	v := testenv.Vault(t)
	tests := []struct {
		name string
		o    Options
		is   error
	}{
		{name: "no address", o: Options{Auth: AuthOptions{Method: "token", Token: "x"}}, is: nil},
		{name: "bad address", o: Options{Address: "vault:8200", Auth: AuthOptions{Method: "token", Token: "x"}}, is: nil},
		{name: "unknown method", o: Options{Address: v.Addr, Auth: AuthOptions{Method: "ldap"}}, is: nil},
		{name: "default method without token", o: Options{Address: v.Addr}, is: nil},
		{name: "empty token", o: Options{Address: v.Addr, Auth: AuthOptions{Method: "token"}}, is: nil},
		{name: "approle without secret id", o: Options{Address: v.Addr, Auth: AuthOptions{Method: "approle", RoleID: "r"}}, is: nil},
		{name: "kubernetes without role", o: Options{Address: v.Addr, Auth: AuthOptions{Method: "kubernetes"}}, is: nil},
		{name: "kubernetes without jwt file", o: Options{Address: v.Addr, Auth: AuthOptions{Method: "kubernetes", K8sRole: "r", JWTFile: "/nonexistent/jwt"}}, is: nil},
		{name: "wrong token", o: Options{Address: v.Addr, Auth: AuthOptions{Method: "token", Token: "hvs.not-a-token"}}, is: secrets.ErrPermissionDenied},
		{name: "unreachable", o: Options{Address: "http://127.0.0.1:1", MaxRetries: -1, Auth: AuthOptions{Method: "token", Token: "x"}}, is: secrets.ErrUnavailable},
		{name: "missing CA file", o: Options{Address: v.Addr, CACert: "/nonexistent/ca.pem", Auth: AuthOptions{Method: "token", Token: "x"}}, is: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(context.Background(), tc.o)
			if err == nil {
				s.Close()
				t.Fatalf("New succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if strings.Contains(err.Error(), "hvs.not-a-token") {
				t.Fatalf("error holds the token: %v", err)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	v := testenv.VaultTLS(t)
	ctx := context.Background()
	tests := []struct {
		name       string
		ca, server string
		ok         bool
	}{
		{name: "trusted CA", ca: v.CACert, server: "", ok: true},
		{name: "server name override", ca: v.CACert, server: "localhost", ok: true},
		{name: "no CA", ca: "", server: "", ok: false},
		{name: "wrong server name", ca: v.CACert, server: "vault.example", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(ctx, Options{Address: v.Addr, CACert: tc.ca, TLSServerName: tc.server,
				Auth: AuthOptions{Method: "token", Token: v.RootToken}})
			if tc.ok {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				defer s.Close()
				if _, err := s.Write(ctx, secrets.WriteRequest{Target: secrets.Target{Path: "mrbacd-test/tls-" + strings.ReplaceAll(tc.name, " ", "-")},
					Record: secrets.Record{APIKey: "sk-tls", KeyID: "k"}, Token: "t"}); err != nil {
					t.Fatalf("Write over TLS: %v", err)
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("New succeeded with an untrusted certificate")
			}
			if secrets.Retryable(err) {
				t.Fatalf("a certificate problem must not be retryable: %v", err)
			}
		})
	}
}

// fakeKubeAPI answers Kubernetes TokenReview requests the way the API server
// does: it authenticates exactly one service account token.
func fakeKubeAPI(t *testing.T, goodJWT string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		var review struct {
			Spec struct {
				Token string `json:"token"`
			} `json:"spec"`
		}
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		status := map[string]any{"authenticated": false, "error": "invalid bearer token"}
		if review.Spec.Token == goodJWT {
			status = map[string]any{"authenticated": true, "user": map[string]any{
				"username": "system:serviceaccount:ops:mrbacd", "uid": "5d0e6a5c-0000-4000-8000-000000000001",
				"groups": []string{"system:serviceaccounts", "system:serviceaccounts:ops"}}}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// serviceAccountJWT builds a signed legacy service account token.
func serviceAccountJWT(t *testing.T, name string) string {
	t.Helper()
	key, err := rsa.GenerateKey(crand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	head := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "test"})
	body := enc(map[string]any{
		"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:ops:" + name,
		"kubernetes.io/serviceaccount/namespace":            "ops",
		"kubernetes.io/serviceaccount/service-account.name": name,
		"kubernetes.io/serviceaccount/service-account.uid":  "5d0e6a5c-0000-4000-8000-000000000001",
		"kubernetes.io/serviceaccount/secret.name":          name + "-token",
	})
	sum := sha256.Sum256([]byte(head + "." + body))
	sig, err := rsa.SignPKCS1v15(crand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return head + "." + body + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestKubernetesLogin(t *testing.T) {
	v := testenv.Vault(t)
	good := serviceAccountJWT(t, "mrbacd")
	kube := fakeKubeAPI(t, good)
	if err := v.Client.Sys().EnableAuthWithOptions("kubernetes", &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Client.Logical().Write("auth/kubernetes/config", map[string]any{
		"kubernetes_host": kube.URL, "disable_local_ca_jwt": true}); err != nil {
		t.Fatal(err)
	}
	v.WritePolicy(t, "mrbacd", mrbacdPolicy)
	if _, err := v.Client.Logical().Write("auth/kubernetes/role/mrbacd", map[string]any{
		"bound_service_account_names": "mrbacd", "bound_service_account_namespaces": "ops",
		"token_policies": "mrbacd", "token_ttl": "1h"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, jwt string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(jwt+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodFile := write("good", good)
	badFile := write("bad", serviceAccountJWT(t, "mrbacd")) // same claims, unknown to the API server

	logs := &testenv.LogBuffer{}
	s := newStore(t, v, AuthOptions{Method: "kubernetes", K8sRole: "mrbacd", JWTFile: goodFile}, logs)
	if _, err := s.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: "mrbacd-test/k8s"},
		Record: secrets.Record{APIKey: "sk-k8s", KeyID: "k"}, Token: "t"}); err != nil {
		t.Fatalf("write after kubernetes login: %v", err)
	}
	if strings.Contains(logs.String(), good) {
		t.Fatalf("logs hold the service account token")
	}
	_, err := New(context.Background(), Options{Address: v.Addr, Auth: AuthOptions{Method: "kubernetes", K8sRole: "mrbacd", JWTFile: badFile}})
	if !errors.Is(err, secrets.ErrPermissionDenied) {
		t.Fatalf("login with a rejected token err = %v, want ErrPermissionDenied", err)
	}
}

// TestNamespaceHeader checks the Enterprise namespace travels on every
// request (through a recording proxy: the dev server is Vault OSS, which
// serves only the root namespace).
func TestNamespaceHeader(t *testing.T) {
	v := testenv.Vault(t)
	target, err := url.Parse(v.Addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("X-Vault-Namespace")]++
		mu.Unlock()
		r.Header.Del("X-Vault-Namespace") // OSS: root namespace only
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	s, err := New(context.Background(), Options{Address: proxy.URL, Namespace: "team-a/",
		Auth: AuthOptions{Method: "token", Token: v.RootToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: "mrbacd-test/ns"},
		Record: secrets.Record{APIKey: "sk-ns", KeyID: "k"}, Token: "t"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen["team-a/"] < 4 {
		t.Fatalf("namespace headers seen: %v, want team-a/ on every request", seen)
	}
}

// TestForeignSecret: a KV secret mrbacd did not write (no custom metadata)
// is readable in the raw format; one without api_key is an error that does
// not quote the data.
func TestForeignSecret(t *testing.T) {
	v := testenv.Vault(t)
	s := newStore(t, v, AuthOptions{Method: "token", Token: v.RootToken}, nil)
	ctx := context.Background()
	kv := v.Client.KVv2("secret")
	if _, err := kv.Put(ctx, "team/foreign", map[string]any{"api_key": "sk-foreign"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(ctx, secrets.Target{Path: "team/foreign", Format: secrets.FormatRaw})
	if err != nil || got.APIKey != "sk-foreign" || got.Version != "1" {
		t.Fatalf("Read(foreign) = %v %q, %v", got.Record, got.Version, err)
	}
	if _, err := kv.Put(ctx, "team/other", map[string]any{"token": "sk-wrong-field"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Read(ctx, secrets.Target{Path: "team/other"})
	if err == nil || strings.Contains(err.Error(), "sk-wrong-field") || secrets.Retryable(err) {
		t.Fatalf("Read(no api_key) err = %v", err)
	}
}

// TestAppRoleRevokedToken: a revoked token is replaced by a fresh login on
// the next operation; a real policy denial does not trigger one.
func TestAppRoleRevokedToken(t *testing.T) {
	v := testenv.Vault(t)
	roleID, secretID := enableAppRole(t, v, "1h", "2h")
	logs := &testenv.LogBuffer{}
	s := newStore(t, v, AuthOptions{Method: "approle", RoleID: roleID, SecretID: secretID}, logs)
	ctx := context.Background()
	tg := secrets.Target{Path: "mrbacd-test/revoked"}
	rec := secrets.Record{APIKey: "sk-revoked", KeyID: "k1", RotationID: "r1"}
	if _, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec, Token: "r1"}); err != nil {
		t.Fatal(err)
	}
	// A path outside the policy: denied, and the live token is kept.
	if _, err := s.Read(ctx, secrets.Target{Path: "elsewhere/x"}); !errors.Is(err, secrets.ErrPermissionDenied) {
		t.Fatalf("Read outside the policy err = %v, want ErrPermissionDenied", err)
	}
	if n := logs.Count("vault login"); n != 1 {
		t.Fatalf("a policy denial caused a login (%d logins)", n)
	}
	old := s.client.Token()
	if err := v.Client.Auth().Token().RevokeOrphan(old); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(ctx, tg)
	if err != nil || got.APIKey != rec.APIKey {
		t.Fatalf("Read after revocation = %v, %v", got.Record, err)
	}
	if s.client.Token() == old || logs.Count("logged in again") != 1 {
		t.Fatalf("no fresh login after revocation; logs:\n%s", logs.String())
	}
}

// Formatting or logging the options never shows a token or secret id.
func TestNoCredentialsInTextForms(t *testing.T) {
	for _, a := range []AuthOptions{
		{Method: "token", Token: "hvs.tokensecret0123456789"},
		{Method: "approle", RoleID: "roleid-secret-0123", SecretID: "secretid-secret-0123", WrappedSecretID: true},
	} {
		o := Options{Address: "http://127.0.0.1:8200", Auth: a}
		var logs strings.Builder
		for _, h := range []slog.Handler{slog.NewJSONHandler(&logs, nil), slog.NewTextHandler(&logs, nil)} {
			slog.New(h).Info("vault", "auth", a, "options", o)
		}
		text := fmt.Sprintf("%v %+v %#v %s %v %+v", a, a, a, a, o, o) + logs.String()
		if !strings.Contains(text, "method="+a.Method) {
			t.Fatalf("text forms lack the method: %s", text)
		}
		for _, secret := range []string{"tokensecret", "roleid-secret", "secretid-secret"} {
			if strings.Contains(text, secret) {
				t.Errorf("a text form shows a credential: %s", text)
			}
		}
	}
}

// TestRawFirstWriteNeedsMetadataCreate: without "create" on the metadata
// path, a raw first write fails before storing anything, with an error that
// names the missing capability; JSON first writes and raw replacements of an
// existing path need only "patch".
func TestRawFirstWriteNeedsMetadataCreate(t *testing.T) {
	v := testenv.Vault(t)
	v.WritePolicy(t, "nocreate", `path "secret/data/mrbacd-test/*" { capabilities = ["create", "update", "read"] }
path "secret/metadata/mrbacd-test/*" { capabilities = ["read", "patch"] }`)
	s := newStore(t, v, AuthOptions{Method: "token", Token: v.Token(t, time.Hour, "nocreate")}, nil)
	root := newStore(t, v, AuthOptions{Method: "token", Token: v.RootToken}, nil)
	ctx := context.Background()
	rec := func(k string) secrets.Record {
		return secrets.Record{APIKey: "sk-" + k, KeyID: k, RotationID: "r-" + k, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	}
	tests := []struct {
		name    string
		format  secrets.Format
		existed bool // the path holds a record (written by a privileged token)
		wantErr bool
	}{
		{name: "raw first write", format: secrets.FormatRaw, existed: false, wantErr: true},
		{name: "json first write", format: secrets.FormatJSON, existed: false, wantErr: false},
		{name: "raw replacement", format: secrets.FormatRaw, existed: true, wantErr: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := secrets.Target{Path: "mrbacd-test/" + strings.ReplaceAll(tc.name, " ", "-"), Format: tc.format}
			ifv := secrets.NoVersion
			if tc.existed {
				var err error
				if ifv, err = root.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec("old"), Token: "r-old"}); err != nil {
					t.Fatal(err)
				}
			}
			r := rec("new")
			_, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r, IfVersion: ifv, Token: r.RotationID})
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Write: %v", err)
				}
				s.mustReadKey(t, tg, r)
				return
			}
			if !errors.Is(err, secrets.ErrPermissionDenied) || !strings.Contains(err.Error(), `grant "create" on the metadata path`) {
				t.Fatalf("Write err = %v, want permission denied naming the capability", err)
			}
			if _, err := root.Read(ctx, tg); !errors.Is(err, secrets.ErrNotFound) {
				t.Fatalf("the failed write left something behind: Read err = %v", err)
			}
		})
	}
}

// mustReadKey reads tg and checks it holds r.
func (s *Store) mustReadKey(t *testing.T, tg secrets.Target, r secrets.Record) {
	t.Helper()
	got, err := s.Read(context.Background(), tg)
	if err != nil || got.APIKey != r.APIKey || got.KeyID != r.KeyID || got.RotationID != r.RotationID {
		t.Fatalf("Read = %v, %v; want %v", got.Record, err, r)
	}
}
