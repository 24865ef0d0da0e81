package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/ctlsock"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/scheduler"
	"github.com/mrbacd/mrbacd/journal"
)

// backend answers the admin socket from the daemon's scheduler and journal.
type backend struct{ d *Daemon }

// Status implements ctlsock.Backend.
func (b backend) Status(ctx context.Context) (ctlsock.Status, error) {
	d := b.d
	js, err := b.Jobs(ctx)
	if err != nil {
		return ctlsock.Status{}, err
	}
	d.mu.RLock()
	cfg, last := d.cfg, d.last
	d.mu.RUnlock()
	lead := b.leadership(ctx)
	return ctlsock.Status{
		Leadership:    lead,
		Version:       d.opts.Version,
		PID:           os.Getpid(),
		StartedAt:     d.started.UTC(),
		UptimeSeconds: time.Since(d.started).Seconds(),
		ConfigPath:    cfg.Path,
		ConfigHash:    cfg.Hash(),
		LastReload:    last,
		Jobs:          js,
	}, nil
}

// Jobs implements ctlsock.Backend: the scheduler's view plus each job's last journaled run.
func (b backend) Jobs(ctx context.Context) ([]ctlsock.Job, error) {
	var out []ctlsock.Job
	for _, j := range b.d.scheduler().Jobs() {
		aj := ctlsock.Job{Name: j.Name, Schedule: j.Schedule, TimeoutSeconds: j.Timeout.Seconds(), Disabled: j.Disabled}
		if !j.Next.IsZero() {
			n := j.Next.UTC()
			aj.NextRun = &n
		}
		if j.Running != nil {
			aj.Running = &ctlsock.Run{ID: j.Running.ID, Job: j.Name, Trigger: j.Running.Trigger, Status: scheduler.StatusRunning, StartedAt: j.Running.Started.UTC()}
		}
		last, ok, err := b.d.db.LastRun(ctx, j.Name)
		if err != nil {
			return nil, err
		}
		if ok {
			r := toRun(last)
			aj.LastRun = &r
			if aj.Running == nil && r.Status == scheduler.StatusRunning && !b.d.Leading() {
				aj.Running = &r // running on the leader
			}
		}
		out = append(out, aj)
	}
	return out, nil
}

// RunJob implements ctlsock.Backend: the key is checked against the config, then the
// scheduler starts the run (refusing overlap); with wait it returns the finished run.
func (b backend) RunJob(ctx context.Context, job string, req jobs.Request, wait bool) (ctlsock.Run, error) {
	if err := checkKey(b.d.Config(), req.Key); err != nil {
		return ctlsock.Run{}, err
	}
	if !b.d.Leading() {
		return b.queue(ctx, job, req, wait)
	}
	r, err := b.d.scheduler().Trigger(ctx, job, req)
	switch {
	case errors.Is(err, scheduler.ErrUnknownJob):
		return ctlsock.Run{}, fmt.Errorf("%w: %w (jobs: %s)", ctlsock.ErrNotFound, err, strings.Join(b.jobNames(), ", "))
	case errors.Is(err, scheduler.ErrAlreadyRunning):
		return ctlsock.Run{}, fmt.Errorf("%w: %w", ctlsock.ErrConflict, err)
	case errors.Is(err, scheduler.ErrStopped):
		return ctlsock.Run{}, fmt.Errorf("%w: daemon is shutting down: %w", ctlsock.ErrUnavailable, err)
	case err != nil:
		return ctlsock.Run{}, err
	}
	if !wait {
		return ctlsock.Run{ID: r.ID, Job: job, Trigger: r.Trigger, Status: scheduler.StatusRunning, StartedAt: r.Started.UTC()}, nil
	}
	if _, err := r.Wait(ctx); err != nil {
		return ctlsock.Run{}, err
	}
	return b.Run(ctx, r.ID)
}

// checkKey refuses a key cfg does not manage ("" is every key).
func checkKey(cfg *config.Config, key string) error {
	if key == "" {
		return nil
	}
	if _, ok := cfg.Key(key); ok {
		return nil
	}
	names := make([]string, 0, len(cfg.Keys))
	for _, k := range cfg.Keys {
		names = append(names, k.Name)
	}
	sort.Strings(names)
	return fmt.Errorf("%w: unknown key %q (managed keys: %s)", ctlsock.ErrInvalid, key, strings.Join(names, ", "))
}

