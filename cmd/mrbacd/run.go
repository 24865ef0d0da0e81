package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/daemon"
	"github.com/mrbacd/mrbacd/gateway"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/jobs/scheduler"
	"github.com/mrbacd/mrbacd/notify"
	"github.com/mrbacd/mrbacd/secrets"
)

func init() {
	register(&command{name: "run", summary: "run the daemon: scheduler, admin socket, metrics, gateway", run: runDaemon})
}

// runDaemon is `mrbacd run --config FILE`: it runs until SIGTERM or SIGINT
// (graceful stop within shutdown_timeout, exit 0) and reloads on SIGHUP.
func runDaemon(ctx context.Context, env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "run", "--config FILE")
	cfgPath := fs.String("config", "", "config `file` (required)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mrbacd run: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, code := loadConfig(env, *cfgPath)
	if cfg == nil {
		return code
	}
	log, level, err := daemon.NewLogger(env.stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd run: %s: %v\n", *cfgPath, err)
		return exitUsage
	}

	// SIGHUP reloads; SIGTERM/SIGINT stop (also caught here, so a caller
	// that did not set up signal.NotifyContext gets the same behaviour).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	wiring := &daemonWiring{env: env}
	preloaded := cfg
	load := func(path string) (*config.Config, error) {
		if c := preloaded; c != nil {
			preloaded = nil
			return c, nil
		}
		return config.Load(path)
	}
	d, err := daemon.New(ctx, daemon.Options{
		ConfigPath: *cfgPath, Version: version, Logger: log, LogLevel: level,
		Build: wiring.build, Services: wiring.services, Reloaded: wiring.reloaded, Load: load,
	})
	if err != nil {
		log.Error("mrbacd cannot start", "err", err)
		return exitFailed
	}
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), d.Config().ShutdownTimeout.D())
		defer cancel()
		if err := d.Shutdown(sctx); err != nil {
			log.Error("graceful stop incomplete within shutdown_timeout", "shutdown_timeout", d.Config().ShutdownTimeout.D().String(), "err", err)
		}
	}
	if err := d.Start(ctx); err != nil {
		log.Error("mrbacd cannot start", "err", err)
		stop()
		return exitFailed
	}
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				log.Info("SIGHUP: reloading the config", "config", *cfgPath)
				// Off the signal loop, so a SIGTERM during a slow reload (a
				// store that takes long to open) is taken at once: Shutdown
				// cancels the reload. Reloads are serialized by the daemon.
				go d.Reload(context.Background(), "signal")
				continue
			}
			log.Info("stopping on signal", "signal", sig.String())
			stop()
			return exitOK
		case <-ctx.Done():
			log.Info("stopping on signal")
			stop()
			return exitOK
		case err := <-d.Fatal():
			log.Error("a server stopped unexpectedly; stopping", "err", err)
			stop()
			return exitFailed
		}
	}
}

// daemonWiring builds the daemon's components from a config. The outbox
// (and its sender) is made once, from the first config, and shared by every
// build: the worker delivering it runs for the daemon's whole life.
type daemonWiring struct {
	env    *cmdEnv
	mu     sync.Mutex
	outbox *notify.Outbox
	// rotations collects the rotation engine's events during a rotate run
	// (one at a time: the scheduler never overlaps a job) for the digest
	// and failure messages queued when the run ends.
	rotations rotationNotes
	// gateway is the running gateway, nil when gateway.listen is unset.
	gateway *gatewayService
	// inForce is the config in force, for the Slack actions and the gauges.
	inForce configInForce
}

// sharedOutbox returns the outbox, creating it on first use.
func (w *daemonWiring) sharedOutbox(ctx context.Context, de daemon.Env) (*notify.Outbox, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.outbox == nil {
		sender, err := newNotifier(ctx, de.Config, w.env, de.Logger)
		if err != nil {
			return nil, err
		}
		w.outbox = newOutbox(de.Journal, sender, de.Logger)
	}
	return w.outbox, nil
}

