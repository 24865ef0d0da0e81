package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/secrets"
)

// Defaults of Options fields left zero.
const (
	DefaultMaxBodyBytes    = 1 << 20
	DefaultKeyPollInterval = 2 * time.Second
	DefaultFlushInterval   = time.Second
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultReadTimeout bounds reading a request's headers and body.
	DefaultReadTimeout = 30 * time.Second
	// DefaultMaxConnections caps the connections served at once.
	DefaultMaxConnections = 10000
	// DefaultHangupDrainTimeout bounds how long the upstream answer of a
	// client that hung up is still read to learn its usage.
	DefaultHangupDrainTimeout = 5 * time.Minute
)

// KeyReader is what the gateway needs of a secret store: the current record
// and the current version (secrets.Store satisfies it).
type KeyReader interface {
	Read(ctx context.Context, t secrets.Target) (secrets.Versioned, error)
	Describe(ctx context.Context, t secrets.Target) (secrets.Description, error)
}

// UsageStore is where usage counters persist (the journal, *journal.DB,
// satisfies it). A window is "day:YYYY-MM-DD" or "hour:YYYY-MM-DDTHH" (UTC);
// a subject is "gateway-client:NAME".
type UsageStore interface {
	// AddUsage adds to one counter.
	AddUsage(ctx context.Context, subject, window string, tokens int64, usd float64) error
	// LoadUsage returns every counter whose window starts with windowPrefix.
	LoadUsage(ctx context.Context, windowPrefix string) (map[journal.UsageKey]journal.UsageTotal, error)
	// LeaseBudget settles and renews this instance's grant of a budget
	// (see the package doc, Budget leases).
	LeaseBudget(ctx context.Context, r journal.LeaseRequest) (journal.LeaseResult, error)
}

// Role is a set of limits; zero means "no limit" for every number.
type Role struct {
	// Models are allowed model patterns: a name, "*" or "prefix*".
	Models []string
	// MaxTokensPerRequest caps max_tokens; it is injected when a request has none.
	MaxTokensPerRequest int
	// DailyTokens caps prompt plus completion tokens per UTC day.
	DailyTokens int64
	// RPM caps requests in any 60 seconds.
	RPM int
	// HourlyUSD and DailyUSD cap spend per UTC hour and day at Options.Price.
	HourlyUSD float64
	DailyUSD  float64
	// MaxConcurrent caps each client's requests in flight (429 when full);
	// a request whose client hung up holds its slot until its upstream
	// answer is read.
	MaxConcurrent int
}

// Workspace is a workspace's own limits, on top of its clients' roles.
type Workspace struct {
	// Models are the workspace's allowed model patterns ("name", "*",
	// "prefix*"); empty means no restriction beyond the roles'.
	Models []string
	// RPM caps the requests of all the workspace's clients together in any
	// 60 seconds, per gateway instance; zero means no limit.
	RPM int
}

// Client is one principal: a name, its role and workspace, and the SHA-256
// of its bearer token.
type Client struct {
	Name      string
	Role      string
	Workspace string
	// TokenSHA256 is the SHA-256 of the bearer token (see HashToken).
	TokenSHA256 [32]byte
}

// Upstream says where a workspace's managed key is read.
type Upstream struct {
	// KeyName is the managed key's config name (for logs).
	KeyName string
	// Store and Target locate the key's record.
	Store  KeyReader
	Target secrets.Target
}

// Price is USD per million tokens.
type Price struct {
	InputPerM  float64 // prompt tokens
	OutputPerM float64 // completion tokens
}

