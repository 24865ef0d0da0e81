package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"

	"github.com/mrbacd/mrbacd/journal"
)

// Gateway is the role-enforcing proxy. It is an http.Handler; Run serves it
// on Options.Listen. Create it with New and stop it with Close (Run closes
// it itself). Reload swaps clients, roles and prices while serving.
type Gateway struct {
	base  string // upstream base URL, no trailing slash
	urls  map[string]*url.URL
	rt    http.RoundTripper
	usage *writeBehind
	// leases holds the budgets leased from the journal (nil without one).
	leases *leaser
	// leaseWaits counts requests that waited for a lease fetch (misses).
	leaseWaits atomic.Int64
	// unavailLogged is when a 503 for an unreachable journal was last logged.
	unavailLogged atomic.Value
	m             *metrics
	lm            *leaseMetrics
	log           *slog.Logger
	now           func() time.Time
	opts          Options

	// snap is what Reload swaps: principals, roles, key caches, limits.
	snap     atomic.Pointer[snapshot]
	reloadMu sync.Mutex

	bg        context.Context // ends at Close; pollers run under it
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	// draining is set once Serve's context ended: Ready answers "draining"
	// while requests in flight finish.
	draining atomic.Bool

	// onOverhead, when set (tests, benchmarks), sees each request's total
	// and upstream time.
	onOverhead func(route string, total, upstream time.Duration)
}

// snapshot is one configuration of clients and their limits. Requests use
// the snapshot current when they arrived.
type snapshot struct {
	authz   authorizer
	clients []*principal
	wss     map[string]*workspace
	keys    map[string]*keyCache
	price   func(string) (Price, bool)
	maxBody int64
}