// queue is RunJob on a standby: the run is queued in the journal for the
// leader; with wait, the standby follows it until the run finished.
func (b backend) queue(ctx context.Context, job string, req jobs.Request, wait bool) (ctlsock.Run, error) {
	if !slices.Contains(b.jobNames(), job) {
		return ctlsock.Run{}, fmt.Errorf("%w: run %q: %w (jobs: %s)", ctlsock.ErrNotFound, job, scheduler.ErrUnknownJob, strings.Join(b.jobNames(), ", "))
	}
	if b.d.stopping.Load() {
		return ctlsock.Run{}, fmt.Errorf("%w: daemon is shutting down", ctlsock.ErrUnavailable)
	}
	rq, run, err := b.d.queueRun(ctx, job, req, wait)
	if err != nil {
		return ctlsock.Run{}, err
	}
	if rq.Status == journal.RequestRefused {
		kind := ctlsock.ErrInvalid
		if strings.Contains(rq.Error, scheduler.ErrAlreadyRunning.Error()) {
			kind = ctlsock.ErrConflict
		}
		return ctlsock.Run{}, fmt.Errorf("%w: the leader (%s) refused request %d: %s", kind, rq.TakenBy, rq.ID, rq.Error)
	}
	if !wait {
		return ctlsock.Run{Job: job, Trigger: req.Trigger, Status: ctlsock.StatusQueued, RequestID: rq.ID, StartedAt: rq.RequestedAt}, nil
	}
	out := toRun(run)
	out.RequestID, out.RunBy = rq.ID, rq.TakenBy
	return out, nil
}

// leadership is who leads, as the journal says; when the journal does not
// answer, this instance's own view, with why.
func (b backend) leadership(ctx context.Context) ctlsock.Leadership {
	d := b.d
	out := ctlsock.Leadership{Leader: d.Leading(), Instance: d.instance, LeaseSeconds: d.Config().HA.Lease.D().Seconds()}
	info, held, err := d.elector.Leader(ctx)
	switch {
	case err != nil:
		out.LeaderError = fmt.Sprintf("the journal did not say who leads: %v", err)
		if st := d.elector.Status(); st.Leader {
			until := st.Until.UTC()
			out.LeaderInstance, out.LeaseExpires = d.instance, &until
		}
	case held:
		exp := info.Expires.UTC()
		out.LeaderInstance, out.LeaseExpires = info.Owner, &exp
	}
	return out
}

func (b backend) jobNames() []string {
	var names []string
	for _, j := range b.d.scheduler().Jobs() {
		names = append(names, j.Name)
	}
	return names
}

// Runs implements ctlsock.Backend.
func (b backend) Runs(ctx context.Context, limit int) ([]ctlsock.Run, error) {
	rs, err := b.d.db.Runs(ctx, journal.RunFilter{Limit: limit})
	if err != nil {
		return nil, err
	}
	out := make([]ctlsock.Run, 0, len(rs))
	for _, r := range rs {
		out = append(out, toRun(r))
	}
	return out, nil
}

// Run implements ctlsock.Backend.
func (b backend) Run(ctx context.Context, id int64) (ctlsock.Run, error) {
	r, err := b.d.db.GetRun(ctx, id)
	if errors.Is(err, journal.ErrNotFound) {
		return ctlsock.Run{}, fmt.Errorf("%w: %w", ctlsock.ErrNotFound, err)
	}
	if err != nil {
		return ctlsock.Run{}, err
	}
	return toRun(r), nil
}

// Reload implements ctlsock.Backend.
func (b backend) Reload(ctx context.Context) (ctlsock.Reload, error) {
	return b.d.Reload(ctx, ctlsock.ReloadTrigger(ctx))
}

// toRun converts a journaled run; its summary is the JSON of a jobs.Result
// (scheduler.Once and the scheduler both record it so).
func toRun(r journal.Run) ctlsock.Run {
	out := ctlsock.Run{ID: r.ID, Job: r.Job, Trigger: r.Trigger, Args: r.Args, Status: r.Status, Error: r.Error, StartedAt: r.StartedAt}
	if !r.FinishedAt.IsZero() {
		f := r.FinishedAt
		out.FinishedAt = &f
	}
	var res struct {
		Failed  bool            `json:"failed"`
		Summary string          `json:"summary"`
		Details json.RawMessage `json:"details"`
	}
	if r.Summary != "" && json.Unmarshal([]byte(r.Summary), &res) == nil {
		out.Failed, out.Summary = res.Failed, res.Summary
		if len(res.Details) > 0 && string(res.Details) != "null" {
			out.Details = res.Details
		}
	}
	out.Failed = out.Failed || (r.Status != scheduler.StatusOK && r.Status != scheduler.StatusRunning)
	return out
}