// build is the daemon's Build: the platform client, the stores, the three
// jobs and the notifications a config makes.
func (w *daemonWiring) build(ctx context.Context, de daemon.Env) (*daemon.Components, error) {
	cfg, log := de.Config, de.Logger
	platform, err := newMistral(cfg, log)
	if err != nil {
		return nil, err
	}
	outbox, err := w.sharedOutbox(ctx, de)
	if err != nil {
		return nil, err
	}
	stores, closeStores, err := openStores(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	engine, err := rotate.New(rotate.Deps{
		Platform: platform, Stores: stores, Journal: de.Journal, Logger: log,
		Notifier: rotationNotifiers{rotationMetrics{de.Metrics}, &w.rotations},
	}, rotate.OptionsFromConfig(cfg), rotate.KeysFromConfig(cfg))
	if err != nil {
		closeStores()
		return nil, err
	}
	return &daemon.Components{
		Runners: map[string]jobs.Runner{
			jobs.Rotate: engine,
			jobs.Audit:  newAuditJob(cfg, platform, stores, de.Journal, outbox, log),
			jobs.Budget: newBudgetJob(cfg, platform, de.Journal, outbox, log),
		},
		Resume: jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
			return engine.Resume(ctx)
		}),
		KeyCreated: keyCreated(cfg, stores),
		OnRunFinished: func(ctx context.Context, f scheduler.Finished) {
			reported := 0
			if f.Job == jobs.Rotate {
				n, err := w.rotations.enqueue(ctx, outbox, f.Result, f.Started.Add(f.Duration))
				if err != nil {
					log.Error("queueing rotation notifications failed", "run_id", f.RunID, "err", err)
				}
				reported = n
			}
			if f.Status != scheduler.StatusFailed && f.Status != scheduler.StatusPanicked {
				return
			}
			if f.Status == scheduler.StatusFailed && f.Err == nil && reported > 0 {
				return // failed keys, each already reported by its own message
			}
			msg := f.Result.Summary
			if f.Err != nil {
				msg = f.Err.Error()
			}
			err := outbox.Enqueue(ctx, notify.JobFailureMessage(notify.JobFailure{
				Job: f.Job, RunID: f.RunID, Trigger: f.Trigger, Error: msg,
				Panic: f.Status == scheduler.StatusPanicked, Duration: f.Duration, At: f.Started.Add(f.Duration),
			}))
			if err != nil {
				log.Error("queueing the job failure notification failed", "job", f.Job, "run_id", f.RunID, "err", err)
			}
		},
		Close: func() error { closeStores(); return nil },
	}, nil
}

// services are started once: the outbox worker and, when gateway.listen is
// set, the gateway.
func (w *daemonWiring) services(ctx context.Context, de daemon.Env, comps *daemon.Components) ([]daemon.Service, error) {
	cfg := de.Config
	outbox, err := w.sharedOutbox(ctx, de)
	if err != nil {
		return nil, err
	}
	svcs := []daemon.Service{{Name: "notification outbox", Run: outbox.Run}}
	oncall, err := onCall(ctx, de, &w.inForce)
	if err != nil {
		return nil, fmt.Errorf("slack actions: %w", err)
	}
	svcs = append(svcs, oncall...)
	if cfg.Gateway.Listen == "" {
		return svcs, nil
	}
	gs, err := startGateway(ctx, de)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	w.mu.Lock()
	w.gateway = gs
	w.mu.Unlock()
	return append(svcs, daemon.Service{Name: "gateway", Run: gs.serve}), nil
}

// reloaded is the daemon's Reloaded: the running gateway takes the new
// config's clients, roles, prices and upstream keys.
func (w *daemonWiring) reloaded(ctx context.Context, de daemon.Env, old *config.Config) []string {
	w.inForce.note(de.Config)
	w.mu.Lock()
	gs := w.gateway
	w.mu.Unlock()
	if gs == nil {
		return nil // not running; a gateway.listen change is noted by the daemon
	}
	return gs.reload(ctx, de, old)
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

// keyCreated reads each managed key's record for the key age metric (only
// created_at is kept; the daemon caches the answer).
func keyCreated(cfg *config.Config, stores map[string]secrets.Store) func(ctx context.Context) (map[string]time.Time, error) {
	return func(ctx context.Context) (map[string]time.Time, error) {
		out := map[string]time.Time{}
		var errs []error
		for _, k := range cfg.Keys {
			st := stores[k.Store.Backend]
			if st == nil {
				continue
			}
			v, err := st.Read(ctx, rotate.Target(k))
			if errors.Is(err, secrets.ErrNotFound) {
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("key %s: %w", k.Name, err))
				continue
			}
			out[k.Name] = v.CreatedAt
		}
		return out, errors.Join(errs...)
	}
}

// rotationNotifiers fans the rotation engine's events out.
type rotationNotifiers []rotate.Notifier

// OnRotated implements rotate.Notifier.
func (ns rotationNotifiers) OnRotated(ctx context.Context, ev rotate.Event) {
	for _, n := range ns {
		n.OnRotated(ctx, ev)
	}
}

// OnFailed implements rotate.Notifier.
func (ns rotationNotifiers) OnFailed(ctx context.Context, ev rotate.Event) {
	for _, n := range ns {
		n.OnFailed(ctx, ev)
	}
}

// rotationMetrics counts rotations by outcome.
type rotationMetrics struct {
	m interface{ ObserveRotation(string) }
}

// OnRotated implements rotate.Notifier.
func (r rotationMetrics) OnRotated(_ context.Context, ev rotate.Event) {
	if ev.Bootstrap {
		r.m.ObserveRotation("bootstrapped")
		return
	}
	r.m.ObserveRotation("rotated")
}

// OnFailed implements rotate.Notifier.
func (r rotationMetrics) OnFailed(_ context.Context, ev rotate.Event) {
	if ev.StillInFlight {
		r.m.ObserveRotation("failed_in_flight")
		return
	}
	r.m.ObserveRotation("failed")
}
