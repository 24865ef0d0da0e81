// Package daemon assembles a running mrbacd from a config: the journal, the
// election of a leader among the daemons sharing it (leader.go), the
// leader's scheduler and resumption of rotations in flight, the admin
// socket, the metrics listener and the long-running services the caller
// adds (the notification outbox worker, the gateway). It owns the life cycle: Start,
// Reload (validate first, swap only if valid) and Shutdown (stop taking
// work, cancel runs, close within a bound), and tells systemd about each
// through sd_notify (READY, RELOADING, STOPPING, WATCHDOG).
//
// What a config turns into (platform client, stores, job runners) is built
// by Options.Build, so cmd/mrbacd wires the real jobs and tests can wire
// their own.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/ctlsock"
	"github.com/mrbacd/mrbacd/election"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/scheduler"
	"github.com/mrbacd/mrbacd/journal"
	journalbackend "github.com/mrbacd/mrbacd/journal/backend"
	"github.com/mrbacd/mrbacd/metrics"
)

// TriggerResume is the trigger of the run that resumes rotations in flight at start.
const TriggerResume = "resume"

// Components are what one config builds: made at start and again on every
// reload (the old ones are closed once the runs using them have ended).
type Components struct {
	// Runners by job name (jobs.Rotate, jobs.Audit, jobs.Budget); a job
	// without a runner is not scheduled.
	Runners map[string]jobs.Runner
	// Resume, when set, resumes the rotations in flight only; the daemon
	// runs it at start in the rotate job's slot (trigger "resume").
	Resume jobs.Runner
	// KeyCreated returns when each managed key's current platform key was
	// created (for the key age metric); optional.
	KeyCreated func(ctx context.Context) (map[string]time.Time, error)
	// OnRunFinished is called after every run (e.g. to notify a failure or
	// a panic); optional, must be quick.
	OnRunFinished func(ctx context.Context, f scheduler.Finished)
	// Close releases what Build opened; optional.
	Close func() error
}

// Service is a long-running part started once with the daemon (the outbox
// worker, the gateway). Run returns when ctx is cancelled; an error before
// that is fatal to the daemon.
type Service struct {
	Name string
	Run  func(ctx context.Context) error
}

// Env is what Build and Services receive.
type Env struct {
	Config  *config.Config
	Journal journal.Journal
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// Instance is this daemon's name in leader election; the rotation
	// engine holds its lease as RotationLeaseOwner(Instance).
	Instance string
}

// Options configures New.
type Options struct {
	// ConfigPath is the config file; Reload reads it again.
	ConfigPath string
	Version    string
	// Logger is the daemon's logger; LogLevel, when set, is adjusted on reload.
	Logger   *slog.Logger
	LogLevel *slog.LevelVar
	// Build makes the components of a config (required).
	Build func(ctx context.Context, env Env) (*Components, error)
	// Services makes the long-running services, once, from the first config.
	Services func(ctx context.Context, env Env, comps *Components) ([]Service, error)
	// Reloaded, when set, is called by a reload that succeeded, after the
	// new config's jobs are in place and before the reload is reported, so
	// the long-running services (the gateway) take the new config too. old
	// is the config replaced. What it returns is added to the reload's
	// notes (a service that refused the new config and keeps its old one, a
	// change it takes only after a restart). It must not block for long.
	Reloaded func(ctx context.Context, env Env, old *config.Config) []string
	// Now is the clock of the scheduler (catch-up); default time.Now.
	Now func() time.Time
	// Load reads a config; default config.Load.
	Load func(path string) (*config.Config, error)
	// OpenJournal opens the journal a config names; default
	// backend.Open (the SQLite file at state.path or state.postgres),
	// logging its recoveries (a statement retried after a lost connection)
	// to Logger.
	OpenJournal func(ctx context.Context, cfg *config.Config) (journal.Journal, error)
	// Instance names this daemon in leader election, unique among the
	// daemons sharing the journal; default election.InstanceName().
	Instance string
	// Ready, when set, is checked by /readyz after the journal answers a
	// ping (the gateway the daemon runs); see metrics.Ready for its contract.
	Ready metrics.Ready
	// RequestPoll is how often the leader looks for runs queued by
	// standbys; default DefaultRequestPoll.
	RequestPoll time.Duration
}

