package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/daemon"
	"github.com/mrbacd/mrbacd/gateway"
	"github.com/mrbacd/mrbacd/metrics"
)

// GatewayOptions configures ServeGateway.
type GatewayOptions struct {
	// Config is the loaded config; its Path is read again on SIGHUP.
	Config *config.Config
	// Listen, when set, overrides gateway.listen (also after a reload).
	Listen  string
	Version string
	Logger  *slog.Logger
	// Listening, when set, is told the address served once it is bound.
	Listening func(addr net.Addr)
}

// ServeGateway is `mrbacd gateway`: the gateway of a config alone (no
// scheduler) until ctx ends, then drains requests in flight and flushes
// usage to the journal. SIGHUP reloads it through the daemon's reload path
// (gatewayService.reload). The metrics listener runs too when
// metrics.listen is set.
func ServeGateway(ctx context.Context, opts GatewayOptions) error {
	cfg, log := opts.Config, opts.Logger
	if opts.Listen != "" {
		cfg.Gateway.Listen = opts.Listen
	}
	db, err := openJournal(ctx, cfg, false, log)
	if err != nil {
		return err
	}
	defer db.Close()
	m := metrics.New(opts.Version, log)
	env := daemon.Env{Config: cfg, Journal: db, Metrics: m, Logger: log}
	var running atomic.Pointer[gateway.Gateway] // set once the gateway is built
	if cfg.Metrics.Listen != "" {
		ready := func(ctx context.Context) error {
			gw := running.Load()
			if gw == nil {
				return metrics.NotReady("gateway starting", nil)
			}
			return gw.Ready(ctx)
		}
		ms, err := metrics.Listen(cfg.Metrics.Listen, m, db.Ping, log, metrics.WithReady(ready))
		if err != nil {
			return err
		}
		log.Info("metrics listening", "metrics_listen", ms.Addr())
		go func() {
			if err := ms.Serve(); err != nil {
				log.Error("metrics listener failed", "err", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ms.Shutdown(sctx)
		}()
	}
	gs, err := startGateway(ctx, env)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	running.Store(gs.gw)
	if opts.Listening != nil {
		opts.Listening(gs.ln.Addr())
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				next, err := config.Load(cfg.Path)
				if err != nil {
					log.Error("gateway reload: config invalid; keeping the running one", "err", err)
					continue
				}
				if opts.Listen != "" {
					next.Gateway.Listen = opts.Listen
				}
				env.Config = next
				gs.reload(ctx, env, cfg)
				cfg = next
			}
		}
	}()
	return gs.serve(ctx)
}

// gatewayService is the daemon's gateway: the gateway, its listener and the
// secret stores it reads upstream keys through.
type gatewayService struct {
	gw  *gateway.Gateway
	ln  net.Listener
	log *slog.Logger

	mu sync.Mutex
	// stores were opened from storesCfg's secrets; closeStores closes them.
	stores      map[string]gateway.KeyReader
	closeStores func()
	storesCfg   *config.Config
	closed      bool
}

// startGateway builds the gateway of de.Config and binds its listener.
func startGateway(ctx context.Context, de daemon.Env) (*gatewayService, error) {
	cfg, log := de.Config, de.Logger
	stores, closeStores, err := gatewayStores(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	opts, err := gateway.FromConfig(cfg, gateway.Deps{Stores: stores, Usage: de.Journal, Registerer: de.Metrics.Registry(), Logger: log})
	if err != nil {
		closeStores()
		return nil, err
	}
	gw, err := gateway.New(ctx, opts)
	if err != nil {
		closeStores()
		return nil, err
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		gw.Close(context.Background())
		closeStores()
		return nil, fmt.Errorf("listen: %w", err)
	}
	log.Info("gateway listening", "listen", ln.Addr().String())
	return &gatewayService{gw: gw, ln: ln, log: log, stores: stores, closeStores: closeStores, storesCfg: cfg}, nil
}

// serve is the gateway's daemon.Service: it serves until ctx ends, then
// drains, closes the gateway and the stores.
func (g *gatewayService) serve(ctx context.Context) error {
	defer func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.closed = true
		g.closeStores()
	}()
	return g.gw.Serve(ctx, g.ln)
}

// reload swaps the gateway's clients, roles, prices and upstream keys for
// de.Config's. The stores are opened again when the secrets settings (or
// the backends the keys use) changed. A config the gateway refuses leaves
// it running its previous one; that is returned as a reload note, as are
// changes it takes only after a restart.
func (g *gatewayService) reload(ctx context.Context, de daemon.Env, old *config.Config) []string {
	cfg, log := de.Config, de.Logger
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil // stopping
	}
	var notes []string
	if old.Mistral.BaseURL != cfg.Mistral.BaseURL {
		notes = append(notes, fmt.Sprintf("mistral.base_url changed (%q → %q): the gateway's upstream takes it after a restart",
			old.Mistral.BaseURL, cfg.Mistral.BaseURL))
	}
	stores, closeStores := g.stores, func() {}
	reopen := !sameStoreSetup(g.storesCfg, cfg)
	if reopen {
		var err error
		if stores, closeStores, err = gatewayStores(ctx, cfg, log); err != nil {
			return append(notes, gatewayReloadFailed(log, err))
		}
	}
	opts, err := gateway.FromConfig(cfg, gateway.Deps{Stores: stores, Usage: de.Journal, Logger: log})
	if err == nil {
		err = g.gw.Reload(ctx, opts)
	}
	if err != nil {
		closeStores()
		return append(notes, gatewayReloadFailed(log, err))
	}
	if reopen {
		// The replaced key pollers are stopped; their stores can go.
		g.closeStores()
		g.stores, g.closeStores, g.storesCfg = stores, closeStores, cfg
	}
	log.Info("gateway reloaded", "clients", len(opts.Clients), "stores_reopened", reopen)
	return notes
}

// gatewayReloadFailed logs a refused gateway reload and returns its note.
func gatewayReloadFailed(log *slog.Logger, err error) string {
	log.Error("gateway reload failed; it keeps its previous clients, roles and prices", "err", err)
	return fmt.Sprintf("gateway not reloaded, it keeps its previous clients, roles and prices: %v", err)
}

// sameStoreSetup reports whether a and b open the same secret stores: the
// same secrets settings and the same backends used by managed keys.
func sameStoreSetup(a, b *config.Config) bool {
	used := func(c *config.Config) map[string]bool {
		m := map[string]bool{}
		for _, k := range c.Keys {
			m[k.Store.Backend] = true
		}
		return m
	}
	return reflect.DeepEqual(a.Secrets, b.Secrets) && reflect.DeepEqual(used(a), used(b))
}

// gatewayStores opens the configured secret stores (openStores) for reading
// upstream keys. The returned func closes them.
func gatewayStores(ctx context.Context, cfg *config.Config, log *slog.Logger) (map[string]gateway.KeyReader, func(), error) {
	stores, closeAll, err := openStores(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]gateway.KeyReader, len(stores))
	for name, s := range stores {
		out[name] = s
	}
	return out, closeAll, nil
}