// Options configures a Gateway. Build them from the config with FromConfig,
// or directly in tests.
type Options struct {
	// Listen is the address Run serves on.
	Listen string
	// UpstreamURL is Mistral's base URL (e.g. https://api.mistral.ai).
	UpstreamURL string
	// MaxBodyBytes bounds a request body (413 above); default 1 MiB.
	MaxBodyBytes int64
	// ReadTimeout bounds reading a request (headers and body) from its
	// start; a client that stalls is cut off. It also bounds each write
	// of an answer that makes no progress (a client that stops reading),
	// never a stream that flows. Default 30s.
	ReadTimeout time.Duration
	// MaxConnections caps the connections Serve serves at once; beyond it
	// new connections wait in the kernel's accept backlog (default 10000).
	MaxConnections int
	// HangupDrainTimeout bounds how long the gateway keeps reading an
	// upstream answer after its client hung up, to settle to the usage
	// the upstream bills (default 5m); past it the whole reservation is
	// charged.
	HangupDrainTimeout time.Duration
	// Clients are the principals; each names a role and a workspace.
	Clients []Client
	// Roles by name.
	Roles map[string]Role
	// Workspaces holds workspace limits by name; a workspace not listed has
	// none.
	Workspaces map[string]Workspace
	// Upstreams maps a workspace name to where its key is read.
	Upstreams map[string]Upstream
	// Price returns a model's price; nil or !ok means unknown. A role with a
	// USD guard refuses models of unknown price.
	Price func(model string) (Price, bool)
	// Usage persists counters; nil keeps them in memory only.
	Usage UsageStore
	// Registerer receives the gateway's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Logger gets access logs (debug) and warnings; nil discards.
	Logger *slog.Logger
	// Transport is the upstream round tripper; nil builds a tuned
	// *http.Transport (keep-alives, large idle pool per host).
	Transport http.RoundTripper
	// KeyPollInterval is how often each upstream key's store version is
	// checked (default 2s).
	KeyPollInterval time.Duration
	// FlushInterval is how often usage is written behind (default 1s).
	FlushInterval time.Duration
	// ShutdownTimeout bounds Run's drain after its context ends (default 10s).
	ShutdownTimeout time.Duration
	// LeaseTTL is the life of a budget grant not renewed (default 15s):
	// the grant of an instance that crashed is charged in full then.
	LeaseTTL time.Duration
	// LeaseWait bounds each wait of a request for budget fetched from the
	// journal (default 1s; a request waits at most twice).
	LeaseWait time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Deps are the components FromConfig wires in.
type Deps struct {
	// Stores maps a backend name ("vault", "aws", "file") to its store.
	Stores map[string]KeyReader
	// Usage is the journal (Options.Usage).
	Usage UsageStore
	// Registerer receives the metrics (Options.Registerer).
	Registerer prometheus.Registerer
	// Logger is Options.Logger.
	Logger *slog.Logger
}

// FromConfig builds Options from a loaded config. Workspaces carry their
// models and rpm. Client tokens given by
// token_file or token_env are read and hashed here; the plaintext is not kept.
// Each client's workspace gets the first keys: entry of that workspace as its
// upstream key.
func FromConfig(cfg *config.Config, deps Deps) (Options, error) {
	if cfg == nil {
		return Options{}, errors.New("gateway: nil config")
	}
	o := Options{
		Listen:          cfg.Gateway.Listen,
		UpstreamURL:     cfg.Mistral.BaseURL,
		MaxBodyBytes:    cfg.Gateway.MaxBodyBytes,
		ReadTimeout:     cfg.Gateway.ReadTimeout.D(),
		MaxConnections:  cfg.Gateway.MaxConnections,
		Roles:           make(map[string]Role, len(cfg.Roles)),
		Workspaces:      make(map[string]Workspace, len(cfg.Workspaces)),
		Upstreams:       map[string]Upstream{},
		Usage:           deps.Usage,
		Registerer:      deps.Registerer,
		Logger:          deps.Logger,
		ShutdownTimeout: cfg.ShutdownTimeout.D(),
		Price: func(model string) (Price, bool) {
			p, ok := cfg.Price(model)
			return Price{InputPerM: p.InputPerM, OutputPerM: p.OutputPerM}, ok
		},
	}
	for name, r := range cfg.Roles {
		o.Roles[name] = Role{
			Models: append([]string(nil), r.Models...), MaxTokensPerRequest: r.MaxTokensPerRequest,
			DailyTokens: r.DailyTokens, RPM: r.RPM, HourlyUSD: r.HourlyUSD, DailyUSD: r.DailyUSD,
			MaxConcurrent: r.MaxConcurrent,
		}
	}
	for _, w := range cfg.Workspaces {
		o.Workspaces[w.Name] = Workspace{Models: append([]string(nil), w.Models...), RPM: w.RPM}
	}
	for i, cl := range cfg.Gateway.Clients {
		c := Client{Name: cl.Name, Role: cl.Role, Workspace: cl.Workspace}
		if cl.TokenSHA256 != "" {
			b, err := hex.DecodeString(strings.TrimSpace(cl.TokenSHA256))
			if err != nil || len(b) != sha256.Size {
				return Options{}, fmt.Errorf("gateway.clients[%d] %s: token_sha256 must be 64 hex digits", i, cl.Name)
			}
			copy(c.TokenSHA256[:], b)
		} else {
			tok, err := config.ResolveSecret(cl.TokenEnv, cl.TokenFile)
			if err != nil {
				return Options{}, fmt.Errorf("gateway.clients[%d] %s: token: %w", i, cl.Name, err)
			}
			c.TokenSHA256 = sha256.Sum256([]byte(tok))
		}
		o.Clients = append(o.Clients, c)
		if _, done := o.Upstreams[cl.Workspace]; done {
			continue
		}
		up, err := upstreamFor(cfg, deps, cl.Workspace)
		if err != nil {
			return Options{}, fmt.Errorf("gateway.clients[%d] %s: %w", i, cl.Name, err)
		}
		o.Upstreams[cl.Workspace] = up
	}
	return o, nil
}

// upstreamFor picks the first keys: entry of workspace ws.
func upstreamFor(cfg *config.Config, deps Deps, ws string) (Upstream, error) {
	for _, k := range cfg.Keys {
		if k.Workspace != ws {
			continue
		}
		st, ok := deps.Stores[k.Store.Backend]
		if !ok || st == nil {
			return Upstream{}, fmt.Errorf("key %s: secret store %q is not configured", k.Name, k.Store.Backend)
		}
		f := secrets.FormatJSON
		if k.Store.ValueFormat == "raw" {
			f = secrets.FormatRaw
		}
		return Upstream{KeyName: k.Name, Store: st, Target: secrets.Target{Path: k.Store.Location(), Format: f}}, nil
	}
	return Upstream{}, fmt.Errorf("workspace %s has no managed key (keys:) to send upstream", ws)
}

// HashToken returns the SHA-256 of a bearer token, as Client.TokenSHA256 holds it.
func HashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }
