// Package vault stores managed-key records in HashiCorp Vault's KV v2 engine.
//
// Layout of one target at mount M and path P:
//   - data (M/data/P): for the JSON format the record's fields
//     {"api_key", "key_id", "key_name", "created_at", "rotation_id"}; for the
//     raw format only {"api_key"}. Either way a consumer reads field api_key.
//   - custom metadata (M/metadata/P): managed-by, key_id, key_name,
//     rotation_id, created_at and "version", the KV version they describe
//     (a copy for people and older readers); for the raw format also one
//     entry per recent version, "mrbacd.v<N>.<fingerprint>", whose value is
//     the JSON {"key_id", "key_name", "rotation_id", "created_at",
//     "written_at"} of the record stored as version N. The fingerprint is the
//     first 16 hex digits of a SHA-256 of the key (with a fixed prefix): it
//     binds the entry to the key it describes without revealing it (a
//     platform key is random; the hash cannot be reversed).
//
// Every write is compare-and-set (KV v2 "cas"): Vault itself refuses a write
// whose cas is not the current version, so of two concurrent writers exactly
// one wins.
//
// # Crash consistency of raw writes
//
// A raw record is two requests, data and metadata, and a crash may come
// between them. The metadata therefore goes first: a raw write that read
// current version N patches the entry for version N+1 (the version Vault
// gives a write with cas=N) and the key's fingerprint, then writes the data
// with cas=N, then (best effort) refreshes the flat copy and prunes entries.
// A read of version V looks up the entry of V and of the stored key's
// fingerprint, so:
//   - a crash before or during the metadata patch leaves version N and its
//     entry untouched; a stray pending entry is harmless (no data version
//     carries its version and fingerprint) and the next write prunes it;
//   - a crash after the data write leaves version N+1 with its entry already
//     in place: readers get the whole new record;
//   - a write that loses the CAS race leaves its pending entry too, under its
//     own fingerprint, so it never describes the winner's data.
//
// Entries of versions older than the previous one are pruned by every write,
// as are losers' entries of a version that landed, and pending entries beyond
// the newest 8, keeping the custom metadata far below Vault's 64 keys (an
// entry must fit Vault's 512 bytes per value, or the write fails before it
// stores anything). The first raw write of a path creates the metadata (so it
// needs the metadata "create" capability) before the data exists. Creating is
// not a merge: of two writers racing to create one path, the second can drop
// the first's entry; the winner's final metadata write restores it, so only a
// crash of the winner right after its data write, during such a race, leaves
// the record unreadable (the rotation engine never runs two writers on one
// key).
//
// Raw records written by older mrbacd versions (flat metadata with
// "version", no entry) still read as before; one whose metadata write was cut
// off by a crash fails with secrets.ErrUnavailable until a retry of that
// write (same record) completes it. A KV secret mrbacd never wrote (no
// "version", no entry) is read with whatever custom metadata it has. A
// version whose key is recorded at another version (a rollback copied it)
// reads with that entry.
//
// JSON records carry everything in the data; their metadata is written after
// the data and is informational only.
//
// The policy mrbacd needs on a path: data "create", "update", "read";
// metadata "read", "patch", and "create" for the raw format.
//
// Auth: a token, AppRole (optionally a response-wrapped secret id) or
// Kubernetes. Tokens are renewed with api.LifetimeWatcher; when renewal ends
// (max TTL) AppRole and Kubernetes log in again. They also log in again when
// an operation is denied and the token can no longer look itself up (it was
// revoked), then retry the operation once. Tokens need Vault's "default"
// policy (lookup-self, renew-self).
package vault

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/mrbacd/mrbacd/secrets"
)

// AuthOptions selects how the store logs in.
type AuthOptions struct {
	// Method is "token" (the default), "approle" or "kubernetes".
	Method string
	// Token is the Vault token for Method "token" (resolved by the caller from a file or env).
	Token string
	// RoleID and SecretID are the AppRole credentials (resolved by the caller).
	RoleID, SecretID string
	// WrappedSecretID means SecretID is a response-wrapping token to unwrap
	// into the real secret id (once; the secret id is then kept in memory).
	WrappedSecretID bool
	// AuthMount is the auth method's mount path (default "approle" or "kubernetes").
	AuthMount string
	// K8sRole is the Vault role for Kubernetes auth.
	K8sRole string
	// JWTFile is the service account token file for Kubernetes auth, read at
	// every login (default /var/run/secrets/kubernetes.io/serviceaccount/token).
	JWTFile string
}

