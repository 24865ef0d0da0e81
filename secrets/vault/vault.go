// Package vault stores managed-key records in HashiCorp Vault's KV v2 engine.
//
// Layout of one target at mount M and path P:
//   - data (M/data/P): for the JSON format the record's fields
//     {"api_key", "key_id", "key_name", "created_at", "rotation_id"}; for the
//     raw format only {"api_key"}. Either way a consumer reads field api_key.
//   - custom metadata (M/metadata/P): managed-by, key_id, key_name,
//     rotation_id, created_at and "version", the KV version they describe
//     (a copy for people); for the raw format also one
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
// A raw version without its entry (its metadata write was cut off) fails
// with secrets.ErrUnavailable until a retry of that write (same record)
// completes it. A KV secret mrbacd never wrote (no "version", no entry) is
// read with whatever custom metadata it has. A version whose key is
// recorded at another version (a rollback copied it) reads with that entry.
//
// JSON records carry everything in the data; their metadata is written after
// the data and is informational only.
//
// The policy mrbacd needs on a path: data "create", "update", "read";
// metadata "read", "patch", and "create" for the raw format.
//
// Files: auth.go logs in and keeps the token alive; kv.go is the KV write
// protocol above; vault.go opens the store and maps Vault's errors.
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
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/mrbacd/mrbacd/secrets"
)

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
