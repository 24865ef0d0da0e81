package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/daemon"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/jobs/scheduler"
	"github.com/mrbacd/mrbacd/metrics"
	"github.com/mrbacd/mrbacd/notify"
	"github.com/mrbacd/mrbacd/secrets"
)

// DaemonOptions configures RunDaemon.
type DaemonOptions struct {
	// ConfigPath is the config file, read again on SIGHUP; Config, when
	// set, is its first load (already validated by the caller).
	ConfigPath string
	Config     *config.Config
	Version    string
	// Logger and LogLevel (adjusted on reload) are the daemon's.
	Logger   *slog.Logger
	LogLevel *slog.LevelVar
	// Stdout is where notifications go when notify.slack is not configured.
	Stdout io.Writer
	// NoGateway: the daemon does not run its gateway even when
	// gateway.listen is set (`mrbacd run --no-gateway`: the gateways run
	// as their own processes, `mrbacd gateway`, on the same config).
	NoGateway bool
}

// ErrFatal: the daemon could not start, or a server stopped unexpectedly.
var ErrFatal = errors.New("mrbacd stopped")

// RunDaemon is `mrbacd run`: it runs until SIGTERM or SIGINT or ctx ends
// (graceful stop within shutdown_timeout; nil) and reloads on SIGHUP. An
// error means it could not start or a server failed (already logged).
func RunDaemon(ctx context.Context, opts DaemonOptions) error {
	log := opts.Logger
	// SIGHUP reloads; SIGTERM/SIGINT stop (also caught here, so a caller
	// that did not set up signal.NotifyContext gets the same behaviour).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	wiring := &daemonWiring{stdout: opts.Stdout, noGateway: opts.NoGateway}
	preloaded := opts.Config
	load := func(path string) (*config.Config, error) {
		if c := preloaded; c != nil {
			preloaded = nil
			return c, nil
		}
		return config.Load(path)
	}
	d, err := daemon.New(ctx, daemon.Options{
		ConfigPath: opts.ConfigPath, Version: opts.Version, Logger: log, LogLevel: opts.LogLevel,
		Build: wiring.build, Services: wiring.services, Reloaded: wiring.reloaded, Load: load,
		Ready: wiring.ready,
	})
	if err != nil {
		log.Error("mrbacd cannot start", "err", err)
		return fmt.Errorf("%w: %w", ErrFatal, err)
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
		return fmt.Errorf("%w: %w", ErrFatal, err)
	}
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				log.Info("SIGHUP: reloading the config", "config", opts.ConfigPath)
				// Off the signal loop, so a SIGTERM during a slow reload (a
				// store that takes long to open) is taken at once: Shutdown
				// cancels the reload. Reloads are serialized by the daemon.
				go d.Reload(context.Background(), "signal")
				continue
			}
			log.Info("stopping on signal", "signal", sig.String())
			stop()
			return nil
		case <-ctx.Done():
			log.Info("stopping on signal")
			stop()
			return nil
		case err := <-d.Fatal():
			log.Error("a server stopped unexpectedly; stopping", "err", err)
			stop()
			return fmt.Errorf("%w: %w", ErrFatal, err)
		}
	}
}

// daemonWiring builds the daemon's components from a config. The outbox
// (and its sender) is made once, from the first config, and shared by every
// build: the worker delivering it runs for the daemon's whole life.
type daemonWiring struct {
	stdout io.Writer
	// noGateway: gateway.listen is ignored (DaemonOptions.NoGateway).
	noGateway bool
	mu        sync.Mutex
	outbox    *notify.Outbox
	// rotations collects the rotation engine's events during a rotate run
	// (one at a time: the scheduler never overlaps a job) for the digest
	// and failure messages queued when the run ends.
	rotations rotationNotes
	// gateway is the running gateway, nil when gateway.listen is unset.
	gateway *gatewayService
	// started: services ran (the gateway, if any, is set).
	started bool
	// inForce is the config in force, for the Slack actions and the gauges.
	inForce configInForce
}

// sharedOutbox returns the outbox, creating it on first use.
func (w *daemonWiring) sharedOutbox(ctx context.Context, de daemon.Env) (*notify.Outbox, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.outbox == nil {
		sender, err := newNotifier(de.Config, w.stdout, de.Logger)
		if err != nil {
			return nil, err
		}
		w.outbox = notify.NewOutbox(de.Journal, sender, notify.OutboxOptions{Logger: de.Logger})
	}
	return w.outbox, nil
}

// build is the daemon's Build: the platform client, the stores, the three
// jobs and the notifications a config makes.
func (w *daemonWiring) build(ctx context.Context, de daemon.Env) (*daemon.Components, error) {
	cfg, log := de.Config, de.Logger
	platform, err := NewMistral(cfg, log)
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
	engine, err := newDaemonEngine(cfg, platform, stores, de,
		rotationNotifiers{rotationMetrics{de.Metrics}, &w.rotations}, log)
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

// services are started once: the outbox worker, the Slack actions when
// Socket Mode is configured and, when gateway.listen is set, the gateway.
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
	if cfg.Gateway.Listen != "" && w.noGateway {
		de.Logger.Info("gateway not started (--no-gateway)", "gateway_listen", cfg.Gateway.Listen)
	}
	var gs *gatewayService
	if cfg.Gateway.Listen != "" && !w.noGateway {
		if gs, err = startGateway(ctx, de); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		svcs = append(svcs, daemon.Service{Name: "gateway", Run: gs.serve})
	}
	w.mu.Lock()
	w.gateway, w.started = gs, true
	w.mu.Unlock()
	return svcs, nil
}

// ready is the daemon's Ready: its services started and the gateway it
// runs, if any, is ready (the daemon checks its journal itself).
func (w *daemonWiring) ready(ctx context.Context) error {
	w.mu.Lock()
	gs, started := w.gateway, w.started
	w.mu.Unlock()
	switch {
	case !started:
		return metrics.NotReady("starting", nil)
	case gs == nil:
		return nil
	}
	return gs.gw.Ready(ctx)
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

// readRecord reads a managed key's store record; found is false when its
// store is not configured or holds no record yet.
func readRecord(ctx context.Context, stores map[string]secrets.Store, k config.Key) (v secrets.Versioned, found bool, err error) {
	st := stores[k.Store.Backend]
	if st == nil {
		return v, false, nil
	}
	v, err = st.Read(ctx, rotate.Target(k))
	if errors.Is(err, secrets.ErrNotFound) {
		return v, false, nil
	}
	return v, err == nil, err
}

// keyCreated reads each managed key's record for the key age metric (only
// created_at is kept; the daemon caches the answer).
func keyCreated(cfg *config.Config, stores map[string]secrets.Store) func(ctx context.Context) (map[string]time.Time, error) {
	return func(ctx context.Context) (map[string]time.Time, error) {
		out := map[string]time.Time{}
		var errs []error
		for _, k := range cfg.Keys {
			v, found, err := readRecord(ctx, stores, k)
			if err != nil {
				errs = append(errs, fmt.Errorf("key %s: %w", k.Name, err))
				continue
			}
			if found {
				out[k.Name] = v.CreatedAt
			}
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