// String describes the auth method without its credentials, so a
// formatted AuthOptions (or Options) never shows a token or secret id.
func (a AuthOptions) String() string {
	set := func(v string) string {
		if v == "" {
			return "unset"
		}
		return "set"
	}
	return fmt.Sprintf("{method=%s token=%s role_id=%s secret_id=%s wrapped=%t mount=%s k8s_role=%s jwt_file=%s}",
		a.Method, set(a.Token), set(a.RoleID), set(a.SecretID), a.WrappedSecretID, a.AuthMount, a.K8sRole, a.JWTFile)
}

// GoString is String, for %#v.
func (a AuthOptions) GoString() string { return "vault.AuthOptions" + a.String() }

// LogValue keeps the credentials out of slog records.
func (a AuthOptions) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Options configures a Store.
type Options struct {
	// Address is Vault's URL, e.g. "https://vault.example:8200".
	Address string
	// Mount is the KV v2 mount (default "secret").
	Mount string
	// Namespace is the Vault Enterprise namespace ("" for none).
	Namespace string
	// CACert is a PEM file of CAs to trust; TLSServerName overrides the name checked.
	CACert, TLSServerName string
	// Auth selects the login method.
	Auth AuthOptions
	// Timeout bounds each HTTP request (default 30s).
	Timeout time.Duration
	// MaxRetries is how often the client retries a 5xx, 429 or network error
	// before returning it (default 2; negative for none).
	MaxRetries int
	// Logger receives renewal and login events (default slog.Default()).
	Logger *slog.Logger

	// wrapTransport, set by this package's tests, wraps the HTTP transport
	// (to simulate a process dying between the requests of a write).
	wrapTransport func(http.RoundTripper) http.RoundTripper
}

// LogValue keeps the credentials out of slog records (a JSON handler would
// marshal the struct, Auth's token and secret id included).
func (o Options) LogValue() slog.Value {
	return slog.GroupValue(slog.String("address", o.Address), slog.String("mount", o.Mount),
		slog.String("namespace", o.Namespace), slog.String("ca_cert", o.CACert),
		slog.String("tls_server_name", o.TLSServerName), slog.Any("auth", o.Auth))
}

// Store is a secrets.Store over Vault KV v2. Close it to stop token renewal.
type Store struct {
	client *api.Client
	kv     *api.KVv2
	mount  string
	auth   AuthOptions
	log    *slog.Logger

	loginMu  sync.Mutex
	secretID string // unwrapped secret id

	reloginMu   sync.Mutex
	lastRelogin time.Time
	relogged    chan *api.Secret // fresh logins for the renewer

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

var _ secrets.Store = (*Store)(nil)

const defaultJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// New connects to Vault, logs in and starts token renewal.
func New(ctx context.Context, o Options) (*Store, error) {
	if o.Address == "" {
		return nil, errors.New("vault: address is empty")
	}
	if u, err := url.Parse(o.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("vault: address %q is not an http(s) URL", o.Address)
	}
	if o.Mount == "" {
		o.Mount = "secret"
	}
	o.Mount = strings.Trim(o.Mount, "/")
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Auth.Method == "" {
		o.Auth.Method = "token"
	}
	switch o.Auth.Method {
	case "token":
		if o.Auth.Token == "" {
			return nil, errors.New("vault: auth method token: the token is empty")
		}
	case "approle":
		if o.Auth.RoleID == "" || o.Auth.SecretID == "" {
			return nil, errors.New("vault: auth method approle: role id and secret id are required")
		}
		if o.Auth.AuthMount == "" {
			o.Auth.AuthMount = "approle"
		}
	case "kubernetes":
		if o.Auth.K8sRole == "" {
			return nil, errors.New("vault: auth method kubernetes: the role is required")
		}
		if o.Auth.AuthMount == "" {
			o.Auth.AuthMount = "kubernetes"
		}
		if o.Auth.JWTFile == "" {
			o.Auth.JWTFile = defaultJWTFile
		}
	default:
		return nil, fmt.Errorf("vault: unknown auth method %q (want token, approle or kubernetes)", o.Auth.Method)
	}

	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault: client config: %w", cfg.Error)
	}
	cfg.Address = o.Address
	cfg.Timeout = o.Timeout
	switch {
	case o.MaxRetries > 0:
		cfg.MaxRetries = o.MaxRetries
	case o.MaxRetries < 0:
		cfg.MaxRetries = 0
	}
	if o.CACert != "" || o.TLSServerName != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: o.CACert, TLSServerName: o.TLSServerName}); err != nil {
			return nil, fmt.Errorf("vault: TLS config: %w", err)
		}
	}
	if o.wrapTransport != nil {
		cfg.HttpClient.Transport = o.wrapTransport(cfg.HttpClient.Transport)
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault: client: %w", err)
	}
	// The environment must not choose the token or namespace behind our back.
	client.ClearToken()
	client.SetNamespace(o.Namespace)

	s := &Store{client: client, kv: client.KVv2(o.Mount), mount: o.Mount, auth: o.Auth, log: o.Logger,
		stop: make(chan struct{}), relogged: make(chan *api.Secret, 1)}
	auth, err := s.login(ctx)
	if err != nil {
		return nil, err
	}
	s.wg.Add(1)
	go s.renew(auth)
	return s, nil
}