// New validates o, reads each workspace's upstream key and loads the current
// usage windows, then starts the key pollers and the usage writer. A key that
// cannot be read yet is retried by its poller (requests of that workspace get
// 503 meanwhile); usage that cannot be loaded is an error, since starting
// from zero could overspend.
func New(ctx context.Context, o Options) (*Gateway, error) {
	if o.UpstreamURL == "" {
		return nil, errors.New("gateway: upstream URL is required")
	}
	u, err := url.Parse(o.UpstreamURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("gateway: upstream URL %q must be an http(s) URL", o.UpstreamURL)
	}
	if o.KeyPollInterval <= 0 {
		o.KeyPollInterval = DefaultKeyPollInterval
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	if o.HangupDrainTimeout <= 0 {
		o.HangupDrainTimeout = DefaultHangupDrainTimeout
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.LeaseWait <= 0 {
		o.LeaseWait = DefaultLeaseWait
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Transport == nil {
		o.Transport = NewTransport()
	}
	g := &Gateway{
		base: strings.TrimRight(o.UpstreamURL, "/"),
		rt:   o.Transport,
		log:  o.Logger,
		now:  o.Now,
		opts: o,
	}
	g.urls = map[string]*url.URL{}
	for _, p := range []string{pathChat, pathEmbeddings, pathModels} {
		pu, err := url.Parse(g.base + p)
		if err != nil {
			return nil, fmt.Errorf("gateway: upstream URL: %w", err)
		}
		g.urls[p] = pu
	}
	g.unavailLogged.Store(time.Time{})
	g.bg, g.cancel = context.WithCancel(context.Background())
	if o.Usage != nil {
		g.usage = &writeBehind{store: o.Usage, pending: map[usageKey]usageDelta{}}
		g.leases = &leaser{store: o.Usage, wb: g.usage, owner: newOwner(), ttl: o.LeaseTTL,
			every: o.FlushInterval, now: o.Now, log: o.Logger, bg: g.bg, holds: map[holdKey]*holding{}}
	}
	sn, fresh, err := g.build(o, nil)
	if err != nil {
		g.cancel()
		return nil, err
	}
	g.startKeys(ctx, fresh)
	g.snap.Store(sn)
	if err := g.syncUsage(ctx); err != nil {
		g.cancel()
		g.wg.Wait()
		return nil, err
	}
	if g.m, err = newMetrics(o.Registerer); err != nil {
		g.cancel()
		g.wg.Wait()
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	if g.lm, err = newLeaseMetrics(o.Registerer, func() float64 { return float64(g.leaseWaits.Load()) }); err != nil {
		g.cancel()
		g.wg.Wait()
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	if g.leases != nil {
		g.leases.m = g.lm
	}
	if g.usage != nil {
		g.wg.Add(1)
		go func() { defer g.wg.Done(); g.persistLoop(g.bg, o.FlushInterval) }()
	}
	return g, nil
}

// build compiles o's clients and roles into a snapshot. Clients keep the
// counters they had in old (by name); workspaces keep their key cache when
// their store and target are unchanged. fresh lists the new key caches.
func (g *Gateway) build(o Options, old *snapshot) (*snapshot, []*keyCache, error) {
	sn := &snapshot{
		authz:   authorizer{byHash: make(map[[32]byte]*principal, len(o.Clients))},
		keys:    map[string]*keyCache{},
		wss:     map[string]*workspace{},
		price:   o.Price,
		maxBody: o.MaxBodyBytes,
	}
	if sn.maxBody <= 0 {
		sn.maxBody = DefaultMaxBodyBytes
	}
	if sn.price == nil {
		sn.price = func(string) (Price, bool) { return Price{}, false }
	}
	oldByName := map[string]*principal{}
	if old != nil {
		for _, p := range old.clients {
			oldByName[p.name] = p
		}
	}
	roles := map[string]*role{}
	for name, r := range o.Roles {
		roles[name] = compileRole(name, r)
	}
	for name, w := range o.Workspaces {
		if w.RPM < 0 {
			return nil, nil, fmt.Errorf("gateway: workspace %s: rpm %d is negative", name, w.RPM)
		}
		var win *rpmWindow // a workspace keeps its rpm window across reloads
		if old != nil && old.wss[name] != nil {
			win = old.wss[name].rpm
		}
		sn.wss[name] = compileWorkspace(name, w, win)
	}
	var fresh []*keyCache
	names := map[string]bool{}
	for _, c := range o.Clients {
		if c.Name == "" {
			return nil, nil, errors.New("gateway: a client has no name")
		}
		if names[c.Name] {
			return nil, nil, fmt.Errorf("gateway: duplicate client %s", c.Name)
		}
		names[c.Name] = true
		r, ok := roles[c.Role]
		if !ok {
			return nil, nil, fmt.Errorf("gateway: client %s: unknown role %q", c.Name, c.Role)
		}
		if c.TokenSHA256 == ([32]byte{}) {
			return nil, nil, fmt.Errorf("gateway: client %s: no token hash", c.Name)
		}
		if other, dup := sn.authz.byHash[c.TokenSHA256]; dup {
			return nil, nil, fmt.Errorf("gateway: clients %s and %s share a token", other.name, c.Name)
		}
		kc, ok := sn.keys[c.Workspace]
		if !ok {
			up, found := o.Upstreams[c.Workspace]
			if !found || up.Store == nil {
				return nil, nil, fmt.Errorf("gateway: client %s: workspace %q has no upstream key", c.Name, c.Workspace)
			}
			if old != nil {
				if okc := old.keys[c.Workspace]; okc != nil && sameStore(okc.store, up.Store) && okc.target == up.Target {
					kc = okc
				}
			}
			if kc == nil {
				kc = &keyCache{workspace: c.Workspace, keyName: up.KeyName, store: up.Store, target: up.Target, log: g.log}
				fresh = append(fresh, kc)
			}
			sn.keys[c.Workspace] = kc
		}
		l := &ledger{}
		if op := oldByName[c.Name]; op != nil {
			l = op.ledger
		} else if g.leases != nil {
			l.lease = &clientLease{lz: g.leases, sub: usageSubject(c.Name)}
		}
		ws := sn.wss[c.Workspace]
		if ws == nil {
			ws = compileWorkspace(c.Workspace, Workspace{}, nil)
			sn.wss[c.Workspace] = ws
		}
		p := &principal{name: c.Name, workspace: c.Workspace, hash: c.TokenSHA256, role: r, ws: ws, ledger: l, keys: kc}
		if g.usage != nil {
			sub := usageSubject(c.Name)
			p.queue = func(s settled) { g.usage.add(sub, s) }
		}
		sn.authz.byHash[c.TokenSHA256] = p
		sn.clients = append(sn.clients, p)
	}
	return sn, fresh, nil
}

// sameStore reports whether a and b are the same store (never panicking on
// incomparable dynamic types).
func sameStore(a, b KeyReader) bool {
	ta := reflect.TypeOf(a)
	return ta == reflect.TypeOf(b) && ta != nil && ta.Comparable() && a == b
}

// startKeys reads new key caches once and starts their pollers; each
// poller ends with the gateway or when a reload drops its workspace.
func (g *Gateway) startKeys(ctx context.Context, fresh []*keyCache) {
	for _, kc := range fresh {
		if _, err := kc.reload(ctx, nil); err != nil {
			g.log.Warn("gateway upstream key not readable yet; will retry", "workspace", kc.workspace, "key_name", kc.keyName, "err", err)
		}
		pctx, stop := context.WithCancel(g.bg)
		kc.stop = stop
		g.wg.Add(1)
		go func() { defer g.wg.Done(); kc.run(pctx, g.opts.KeyPollInterval) }()
	}
}

// Reload replaces the clients, roles, workspace limits, prices, upstream key
// locations and body limit with o's, atomically for new requests (requests in flight
// finish under the old ones). Clients keep their counters by name, so a
// reload neither resets nor loses budgets; workspaces keep their rpm
// window by name (restarted when their rpm changes). The upstream URL, transport,
// journal, metrics, logger, intervals and timeouts (ReadTimeout,
// HangupDrainTimeout) are fixed at New; o's values for them are ignored. On error nothing changes.
func (g *Gateway) Reload(ctx context.Context, o Options) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	old := g.snap.Load()
	sn, fresh, err := g.build(o, old)
	if err != nil {
		return err
	}
	if g.bg.Err() != nil {
		return errors.New("gateway: closed")
	}
	g.startKeys(ctx, fresh)
	g.snap.Store(sn)
	for ws, kc := range old.keys {
		if sn.keys[ws] != kc && kc.stop != nil {
			kc.stop()
		}
	}
	g.log.Info("gateway reloaded", "clients", len(sn.clients), "workspaces", len(sn.keys))
	return nil
}

// syncUsage sets every client's current windows to the journal's totals
// plus what this gateway settled but has not written yet. At start that
// loads the windows; afterwards (after each flush) it adds what other
// gateway instances sharing the journal have spent, so scaled-out gateways
// hold one budget (up to one flush interval behind each other).
func (g *Gateway) syncUsage(ctx context.Context) error {
	if g.usage == nil {
		return nil
	}
	now := g.now()
	day, hour := dayOf(now), hourOf(now)
	dw, hw := dayWindow(day), hourWindow(hour)
	dm, err := g.opts.Usage.LoadUsage(ctx, dw)
	if err != nil {
		return fmt.Errorf("gateway: load usage %s: %w", dw, err)
	}
	hm, err := g.opts.Usage.LoadUsage(ctx, hw)
	if err != nil {
		return fmt.Errorf("gateway: load usage %s: %w", hw, err)
	}
	for _, p := range g.snap.Load().clients {
		sub := usageSubject(p.name)
		d, h := dm[journal.UsageKey{Subject: sub, Window: dw}], hm[journal.UsageKey{Subject: sub, Window: hw}]
		dk, hk := usageKey{sub, dw}, usageKey{sub, hw}
		p.ledger.sync(now, day, hour, func() (int64, float64, float64) {
			pd, ph := g.usage.pendingOf(dk), g.usage.pendingOf(hk)
			return d.Tokens + pd.tokens, d.USD + pd.usd, h.USD + ph.usd
		})
	}
	return nil
}

// persist reports settled usage (through the budget leases, the rest
// directly), renews the leases and syncs the windows, one pass at a time.
func (g *Gateway) persist(ctx context.Context) error {
	g.usage.flushMu.Lock()
	defer g.usage.flushMu.Unlock()
	if err := g.report(ctx, false); err != nil {
		return err
	}
	return g.syncUsage(ctx)
}

// report hands the leases their spend (refresh; final returns every
// remainder) and writes the usage of counters no lease covers. The caller
// holds flushMu.
func (g *Gateway) report(ctx context.Context, final bool) error {
	lerr := g.leases.refresh(ctx, final)
	if err := g.usage.flush(ctx, g.leases.covers); err != nil {
		return err
	}
	return lerr
}

// persistLoop runs persist every interval until ctx ends.
func (g *Gateway) persistLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := g.persist(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn("gateway usage persistence failed; will retry", "err", err)
			}
		}
	}
}

// NewTransport returns the tuned upstream transport: keep-alives, a large
// idle pool per host, no transparent compression (usage is parsed from the
// body and streams must not be buffered).
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          2048,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		WriteBufferSize:       16 << 10,
		ReadBufferSize:        16 << 10,
	}
}

