// Package app assembles a running mrbacd from a config: the journal, the
// platform client, the secret stores, the notifier and its outbox, the jobs,
// and for the daemon the scheduler, the admin socket, the metrics listener
// and the gateway. Command mrbacd parses flags, calls into app and prints;
// every subcommand is wired here, the same way.
//
//   - Open builds the parts one foreground command needs (`mrbacd rotate`,
//     `audit`, `budget`, the demo); App.Run runs one job through them,
//     journaled exactly as a scheduled run (scheduler.Once).
//   - Plan reads what the next runs would do, changing nothing.
//   - RunDaemon is `mrbacd run`: package daemon driven by this wiring.
//   - ServeGateway is `mrbacd gateway`: the gateway alone, reloaded on
//     SIGHUP through the same path as the daemon's.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/audit"
	"github.com/mrbacd/mrbacd/jobs/budget"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/jobs/scheduler"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/notify"
	"github.com/mrbacd/mrbacd/secrets"
)

// ConfigError is an error of the config or of what it names (an admin key
// that cannot be read, a notifier that cannot be built): the command's usage
// is at fault, not the job (exit code 2 rather than 1).
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// IsConfigError reports whether err is (or wraps) a ConfigError.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

// Options says what Open builds.
type Options struct {
	// DryRun creates and records nothing: the file store is opened as plan
	// does, the journal read-only and only if it exists, and no outbox.
	DryRun bool
	// NoStores: the job does not read the secret stores (budget).
	NoStores bool
	// Notify is where notifications go when notify.slack is not configured.
	Notify io.Writer
}

// App is the parts of mrbacd one foreground command uses.
type App struct {
	Config   *config.Config
	Logger   *slog.Logger
	Platform *mistral.Client
	// Stores by backend name; nil with Options.NoStores.
	Stores map[string]secrets.Store
	// Journal is nil in a dry run without a journal file.
	Journal journal.Journal
	// Outbox is nil in a dry run.
	Outbox *notify.Outbox

	dryRun  bool
	notes   *rotationNotes
	engine  *rotate.Engine
	closers []func()
}

// Open builds the parts of cfg a foreground command needs. Close releases them.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger, opts Options) (_ *App, err error) {
	a := &App{Config: cfg, Logger: log, dryRun: opts.DryRun, notes: &rotationNotes{}}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if a.Platform, err = NewMistral(cfg, log); err != nil {
		return nil, &ConfigError{err}
	}
	if !opts.NoStores {
		open := openStores
		if opts.DryRun {
			open = openPlanStores
		}
		stores, closeStores, err := open(ctx, cfg, log)
		if err != nil {
			return nil, err
		}
		a.Stores = stores
		a.closers = append(a.closers, closeStores)
	}
	if a.Journal, err = openJournal(ctx, cfg, opts.DryRun, log); err != nil {
		return nil, err
	}
	if a.Journal != nil {
		a.closers = append(a.closers, func() { a.Journal.Close() })
	}
	if !opts.DryRun {
		sender, err := newNotifier(cfg, opts.Notify, log)
		if err != nil {
			return nil, &ConfigError{err}
		}
		a.Outbox = notify.NewOutbox(a.Journal, sender, notify.OutboxOptions{Logger: log})
	}
	return a, nil
}

// Close releases what Open opened.
func (a *App) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}

// Job returns the runner of job (jobs.Rotate, jobs.Audit, jobs.Budget).
func (a *App) Job(job string) (jobs.Runner, error) {
	switch job {
	case jobs.Rotate:
		if a.engine == nil {
			var n rotate.Notifier
			if !a.dryRun {
				n = a.notes
			}
			e, err := newEngine(a.Config, a.Platform, a.Stores, a.Journal, n, a.Logger)
			if err != nil {
				return nil, &ConfigError{err}
			}
			a.engine = e
		}
		return a.engine, nil
	case jobs.Audit:
		return newAuditJob(a.Config, a.Platform, a.Stores, a.Journal, a.Outbox, a.Logger), nil
	case jobs.Budget:
		return newBudgetJob(a.Config, a.Platform, a.Journal, a.Outbox, a.Logger), nil
	}
	return nil, fmt.Errorf("unknown job %q", job)
}

// Run runs job once in the foreground, journaled as a scheduled run is
// (scheduler.Once; a dry run records nothing), and queues the notifications
// of a rotation (a digest of the rotations done, one message per failure),
// even when the run was interrupted. The error is the run's: a journal that
// refuses its start, or the job's own error. Deliver with Flush.
func (a *App) Run(ctx context.Context, job string, req jobs.Request) (scheduler.Finished, error) {
	r, err := a.Job(job)
	if err != nil {
		return scheduler.Finished{}, err
	}
	var j scheduler.Journal
	if !req.DryRun {
		j = a.Journal
	}
	fin, err := scheduler.Once(ctx, j, job, r, req, a.Logger)
	if err != nil {
		return fin, err
	}
	if job == jobs.Rotate && a.Outbox != nil {
		if _, err := a.notes.enqueue(context.WithoutCancel(ctx), a.Outbox, fin.Result, time.Now()); err != nil {
			a.Logger.Error("queueing the rotation notifications failed", "err", err)
		}
	}
	return fin, fin.Err
}

// Flush delivers what the runs queued, within FlushTimeout. Undelivered
// messages stay queued in the journal (notify.ErrUndelivered) for the
// daemon or the next run.
func (a *App) Flush(ctx context.Context) error {
	if a.Outbox == nil {
		return nil
	}
	fctx, cancel := context.WithTimeout(ctx, FlushTimeout)
	defer cancel()
	return a.Outbox.Flush(fctx)
}

// newEngine builds the rotation engine of cfg; n may be nil.
func newEngine(cfg *config.Config, platform rotate.Platform, stores map[string]secrets.Store, j journal.Journal,
	n rotate.Notifier, log *slog.Logger) (*rotate.Engine, error) {
	deps := rotate.Deps{Platform: platform, Stores: stores, Logger: log, Notifier: n}
	if j != nil {
		deps.Journal = j
	}
	return rotate.New(deps, rotate.OptionsFromConfig(cfg), rotate.KeysFromConfig(cfg))
}

// newAuditJob wires the audit job: the platform, the stores' records, the
// journal (findings already reported; may be nil) and the outbox its digest
// goes to (nil: no notification).
func newAuditJob(cfg *config.Config, platform *mistral.Client, stores map[string]secrets.Store, j journal.Journal,
	outbox *notify.Outbox, logger *slog.Logger) *audit.Job {
	job := &audit.Job{Config: cfg, Platform: platform, AuditLog: platform, Logger: logger,
		Records: audit.StoreRecords{Stores: stores, Target: rotate.Target}}
	if j != nil {
		job.Journal = j
	}
	if outbox != nil {
		job.Notifier = audit.OutboxNotifier{Outbox: outbox}
	}
	return job
}

// newBudgetJob wires the budget job: the platform, the journal (once-marks;
// may be nil) and the outbox its alerts go to (nil: no notification).
func newBudgetJob(cfg *config.Config, platform *mistral.Client, j journal.Journal, outbox *notify.Outbox, logger *slog.Logger) *budget.Job {
	job := &budget.Job{Config: cfg, Platform: platform, Logger: logger}
	if j != nil {
		job.Journal = j
	}
	if outbox != nil {
		job.Notifier = budget.OutboxNotifier{Outbox: outbox}
	}
	return job
}