// Daemon is a running mrbacd.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	db      journal.Journal
	metrics *metrics.Metrics
	// sched is the leader's running scheduler, or a standby's never
	// started (it lists the jobs); replaced at each change of leadership.
	sched    *scheduler.Scheduler
	instance string
	elector  *election.Elector
	leading  atomic.Bool
	// electCancel ends the campaign; electDone is closed when it ended.
	electCancel context.CancelFunc
	electDone   chan struct{}
	admin       *ctlsock.Server
	metSrv      *metrics.Server
	started     time.Time

	svcCtx    context.Context
	svcCancel context.CancelFunc
	// stopCtx is cancelled as Shutdown begins: a reload in progress gives up.
	stopCtx    context.Context
	stopCancel context.CancelFunc
	svcWG      sync.WaitGroup
	fatal      chan error // a server or service failed

	reloadMu sync.Mutex // one reload at a time
	mu       sync.RWMutex
	cfg      *config.Config
	comps    *Components
	last     *ctlsock.Reload

	keyAges keyAgeCache

	stopping     atomic.Bool
	ready        atomic.Bool // READY=1 sent
	shutdownOnce sync.Once
	shutdownErr  error
}

// New loads and validates the config, opens the journal, builds the
// components and binds the admin socket and the metrics listener. Nothing
// runs until Start. On error everything opened is closed.
func New(ctx context.Context, opts Options) (_ *Daemon, err error) {
	if opts.Build == nil {
		return nil, errors.New("daemon: no Build")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Load == nil {
		opts.Load = config.Load
	}
	if opts.OpenJournal == nil {
		log := opts.Logger
		opts.OpenJournal = func(ctx context.Context, cfg *config.Config) (journal.Journal, error) {
			db, err := journalbackend.Open(ctx, cfg.State, journal.WithLogger(log))
			if err != nil {
				return nil, err // a nil *journal.DB must not become a non-nil Journal
			}
			return db, nil
		}
	}
	cfg, err := opts.Load(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	d := &Daemon{opts: opts, log: opts.Logger, cfg: cfg, started: time.Now(), fatal: make(chan error, 8)}
	if opts.LogLevel != nil {
		if err := SetLevel(opts.LogLevel, cfg.Log.Level); err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
	}
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	// The socket first: if another daemon answers on it, stop before
	// touching the journal or the stores. It serves only from Start.
	mode, err := parseMode(cfg.Admin.SocketMode)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d.admin, err = ctlsock.Listen(ctlsock.ServerOptions{
		Socket: cfg.Admin.Socket, Mode: mode, Group: cfg.Admin.SocketGroup,
		AllowedUIDs: cfg.Admin.AllowedUIDs, Backend: backend{d}, Logger: d.log,
	})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	closers = append(closers, func() { d.admin.Shutdown(context.Background()) })

	d.db, err = opts.OpenJournal(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	closers = append(closers, func() { d.db.Close() })
	// Runs left "running" by a daemon that was killed: mark them canceled.
	// The cutoff spares runs a one-shot command started within the longest timeout.
	cutoff := time.Now().Add(-longestTimeout(cfg))
	if n, err := d.db.AbandonRuns(ctx, cutoff, "abandoned: the process running it stopped"); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	} else if n > 0 {
		d.log.Warn("runs left running by a stopped daemon marked canceled", "runs", n)
	}

	d.instance = opts.Instance
	if d.instance == "" {
		d.instance = election.InstanceName()
	}
	d.elector, err = election.New(d.db, election.Config{Instance: d.instance, TTL: cfg.HA.Lease.D(), Logger: d.log})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d.metrics = metrics.New(opts.Version, d.log)
	env := Env{Config: cfg, Journal: d.db, Metrics: d.metrics, Logger: d.log, Instance: d.instance}
	d.comps, err = opts.Build(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	closers = append(closers, func() { closeComps(d.log, d.comps) })

	d.sched, err = d.newScheduler(context.Background(), cfg, d.comps)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}

	d.keyAges.d = d
	d.metrics.SetSources(metrics.Sources{
		KeyCreated:           d.keyAges.get,
		NextRuns:             d.nextRuns,
		PendingNotifications: d.db.PendingCount,
	})
	if cfg.Metrics.Listen != "" {
		d.metSrv, err = metrics.Listen(cfg.Metrics.Listen, d.metrics, d.health, d.log, metrics.WithReady(d.readiness))
		if err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
		closers = append(closers, func() { d.metSrv.Shutdown(context.Background()) })
	}
	d.svcCtx, d.svcCancel = context.WithCancel(context.WithoutCancel(ctx))
	d.stopCtx, d.stopCancel = context.WithCancel(context.Background())
	d.electDone = make(chan struct{})
	return d, nil
}

func longestTimeout(cfg *config.Config) time.Duration {
	m := max(cfg.Jobs.Rotate.Timeout.D(), cfg.Jobs.Audit.Timeout.D(), cfg.Jobs.Budget.Timeout.D())
	if m <= 0 {
		m = time.Hour
	}
	return m
}

func parseMode(s string) (os.FileMode, error) {
	if s == "" {
		return 0o600, nil
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 || v == 0 {
		return 0, fmt.Errorf("admin.socket_mode %q: want an octal mode such as 0600 or 0660", s)
	}
	return os.FileMode(v), nil
}

func closeComps(log *slog.Logger, c *Components) {
	if c == nil || c.Close == nil {
		return
	}
	if err := c.Close(); err != nil {
		log.Warn("closing components failed", "err", err)
	}
}

// jobsFor returns the scheduler's jobs for cfg and comps.
func (d *Daemon) jobsFor(cfg *config.Config, comps *Components) (*time.Location, []scheduler.Job, error) {
	table, err := cfg.Jobs.Table()
	if err != nil {
		return nil, nil, err
	}
	var out []scheduler.Job
	for _, s := range table.Specs {
		r := comps.Runners[s.Name]
		if r == nil {
			d.log.Warn("job has no runner; not scheduled", "job", s.Name)
			continue
		}
		if s.Name == jobs.Rotate && comps.Resume != nil {
			r = resumeOr(comps.Resume, r)
		}
		out = append(out, scheduler.Job{Name: s.Name, Schedule: s.Schedule, Timeout: s.Timeout, Disabled: s.Disabled, Runner: r})
	}
	return table.Location, out, nil
}

// resumeOr runs resume for the start-up resume run and run otherwise, so a
// resume holds the rotate job's slot (a rotation never overlaps a resume).
func resumeOr(resume, run jobs.Runner) jobs.Runner {
	return jobs.RunnerFunc(func(ctx context.Context, req jobs.Request) (jobs.Result, error) {
		if req.Trigger == TriggerResume {
			return resume.Run(ctx, req)
		}
		return run.Run(ctx, req)
	})
}

// Start serves the admin socket and the metrics listener, starts the
// services and the campaign for leadership, and tells systemd READY=1 once
// the first attempt is known: as leader, the scheduler runs (catching up
// missed runs) and rotations in flight are resuming; as standby, it waits
// for the leader's lease to lapse.
func (d *Daemon) Start(ctx context.Context) error {
	d.goServe("admin socket", d.admin.Serve)
	if d.metSrv != nil {
		d.goServe("metrics listener", d.metSrv.Serve)
	}
	d.mu.RLock()
	env := Env{Config: d.cfg, Journal: d.db, Metrics: d.metrics, Logger: d.log, Instance: d.instance}
	comps := d.comps
	d.mu.RUnlock()
	if d.opts.Services != nil {
		svcs, err := d.opts.Services(d.svcCtx, env, comps)
		if err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		for _, s := range svcs {
			s := s
			d.svcWG.Add(1)
			go func() {
				defer d.svcWG.Done()
				err := s.Run(d.svcCtx)
				if d.svcCtx.Err() == nil {
					if err == nil {
						err = errors.New("stopped unexpectedly")
					}
					d.fatal <- fmt.Errorf("%s: %w", s.Name, err)
				}
			}()
		}
	}
	ectx, cancel := context.WithCancel(d.svcCtx)
	d.electCancel = cancel
	go d.campaign(ectx)
	d.waitFirstAttempt(ctx)
	d.ready.Store(true)
	if ok, err := SdNotify("READY=1\n" + d.sdStatus()); err != nil {
		d.log.Warn("sd_notify READY failed", "err", err)
	} else if ok {
		d.log.Debug("told systemd READY=1")
	}
	if iv, ok := WatchdogInterval(); ok {
		d.svcWG.Add(1)
		go d.watchdog(iv)
	}
	cfg := d.Config()
	d.log.Info("mrbacd ready", "version", d.opts.Version, "pid", os.Getpid(), "instance", d.instance, "leader", d.Leading(), "config", cfg.Path,
		"config_hash", short(cfg.Hash()), "admin_socket", d.admin.Addr(), "metrics_listen", d.MetricsAddr())
	return nil
}

func (d *Daemon) resumeInFlight(ctx context.Context, comps *Components) {
	if comps.Resume == nil {
		return
	}
	inflight, err := d.db.InFlightRotations(ctx)
	if err != nil {
		d.log.Error("listing rotations in flight failed", "err", err)
		return
	}
	if len(inflight) == 0 {
		return
	}
	_, err = d.scheduler().Trigger(ctx, jobs.Rotate, jobs.Request{Trigger: TriggerResume})
	switch {
	case errors.Is(err, scheduler.ErrAlreadyRunning):
		// A catch-up rotate run started first; it resumes in-flight rotations itself.
		d.log.Info("rotations in flight are resumed by the running rotate run", "rotations", len(inflight))
	case err != nil:
		d.log.Error("resuming rotations in flight failed to start", "rotations", len(inflight), "err", err)
	default:
		d.log.Info("resuming rotations in flight", "rotations", len(inflight))
	}
}

func (d *Daemon) goServe(name string, serve func() error) {
	go func() {
		if err := serve(); err != nil {
			d.fatal <- fmt.Errorf("%s: %w", name, err)
		}
	}()
}

func (d *Daemon) watchdog(iv time.Duration) {
	defer d.svcWG.Done()
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-d.svcCtx.Done():
			return
		case <-t.C:
			// Ping only while the journal answers: a wedged daemon gets restarted.
			ctx, cancel := context.WithTimeout(d.svcCtx, iv)
			err := d.db.Ping(ctx)
			cancel()
			if err != nil {
				d.log.Warn("watchdog: journal not answering; not pinging systemd", "err", err)
				continue
			}
			SdNotify("WATCHDOG=1")
		}
	}
}

// Fatal delivers errors of servers or services that stopped on their own;
// the caller should shut the daemon down.
func (d *Daemon) Fatal() <-chan error { return d.fatal }

// AdminSocket returns the admin socket's path.
func (d *Daemon) AdminSocket() string { return d.admin.Addr() }

// MetricsAddr returns the metrics listener's address, "" when disabled.
func (d *Daemon) MetricsAddr() string {
	if d.metSrv == nil {
		return ""
	}
	return d.metSrv.Addr()
}

// Config returns the config in effect.
func (d *Daemon) Config() *config.Config {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cfg
}

// Scheduler returns the scheduler: the leader's running one, or a
// standby's that is never started (tests and embedding).
func (d *Daemon) Scheduler() *scheduler.Scheduler { return d.scheduler() }

func (d *Daemon) scheduler() *scheduler.Scheduler {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.sched
}

// Journal returns the journal.
func (d *Daemon) Journal() journal.Journal { return d.db }

func (d *Daemon) onFinish(ctx context.Context, f scheduler.Finished) {
	d.metrics.ObserveRun(f.Job, f.Status, f.Duration)
	if f.Job == jobs.Rotate {
		d.keyAges.invalidate()
	}
	d.mu.RLock()
	comps := d.comps
	d.mu.RUnlock()
	if comps.OnRunFinished != nil {
		comps.OnRunFinished(ctx, f)
	}
}

func (d *Daemon) nextRuns() map[string]time.Time {
	out := map[string]time.Time{}
	for _, j := range d.scheduler().Jobs() {
		out[j.Name] = j.Next
	}
	return out
}

func (d *Daemon) health(ctx context.Context) error {
	if err := d.db.Ping(ctx); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// readiness is /readyz: the journal answers (a standby is ready like the
// leader), then Options.Ready.
func (d *Daemon) readiness(ctx context.Context) error {
	if err := d.db.Ping(ctx); err != nil {
		return metrics.NotReady("journal unreachable", err)
	}
	if d.opts.Ready != nil {
		return d.opts.Ready(ctx)
	}
	return nil
}

// Reload reads and validates the config file again and swaps it in only if
// it is valid and its components build; otherwise the old config keeps
// running and the returned error (wrapping ctlsock.ErrInvalid, or
// ctlsock.ErrUnavailable once Shutdown began) says why.
// Shutdown cancels a reload in progress (the ctx of Build), so a slow store
// cannot hold the stop past its bound. trigger says who asked ("signal",
// "uid:N"). Changes that need a restart (socket, metrics listener, journal
// path, notification sender) are listed in Notes, with what
// Options.Reloaded reports of the services.
func (d *Daemon) Reload(ctx context.Context, trigger string) (ctlsock.Reload, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.stopping.Load() {
		return ctlsock.Reload{At: time.Now().UTC(), Trigger: trigger, Error: "the daemon is stopping"},
			fmt.Errorf("%w: reload: the daemon is stopping", ctlsock.ErrUnavailable)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(d.stopCtx, cancel)()
	SdNotify(reloadingState())
	defer func() {
		if !d.stopping.Load() { // after STOPPING=1, systemd must not hear READY=1
			SdNotify("READY=1\n" + d.sdStatus())
		}
	}()

	rec := ctlsock.Reload{At: time.Now().UTC(), Trigger: trigger}
	fail := func(err error) (ctlsock.Reload, error) {
		rec.Error = err.Error()
		d.mu.Lock()
		d.last = &rec
		d.mu.Unlock()
		d.metrics.ObserveReload(false)
		d.log.Error("reload refused; the old config keeps running", "trigger", trigger, "err", err)
		kind := ctlsock.ErrInvalid
		if d.stopping.Load() { // cancelled by Shutdown, not an invalid config
			kind = ctlsock.ErrUnavailable
		}
		return rec, fmt.Errorf("%w: reload refused, the old config keeps running: %w", kind, err)
	}
	old := d.Config()
	cfg, err := d.opts.Load(old.Path)
	if err != nil {
		return fail(err)
	}
	if d.opts.LogLevel != nil {
		probe := new(slog.LevelVar)
		if err := SetLevel(probe, cfg.Log.Level); err != nil {
			return fail(err)
		}
	}
	comps, err := d.opts.Build(ctx, Env{Config: cfg, Journal: d.db, Metrics: d.metrics, Logger: d.log, Instance: d.instance})
	if err != nil {
		return fail(err)
	}
	loc, js, err := d.jobsFor(cfg, comps)
	if err == nil {
		err = d.scheduler().SetJobs(loc, js)
	}
	if err != nil {
		closeComps(d.log, comps)
		return fail(err)
	}
	d.admin.SetAllowedUIDs(cfg.Admin.AllowedUIDs)
	if d.opts.LogLevel != nil {
		SetLevel(d.opts.LogLevel, cfg.Log.Level)
	}
	rec.OK = true
	rec.ConfigHash = cfg.Hash()
	rec.Notes = restartNotes(old, cfg)
	var svcNotes []string
	if d.opts.Reloaded != nil {
		svcNotes = d.opts.Reloaded(ctx, Env{Config: cfg, Journal: d.db, Metrics: d.metrics, Logger: d.log, Instance: d.instance}, old)
		rec.Notes = append(rec.Notes, svcNotes...)
	}
	d.mu.Lock()
	oldComps := d.comps
	d.cfg, d.comps, d.last = cfg, comps, &rec
	d.mu.Unlock()
	d.keyAges.invalidate()
	d.metrics.ObserveReload(true)
	go d.closeWhenIdle(oldComps)
	d.log.Info("config reloaded", "trigger", trigger, "config_hash", short(cfg.Hash()), "changed", old.Hash() != cfg.Hash())
	for _, n := range rec.Notes[:len(rec.Notes)-len(svcNotes)] {
		d.log.Warn("reload: change needs a restart", "note", n)
	}
	for _, n := range svcNotes {
		d.log.Warn("reload: a service did not take all of the new config", "note", n)
	}
	return rec, nil
}

// closeWhenIdle closes replaced components once no run that may use them is in progress.
func (d *Daemon) closeWhenIdle(c *Components) {
	if c == nil || c.Close == nil {
		return
	}
	for {
		busy := false
		for _, j := range d.scheduler().Jobs() {
			busy = busy || j.Running != nil
		}
		if !busy {
			break
		}
		select {
		case <-d.svcCtx.Done():
			return // Shutdown closes them
		case <-time.After(time.Second):
		}
	}
	closeComps(d.log, c)
}

func restartNotes(old, cfg *config.Config) []string {
	var notes []string
	check := func(field, a, b string) {
		if a != b {
			notes = append(notes, fmt.Sprintf("%s changed (%q → %q): takes effect after a restart", field, a, b))
		}
	}
	check("admin.socket", old.Admin.Socket, cfg.Admin.Socket)
	check("admin.socket_mode", old.Admin.SocketMode, cfg.Admin.SocketMode)
	check("admin.socket_group", old.Admin.SocketGroup, cfg.Admin.SocketGroup)
	check("metrics.listen", old.Metrics.Listen, cfg.Metrics.Listen)
	check("state", journalbackend.Describe(old.State), journalbackend.Describe(cfg.State))
	check("log.format", old.Log.Format, cfg.Log.Format)
	check("ha.lease", old.HA.Lease.D().String(), cfg.HA.Lease.D().String())
	check("gateway.listen", old.Gateway.Listen, cfg.Gateway.Listen)
	if !reflect.DeepEqual(old.Notify, cfg.Notify) {
		notes = append(notes, "notify changed: the notification sender takes it after a restart")
	}
	return notes
}

// Shutdown stops taking work (STOPPING=1), cancels running jobs (a rotation
// in flight stays journaled and resumes at the next start), stops the
// servers and services and closes the journal, all within ctx. It is safe to
// call more than once.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.shutdownOnce.Do(func() { d.shutdownErr = d.shutdown(ctx) })
	return d.shutdownErr
}

func (d *Daemon) shutdown(ctx context.Context) error {
	d.stopping.Store(true)
	d.stopCancel()
	SdNotify("STOPPING=1\nSTATUS=stopping")
	d.log.Info("shutting down")
	var errs []error
	// Ending the campaign stops the leader's schedule (its runs cancelled,
	// rotations in flight left journaled) and hands the lease over at once.
	if d.electCancel != nil {
		d.electCancel()
		select {
		case <-d.electDone:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("leadership still ending: %w", ctx.Err()))
		}
	}
	if err := d.scheduler().Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := d.admin.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("admin socket: %w", err))
	}
	if d.metSrv != nil {
		if err := d.metSrv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	d.svcCancel()
	done := make(chan struct{})
	go func() { d.svcWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("services still stopping: %w", ctx.Err()))
	}
	d.mu.RLock()
	comps := d.comps
	d.mu.RUnlock()
	closeComps(d.log, comps)
	if err := d.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("journal: %w", err))
	}
	err := errors.Join(errs...)
	if err != nil {
		d.log.Error("shutdown incomplete", "err", err)
	} else {
		d.log.Info("stopped")
	}
	return err
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// keyAgeCache caches Components.KeyCreated for the key age metric, so a
// scrape does not read every store; a rotate run or a reload invalidates it.
type keyAgeCache struct {
	d    *Daemon
	mu   sync.Mutex
	at   time.Time
	vals map[string]time.Time
}

const keyAgeTTL = 10 * time.Minute

func (c *keyAgeCache) get(ctx context.Context) (map[string]time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vals != nil && time.Since(c.at) < keyAgeTTL {
		return c.vals, nil
	}
	c.d.mu.RLock()
	f := c.d.comps.KeyCreated
	c.d.mu.RUnlock()
	if f == nil {
		return nil, nil
	}
	vals, err := f(ctx)
	if err != nil {
		return c.vals, err // keep serving the last known ages
	}
	c.vals, c.at = vals, time.Now()
	return vals, nil
}

func (c *keyAgeCache) invalidate() {
	c.mu.Lock()
	c.vals = nil
	c.mu.Unlock()
}