// Name returns "vault".
func (s *Store) Name() string { return "vault" }

// Close stops token renewal. The store must not be used afterwards.
func (s *Store) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.wg.Wait()
}

// login authenticates and returns the auth secret to renew (nil when the
// token does not expire or cannot be renewed).
func (s *Store) login(ctx context.Context) (*api.Secret, error) {
	s.loginMu.Lock()
	defer s.loginMu.Unlock()
	switch s.auth.Method {
	case "token":
		s.client.SetToken(s.auth.Token)
		sec, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, mapErr("token lookup", "", err)
		}
		ttl, _ := sec.TokenTTL()
		renewable, _ := sec.TokenIsRenewable()
		if ttl <= 0 || !renewable {
			return nil, nil
		}
		return &api.Secret{Auth: &api.SecretAuth{ClientToken: s.auth.Token, Renewable: true, LeaseDuration: int(ttl.Seconds())}}, nil
	case "approle":
		if s.secretID == "" {
			s.secretID = s.auth.SecretID
			if s.auth.WrappedSecretID {
				id, err := s.unwrapSecretID(ctx, s.auth.SecretID)
				if err != nil {
					s.secretID = ""
					return nil, err
				}
				s.secretID = id
			}
		}
		return s.loginWith(ctx, map[string]any{"role_id": s.auth.RoleID, "secret_id": s.secretID})
	case "kubernetes":
		jwt, err := os.ReadFile(s.auth.JWTFile)
		if err != nil {
			return nil, fmt.Errorf("vault: kubernetes login: reading the service account token: %w", err)
		}
		return s.loginWith(ctx, map[string]any{"role": s.auth.K8sRole, "jwt": strings.TrimSpace(string(jwt))})
	}
	return nil, fmt.Errorf("vault: unknown auth method %q", s.auth.Method)
}

func (s *Store) unwrapSecretID(ctx context.Context, wrapping string) (string, error) {
	c, err := s.client.Clone()
	if err != nil {
		return "", fmt.Errorf("vault: unwrap: %w", err)
	}
	c.SetToken(strings.TrimSpace(wrapping))
	sec, err := c.Logical().UnwrapWithContext(ctx, "")
	if err != nil {
		return "", mapErr("unwrapping the secret id", "", err)
	}
	if sec == nil || sec.Data == nil {
		return "", errors.New("vault: unwrapping the secret id: empty response")
	}
	id, _ := sec.Data["secret_id"].(string)
	if id == "" {
		return "", errors.New("vault: unwrapping the secret id: the response holds no secret_id")
	}
	return id, nil
}

func (s *Store) loginWith(ctx context.Context, body map[string]any) (*api.Secret, error) {
	c, err := s.client.Clone()
	if err != nil {
		return nil, fmt.Errorf("vault: login: %w", err)
	}
	c.ClearToken()
	sec, err := c.Logical().WriteWithContext(ctx, "auth/"+strings.Trim(s.auth.AuthMount, "/")+"/login", body)
	if err != nil {
		return nil, mapErr(s.auth.Method+" login", "", err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, fmt.Errorf("vault: %s login: the response holds no token", s.auth.Method)
	}
	s.client.SetToken(sec.Auth.ClientToken)
	s.log.Info("vault login", "method", s.auth.Method, "ttl", time.Duration(sec.Auth.LeaseDuration)*time.Second,
		"renewable", sec.Auth.Renewable)
	return sec, nil
}

// renew keeps the token alive: a lifetime watcher renews it; when renewal
// ends (max TTL, revoked), AppRole and Kubernetes log in again with backoff.
func (s *Store) renew(auth *api.Secret) {
	defer s.wg.Done()
	backoff := time.Second
	for {
		if auth == nil {
			return // token auth with a non-expiring or non-renewable token: nothing to do
		}
		fresh, stopped := s.watch(auth)
		if stopped {
			return
		}
		if fresh != nil { // an operation logged in again on its own
			auth = fresh
			continue
		}
		if s.auth.Method == "token" {
			s.log.Error("vault token can no longer be renewed and token auth cannot log in again", "method", "token")
			return
		}
		// Log in again until it works or the store closes.
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			next, err := s.login(ctx)
			cancel()
			if err == nil {
				auth = next
				backoff = time.Second
				break
			}
			s.log.Error("vault login failed", "method", s.auth.Method, "err", err)
			select {
			case <-s.stop:
				return
			case <-time.After(backoff):
			}
			if backoff < time.Minute {
				backoff *= 2
			}
		}
	}
}

// watch runs a lifetime watcher on auth until renewal ends (nil, false), the
// store closes (nil, true) or an operation logged in again (fresh, false).
func (s *Store) watch(auth *api.Secret) (fresh *api.Secret, stopped bool) {
	w, err := s.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: auth})
	if err != nil {
		s.log.Error("vault token watcher", "method", s.auth.Method, "err", err)
		return nil, false
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-s.stop:
			return nil, true
		case a := <-s.relogged:
			return a, false
		case r := <-w.RenewCh():
			ttl := 0
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				ttl = r.Secret.Auth.LeaseDuration
			}
			s.log.Info("vault token renewed", "method", s.auth.Method, "ttl", time.Duration(ttl)*time.Second)
		case err := <-w.DoneCh():
			if err != nil {
				s.log.Warn("vault token renewal ended", "method", s.auth.Method, "err", err)
			} else {
				s.log.Info("vault token renewal ended", "method", s.auth.Method)
			}
			return nil, false
		}
	}
}

// reloginIfRevoked handles a permission denied that comes from a dead token
// rather than the policy: for AppRole and Kubernetes, when the token no
// longer looks itself up, it logs in again (at most every 10s) and reports
// true so the caller retries once.
func (s *Store) reloginIfRevoked(ctx context.Context, err error) bool {
	if s.auth.Method == "token" || !errors.Is(err, secrets.ErrPermissionDenied) {
		return false
	}
	s.reloginMu.Lock()
	defer s.reloginMu.Unlock()
	if time.Since(s.lastRelogin) < 10*time.Second {
		return false
	}
	if _, lerr := s.client.Auth().Token().LookupSelfWithContext(ctx); lerr == nil ||
		!errors.Is(mapErr("token lookup", "", lerr), secrets.ErrPermissionDenied) {
		return false // the token is alive (or Vault is down): the denial stands
	}
	s.lastRelogin = time.Now()
	auth, lerr := s.login(ctx)
	if lerr != nil {
		s.log.Error("vault login after a revoked token failed", "method", s.auth.Method, "err", lerr)
		return false
	}
	s.log.Warn("vault token was revoked; logged in again", "method", s.auth.Method)
	select { // hand the new token to the renewer, replacing an unread one
	case <-s.relogged:
	default:
	}
	s.relogged <- auth
	return true
}

// checkPath rejects paths Vault would misread.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("vault: path is empty")
	case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/"):
		return fmt.Errorf("vault: path %q must not start or end with a slash", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("vault: path %q has an empty, \".\" or \"..\" element", p)
		}
	}
	return nil
}

// mapErr turns a Vault client error into one wrapping a secrets sentinel.
// Vault's error messages never echo request bodies, so no key can appear.
func mapErr(op, path string, err error) error {
	where := op
	if path != "" {
		where = op + " " + path
	}
	var re *api.ResponseError
	switch {
	case errors.Is(err, api.ErrSecretNotFound):
		return fmt.Errorf("vault: %s: %w", where, secrets.ErrNotFound)
	case errors.As(err, &re):
		msg := strings.Join(strings.Fields(strings.Join(re.Errors, "; ")), " ")
		if re.RawError {
			msg = "(unparsable error body)"
		}
		var kind error
		switch code := re.StatusCode; {
		case code == 403:
			kind = secrets.ErrPermissionDenied
		case code == 404:
			kind = secrets.ErrNotFound
		case code == 400 && strings.Contains(msg, "check-and-set"):
			kind = secrets.ErrConflict
		case code == 429 || code == 412 || code == 472 || code == 473 || code >= 500:
			kind = secrets.ErrUnavailable // throttled, sealed, standby, server error
		default:
			return fmt.Errorf("vault: %s: status %d: %s", where, code, msg)
		}
		return fmt.Errorf("vault: %s: %w: status %d: %s", where, kind, re.StatusCode, msg)
	case errors.Is(err, context.Canceled), isTLSErr(err):
		return fmt.Errorf("vault: %s: %w", where, err) // cancelled, or a TLS setup problem: not retryable
	case errors.Is(err, context.DeadlineExceeded), isNetErr(err):
		return fmt.Errorf("vault: %s: %w: %w", where, secrets.ErrUnavailable, err)
	}
	return fmt.Errorf("vault: %s: %w", where, err)
}

// isTLSErr reports a certificate the client does not trust: a configuration
// problem (CA file, server name), not an outage.
func isTLSErr(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}

func isNetErr(err error) bool {
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// stringMap converts Vault's custom metadata to strings.
func stringMap(m map[string]any) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

// recordData is the KV data of a record in format f.
func recordData(f secrets.Format, r secrets.Record) map[string]any {
	if f == secrets.FormatRaw {
		return map[string]any{"api_key": r.APIKey}
	}
	return map[string]any{
		"api_key": r.APIKey, "key_id": r.KeyID, "key_name": r.KeyName,
		"created_at": r.CreatedAt.UTC().Format(time.RFC3339Nano), "rotation_id": r.RotationID,
	}
}

// Custom metadata entries of raw records, see the package comment.
const (
	entryPrefix = "mrbacd.v"
	// maxPending bounds the entries kept for versions not written yet (left
	// by writers that lost the CAS race or crashed before their data write).
	maxPending = 8
	// Vault's limits on custom metadata.
	maxMetadataKeys     = 64
	maxMetadataValueLen = 512
)

// entry is the value of a raw record's custom metadata entry.
type entry struct {
	KeyID      string `json:"key_id"`
	KeyName    string `json:"key_name"`
	RotationID string `json:"rotation_id"`
	CreatedAt  string `json:"created_at"`
	WrittenAt  string `json:"written_at"`
}

// fingerprint identifies a key without revealing it.
func fingerprint(apiKey string) string {
	sum := sha256.Sum256([]byte("mrbacd record fingerprint\x00" + apiKey))
	return hex.EncodeToString(sum[:8])
}

func entryKey(ver int, fp string) string { return entryPrefix + strconv.Itoa(ver) + "." + fp }

// parseEntryKey splits "mrbacd.v<ver>.<fp>".
func parseEntryKey(k string) (ver int, fp string, ok bool) {
	rest, ok := strings.CutPrefix(k, entryPrefix)
	if !ok {
		return 0, "", false
	}
	vs, fp, ok := strings.Cut(rest, ".")
	if !ok || fp == "" {
		return 0, "", false
	}
	ver, err := strconv.Atoi(vs)
	if err != nil || ver <= 0 {
		return 0, "", false
	}
	return ver, fp, true
}

func newEntry(r secrets.Record) (string, error) {
	b, err := json.Marshal(entry{KeyID: r.KeyID, KeyName: r.KeyName, RotationID: r.RotationID,
		CreatedAt: r.CreatedAt.UTC().Format(time.RFC3339), WrittenAt: time.Now().UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return "", errors.New("encoding the record's metadata")
	}
	if len(b) > maxMetadataValueLen {
		return "", fmt.Errorf("the record's metadata (key_id, key_name, rotation_id, created_at) takes %d bytes, over Vault's %d-byte limit for a custom metadata value", len(b), maxMetadataValueLen)
	}
	return string(b), nil
}

// recordFromEntry rebuilds a raw record from its entry.
func recordFromEntry(apiKey, v string) (secrets.Record, bool) {
	var e entry
	if err := json.Unmarshal([]byte(v), &e); err != nil {
		return secrets.Record{}, false
	}
	return secrets.RecordFromMetadata(apiKey, map[string]string{"key_id": e.KeyID, "key_name": e.KeyName,
		"rotation_id": e.RotationID, "created_at": e.CreatedAt}), true
}

// flatMetadata returns md without the raw records' entries.
func flatMetadata(md map[string]string) map[string]string {
	out := make(map[string]string, len(md))
	for k, v := range md {
		if _, _, ok := parseEntryKey(k); !ok {
			out[k] = v
		}
	}
	return out
}

// Read returns the current record of t.
func (s *Store) Read(ctx context.Context, t secrets.Target) (secrets.Versioned, error) {
	v, err := s.read(ctx, t)
	if s.reloginIfRevoked(ctx, err) {
		v, err = s.read(ctx, t)
	}
	return v, err
}

func (s *Store) read(ctx context.Context, t secrets.Target) (secrets.Versioned, error) {
	if err := checkPath(t.Path); err != nil {
		return secrets.Versioned{}, err
	}
	// One request returns the data and the custom metadata together.
	sec, err := s.kv.Get(ctx, t.Path)
	if err != nil {
		return secrets.Versioned{}, mapErr("read", t.Path, err)
	}
	if sec.Data == nil || sec.VersionMetadata == nil {
		return secrets.Versioned{}, fmt.Errorf("vault: read %s: %w (current version deleted or destroyed)", t.Path, secrets.ErrNotFound)
	}
	ver := sec.VersionMetadata.Version
	md := stringMap(sec.CustomMetadata)
	rec, err := decode(t.Format, sec.Data, md, ver)
	if err != nil {
		return secrets.Versioned{}, fmt.Errorf("vault: read %s: %w", t.Path, err)
	}
	return secrets.Versioned{Record: rec, Version: secrets.Version(strconv.Itoa(ver))}, nil
}

func decode(f secrets.Format, data map[string]any, md map[string]string, ver int) (secrets.Record, error) {
	key, ok := data["api_key"].(string)
	if !ok {
		return secrets.Record{}, errors.New("the stored data has no api_key string")
	}
	if f == secrets.FormatRaw {
		return decodeRaw(key, md, ver)
	}
	b, err := json.Marshal(data)
	if err != nil {
		return secrets.Record{}, errors.New("the stored data is not a record")
	}
	return secrets.Decode(secrets.FormatJSON, b, nil)
}

// decodeRaw finds the metadata of version ver holding key (see the package comment).
func decodeRaw(key string, md map[string]string, ver int) (secrets.Record, error) {
	fp := fingerprint(key)
	if v, ok := md[entryKey(ver, fp)]; ok {
		if r, ok := recordFromEntry(key, v); ok {
			return r, nil
		}
	}
	mv, hasVersion := md["version"]
	if mv == strconv.Itoa(ver) {
		return secrets.RecordFromMetadata(key, md), nil // flat, written after the data
	}
	best, bestVer, entries := "", 0, false
	for k, v := range md {
		ev, efp, ok := parseEntryKey(k)
		if !ok {
			continue
		}
		entries = true
		if efp == fp && ev > bestVer {
			best, bestVer = v, ev
		}
	}
	if bestVer > 0 { // the same key stored at another version (a rollback)
		if r, ok := recordFromEntry(key, best); ok {
			return r, nil
		}
	}
	if !hasVersion && !entries {
		return secrets.RecordFromMetadata(key, md), nil // not written by mrbacd
	}
	return secrets.Record{}, fmt.Errorf("%w: metadata of version %d not written yet (the flat metadata describes version %q; a writer between its requests, or an older mrbacd that crashed there)",
		secrets.ErrUnavailable, ver, mv)
}

// Describe reports existence, the current version, how many versions Vault
// keeps that are neither deleted nor destroyed, and the custom metadata (for
// the raw format: of the current version, without the per-version entries).
func (s *Store) Describe(ctx context.Context, t secrets.Target) (secrets.Description, error) {
	d, err := s.describe(ctx, t)
	if s.reloginIfRevoked(ctx, err) {
		d, err = s.describe(ctx, t)
	}
	return d, err
}

func (s *Store) describe(ctx context.Context, t secrets.Target) (secrets.Description, error) {
	if err := checkPath(t.Path); err != nil {
		return secrets.Description{}, err
	}
	m, err := s.kv.GetMetadata(ctx, t.Path)
	if err != nil {
		err = mapErr("describe", t.Path, err)
		if errors.Is(err, secrets.ErrNotFound) {
			return secrets.Description{}, nil
		}
		return secrets.Description{}, err
	}
	md := stringMap(m.CustomMetadata)
	d := secrets.Description{Metadata: flatMetadata(md)}
	for _, v := range m.Versions {
		if v.DeletionTime.IsZero() && !v.Destroyed {
			d.Versions++
		}
	}
	if live(m) {
		d.Exists = true
		d.Current = secrets.Version(strconv.Itoa(m.CurrentVersion))
		if t.Format == secrets.FormatRaw && d.Metadata["version"] != string(d.Current) {
			resolveCurrent(d.Metadata, md, m.CurrentVersion)
		}
	}
	return d, nil
}

// resolveCurrent sets the flat fields of flat from the entry of version cur
// when there is exactly one; with none or several (a crash after the data
// write, with losers' entries beside it) it removes them rather than show
// another version's.
func resolveCurrent(flat, md map[string]string, cur int) {
	var found []string
	for k, v := range md {
		if ev, _, ok := parseEntryKey(k); ok && ev == cur {
			found = append(found, v)
		}
	}
	for _, k := range []string{"key_id", "key_name", "rotation_id", "created_at", "version"} {
		delete(flat, k)
	}
	if len(found) != 1 {
		return
	}
	if r, ok := recordFromEntry("", found[0]); ok {
		for k, v := range r.Metadata() {
			flat[k] = v
		}
		flat["version"] = strconv.Itoa(cur)
	}
}

// live reports whether the current version holds data.
func live(m *api.KVMetadata) bool {
	if m == nil || m.CurrentVersion == 0 {
		return false
	}
	v, ok := m.Versions[strconv.Itoa(m.CurrentVersion)]
	return ok && v.DeletionTime.IsZero() && !v.Destroyed
}

// Write stores req.Record as a new version with cas = the current version,
// after checking it is req.IfVersion. A retry of a write that already landed
// (same token and key id in the metadata, or the same key in the data) returns
// that version and completes its metadata. A raw write patches the new
// version's metadata before its data (see the package comment).
func (s *Store) Write(ctx context.Context, req secrets.WriteRequest) (secrets.Version, error) {
	v, err := s.write(ctx, req)
	if s.reloginIfRevoked(ctx, err) {
		v, err = s.write(ctx, req) // safe: a partly landed write completes as a retry
	}
	return v, err
}

func (s *Store) write(ctx context.Context, req secrets.WriteRequest) (secrets.Version, error) {
	p := req.Target.Path
	if err := checkPath(p); err != nil {
		return "", err
	}
	m, err := s.kv.GetMetadata(ctx, p)
	if err != nil {
		err = mapErr("write", p, err)
		if !errors.Is(err, secrets.ErrNotFound) {
			return "", err
		}
		m = nil
	}
	cas := 0
	var cur secrets.Version
	var md map[string]string
	if m != nil {
		cas = m.CurrentVersion
		md = stringMap(m.CustomMetadata)
		if live(m) {
			cur = secrets.Version(strconv.Itoa(cas))
		}
	}
	raw := req.Target.Format == secrets.FormatRaw
	if cur != "" && req.Token != "" {
		if md["rotation_id"] == req.Token && md["key_id"] == req.Record.KeyID && md["version"] == string(cur) &&
			(!raw || md[entryKey(cas, fingerprint(req.Record.APIKey))] != "") {
			return cur, nil // the retried write landed and is complete
		}
	}
	if cur != req.IfVersion {
		if cur != "" && req.Token != "" {
			if done, err := s.finishLanded(ctx, req, cas, md); err != nil || done {
				if err != nil {
					return "", err
				}
				return cur, nil
			}
		}
		return "", fmt.Errorf("vault: write %s: %w: current version %q, expected %q", p, secrets.ErrConflict, cur, req.IfVersion)
	}
	if raw {
		if err := s.prepareRaw(ctx, p, m != nil, md, req.Record, cas); err != nil {
			return "", err
		}
	}
	sec, err := s.kv.Put(ctx, p, recordData(req.Target.Format, req.Record), api.WithCheckAndSet(cas))
	if err != nil {
		return "", mapErr("write", p, err)
	}
	if sec == nil || sec.VersionMetadata == nil {
		return "", fmt.Errorf("vault: write %s: the response holds no version", p)
	}
	ver := sec.VersionMetadata.Version
	if err := s.putMetadata(ctx, p, req.Target.Format, req.Record, ver, md); err != nil {
		// The data landed (and for raw, with its metadata); a retry of
		// this request completes the rest.
		return "", err
	}
	return secrets.Version(strconv.Itoa(ver)), nil
}

// finishLanded checks whether the current version holds exactly req's key (a
// retry whose first attempt wrote the data but not all the metadata) and, if
// so, writes the metadata.
func (s *Store) finishLanded(ctx context.Context, req secrets.WriteRequest, ver int, md map[string]string) (bool, error) {
	sec, err := s.kv.GetVersion(ctx, req.Target.Path, ver)
	if err != nil {
		return false, mapErr("write", req.Target.Path, err)
	}
	if sec == nil || sec.Data == nil {
		return false, nil
	}
	key, _ := sec.Data["api_key"].(string)
	if key == "" || key != req.Record.APIKey {
		return false, nil
	}
	if req.Target.Format == secrets.FormatJSON {
		if id, _ := sec.Data["key_id"].(string); id != req.Record.KeyID {
			return false, nil
		}
	}
	return true, s.putMetadata(ctx, req.Target.Path, req.Target.Format, req.Record, ver, md)
}

// prepareRaw patches the entry of version cas+1 for r before the data write,
// pruning entries no reader needs any more: versions older than the previous
// one, losers' entries of the current version, and all but the newest
// maxPending entries of versions not written yet.
// Without metadata yet (a first write) it creates it.
func (s *Store) prepareRaw(ctx context.Context, p string, exists bool, md map[string]string, r secrets.Record, cas int) error {
	e, err := newEntry(r)
	if err != nil {
		return fmt.Errorf("vault: write %s: %w", p, err)
	}
	own := entryKey(cas+1, fingerprint(r.APIKey))
	patch := map[string]any{"managed-by": secrets.ManagedBy, own: e}
	type pending struct{ key, at string }
	var pend []pending
	for k, v := range md {
		ev, _, ok := parseEntryKey(k)
		switch {
		case !ok || k == own:
		case ev < cas-1:
			patch[k] = nil
		case ev == cas && md["version"] == strconv.Itoa(cas):
			// The flat copy names the record of version cas: the other
			// entries of cas are racing writers' that lost.
			var e entry
			if json.Unmarshal([]byte(v), &e) != nil || e.KeyID != md["key_id"] || e.RotationID != md["rotation_id"] {
				patch[k] = nil
			}
		case ev > cas:
			var pe entry
			_ = json.Unmarshal([]byte(v), &pe)
			pend = append(pend, pending{k, pe.WrittenAt})
		}
	}
	sort.Slice(pend, func(i, j int) bool { return pend[i].at > pend[j].at })
	for i, pe := range pend {
		if i >= maxPending-1 {
			patch[pe.key] = nil
		}
	}
	if n := keysAfter(md, patch); n > maxMetadataKeys {
		return fmt.Errorf("vault: write %s: the path's custom metadata would hold %d keys, over Vault's limit of %d: remove keys mrbacd does not use", p, n, maxMetadataKeys)
	}
	if !exists {
		err := s.createMetadata(ctx, p, patch)
		if err == nil {
			return nil
		}
		if !errors.Is(err, secrets.ErrPermissionDenied) {
			return err
		}
		// Another writer created it since (a second create needs
		// "update"), or the policy lacks "create": patch, and explain a 404.
		if perr := s.patchMetadata(ctx, p, patch); perr != nil {
			if errors.Is(perr, secrets.ErrNotFound) {
				return fmt.Errorf("%w (the raw format's first write creates the metadata first: grant \"create\" on the metadata path)", err)
			}
			return perr
		}
		return nil
	}
	return s.patchMetadata(ctx, p, patch)
}

// keysAfter counts the keys md holds after a merge patch.
func keysAfter(md map[string]string, patch map[string]any) int {
	n := len(md)
	for k, v := range patch {
		_, had := md[k]
		switch {
		case v == nil && had:
			n--
		case v != nil && !had:
			n++
		}
	}
	return n
}

func (s *Store) createMetadata(ctx context.Context, p string, cm map[string]any) error {
	vals := map[string]any{}
	for k, v := range cm {
		if v != nil {
			vals[k] = v
		}
	}
	// The KV helper's PutMetadata would also send max_versions and
	// cas_required; only the custom metadata is ours to set.
	_, err := s.client.Logical().WriteWithContext(ctx, s.mount+"/metadata/"+p, map[string]any{"custom_metadata": vals})
	if err != nil {
		return mapErr("write metadata", p, err)
	}
	return nil
}

func (s *Store) patchMetadata(ctx context.Context, p string, cm map[string]any) error {
	if err := s.kv.PatchMetadata(ctx, p, api.KVMetadataPatchInput{CustomMetadata: cm}); err != nil {
		return mapErr("write metadata", p, err)
	}
	return nil
}

// putMetadata writes the flat metadata of version ver after its data write;
// for the raw format also (again) the entry of ver, and prunes entries older
// than the previous version and the entries of ver left by writers who lost.
func (s *Store) putMetadata(ctx context.Context, p string, f secrets.Format, r secrets.Record, ver int, md map[string]string) error {
	cm := map[string]any{}
	for k, v := range r.Metadata() {
		if v == "" {
			cm[k] = nil // Vault refuses empty values; null removes a stale one (merge patch)
		} else {
			cm[k] = v
		}
	}
	cm["version"] = strconv.Itoa(ver)
	if f == secrets.FormatRaw {
		e, err := newEntry(r)
		if err != nil {
			return fmt.Errorf("vault: write %s: %w", p, err)
		}
		own := entryKey(ver, fingerprint(r.APIKey))
		cm[own] = e
		for k := range md {
			if ev, _, ok := parseEntryKey(k); ok && k != own && (ev < ver-1 || ev == ver) {
				cm[k] = nil
			}
		}
	}
	return s.patchMetadata(ctx, p, cm)
}