// Flush writes pending usage to the store now.
func (g *Gateway) Flush(ctx context.Context) error {
	if g.usage == nil {
		return nil
	}
	g.usage.flushMu.Lock()
	defer g.usage.flushMu.Unlock()
	if err := g.report(ctx, g.bg.Err() != nil); err != nil {
		return fmt.Errorf("gateway: flush usage: %w", err)
	}
	return nil
}

// Close stops the pollers and writes pending usage. Call it after the
// server has drained; it is safe to call more than once.
func (g *Gateway) Close(ctx context.Context) error {
	g.closeOnce.Do(func() {
		// Under reloadMu so a concurrent Reload either starts its pollers
		// (wg.Add) before the Wait below or sees the gateway closed.
		g.reloadMu.Lock()
		g.cancel()
		g.reloadMu.Unlock()
		g.wg.Wait()
		g.leases.wait()
		// Requests still in flight (a drain past ShutdownTimeout, a
		// client's answer still read after it hung up) are charged their
		// whole reservation now: their real usage would settle after the
		// last flush and be lost, and the upstream bills them.
		for _, p := range g.snap.Load().clients {
			p.ledger.chargeOutstanding(p.queue)
		}
		g.closeErr = g.Flush(ctx)
		if t, ok := g.rt.(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
	})
	return g.closeErr
}

// Run serves on Options.Listen until ctx ends, then drains requests in
// flight (bounded by ShutdownTimeout) and closes the gateway.
func (g *Gateway) Run(ctx context.Context) error {
	if g.opts.Listen == "" {
		return errors.New("gateway: no listen address")
	}
	ln, err := net.Listen("tcp", g.opts.Listen)
	if err != nil {
		return fmt.Errorf("gateway: listen: %w", err)
	}
	return g.Serve(ctx, ln)
}

// Server limits against slow and idle clients (the body's bound is
// Options.ReadTimeout, applied per request by the handler).
const (
	maxHeaderTimeout = 10 * time.Second
	maxHeaderBytes   = 64 << 10
)

// newServer is the http.Server Serve runs: headers must arrive within
// min(ReadTimeout, 10s), idle keep-alive connections close after twice
// ReadTimeout (a minute by default), headers are bounded to 64 KiB. There is no ReadTimeout nor WriteTimeout
// on the server: net/http's ReadTimeout would cancel a long stream's
// context once it passed, and a WriteTimeout would cut a stream that
// flows; the handler sets per-request read and write deadlines instead
// (armRead, armWrite).
func (g *Gateway) newServer(ctx context.Context) *http.Server {
	return &http.Server{
		Handler:           g,
		ReadHeaderTimeout: min(maxHeaderTimeout, g.opts.ReadTimeout),
		IdleTimeout:       2 * g.opts.ReadTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
}

// Serve is Run on a listener of the caller's. It serves at most
// Options.MaxConnections connections at once: beyond them it stops
// accepting, and new connections wait in the kernel's backlog.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	ln = netutil.LimitListener(ln, g.opts.MaxConnections)
	srv := g.newServer(ctx)
	g.log.Info("gateway listening", "addr", ln.Addr().String(), "upstream", g.base, "clients", len(g.snap.Load().clients))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
		g.draining.Store(true)
		sctx, cancel := context.WithTimeout(context.Background(), g.opts.ShutdownTimeout)
		if err := srv.Shutdown(sctx); err != nil {
			g.log.Warn("gateway drain timed out; closing connections", "err", err)
			srv.Close()
		}
		cancel()
		<-errc
	}
	cctx, cancel := context.WithTimeout(context.Background(), g.opts.ShutdownTimeout)
	defer cancel()
	cerr := g.Close(cctx)
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("gateway: serve: %w", serveErr)
	}
	return cerr
}

// drain discards up to 64 KiB of a body so the connection can be reused.
func drain(rc io.ReadCloser) {
	io.CopyN(io.Discard, rc, 64<<10)
	rc.Close()
}
