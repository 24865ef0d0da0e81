package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/election"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/jobs/scheduler"
	"github.com/mrbacd/mrbacd/journal"
)

// Leader election among the daemons sharing a journal (package election):
// every daemon campaigns; the leader runs the schedule (scheduled runs,
// catch-up), resumes rotations in flight and starts the runs standbys
// queued (journal.RunRequests), all under its tenure's fenced context, so
// each journal write of its jobs is refused once another daemon has taken
// the lease over. A standby serves its admin socket and metrics, and its
// long-running services (the outbox worker, the gateway), and queues the
// runs asked of it for the leader. A daemon alone on its journal always
// wins: it behaves as if there were no election.

// RotationLeaseOwner is the owner under which a daemon's rotation engine
// holds its journal lease (rotate.LeaseName): its election instance, so a
// daemon taking leadership over frees the lease its predecessor held at
// once, rather than after the lease's TTL.
func RotationLeaseOwner(instance string) string { return "mrbacd:" + instance }

// DefaultRequestPoll is how often the leader looks for queued run requests.
const DefaultRequestPoll = time.Second

// runArgs is a queued run's arguments (journal.RunRequest.Args).
type runArgs struct {
	Key    string `json:"key,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
	Force  bool   `json:"force,omitempty"`
}

// sdStatus is systemd's STATUS line while serving.
func (d *Daemon) sdStatus() string {
	if d.Leading() {
		return "STATUS=serving: leader (running the schedule)"
	}
	return "STATUS=serving: standby"
}

// campaign runs the election until ctx ends.
func (d *Daemon) campaign(ctx context.Context) {
	defer close(d.electDone)
	d.elector.Run(ctx, d.lead)
}

// Leading reports whether this daemon leads (its schedule runs).
func (d *Daemon) Leading() bool { return d.leading.Load() }

// Instance is this daemon's name in the election.
func (d *Daemon) Instance() string { return d.instance }

// Elector returns the daemon's elector (tests, status).
func (d *Daemon) Elector() *election.Elector { return d.elector }

// waitFirstAttempt returns once the elector's first attempt is known: lost,
// or won and the schedule started; or when ctx ends or the lease passes.
func (d *Daemon) waitFirstAttempt(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, d.Config().HA.Lease.D())
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		st := d.elector.Status()
		if d.Leading() || (st.Attempts > 0 && !st.Leader) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-d.electDone:
			return
		case <-tick.C:
		}
	}
}

// lead is one tenure: ctx carries its fence and ends with it.
func (d *Daemon) lead(ctx context.Context) {
	st := d.elector.Status()
	log := d.log.With("instance", d.instance, "token", st.Token)
	log.Info("leadership gained: running the schedule", "previous_leader", st.Previous, "takeover", st.Takeover,
		"lease", d.Config().HA.Lease.D().String())
	d.metrics.ObserveLeadership(true, st.Takeover)
	defer d.metrics.ObserveLeadership(false, false)

	sched, comps, err := d.swapScheduler(ctx, true)
	if err != nil {
		log.Error("leadership given up: the schedule could not be set up", "err", err)
		return
	}
	d.takeOver(ctx, st)
	if err := sched.Start(ctx); err != nil {
		log.Error("leadership given up: the scheduler did not start", "err", err)
		d.standDown(log, sched)
		return
	}
	d.resumeInFlight(ctx, comps)
	d.leading.Store(true)
	if d.ready.Load() {
		SdNotify(d.sdStatus())
	}
	reqDone := make(chan struct{})
	go func() {
		defer close(reqDone)
		d.serveRequests(ctx, sched)
	}()
	<-ctx.Done()
	d.leading.Store(false)
	<-reqDone
	d.standDown(log, sched)
}

// standDown stops the leader's scheduler (cancelling its runs, which stay
// journaled: rotations in flight are resumed by the next leader) and puts a
// standby scheduler in its place.
func (d *Daemon) standDown(log *slog.Logger, sched *scheduler.Scheduler) {
	sctx, cancel := context.WithTimeout(context.Background(), d.Config().ShutdownTimeout.D())
	err := sched.Stop(sctx)
	cancel()
	if err != nil {
		log.Warn("runs still finishing as leadership ends", "err", err)
	}
	if !d.stopping.Load() {
		if _, _, err := d.swapScheduler(context.Background(), false); err != nil {
			log.Warn("standby scheduler not set up; the jobs list may be stale", "err", err)
		}
	}
	why := "lease lost"
	if d.stopping.Load() {
		why = "stopping"
	} else if d.ready.Load() {
		SdNotify(d.sdStatus())
	}
	log.Info("leadership lost: the schedule stopped", "reason", why)
}

// swapScheduler replaces the scheduler with a new one of the current config
// whose runs have parent: the leader's (leading), or a standby's, never
// started, when the leader's has stopped. Taking the lead, it stops the
// standby's it replaces. Reloads are held off meanwhile.
func (d *Daemon) swapScheduler(parent context.Context, leading bool) (*scheduler.Scheduler, *Components, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.mu.RLock()
	cfg, comps, old := d.cfg, d.comps, d.sched
	d.mu.RUnlock()
	s, err := d.newScheduler(parent, cfg, comps)
	if err != nil {
		return nil, nil, err
	}
	d.mu.Lock()
	d.sched = s
	d.mu.Unlock()
	if old != nil && leading {
		old.Stop(context.Background()) // a standby's: nothing runs on it
	}
	return s, comps, nil
}

// newScheduler returns a scheduler of cfg's jobs whose runs have parent.
func (d *Daemon) newScheduler(parent context.Context, cfg *config.Config, comps *Components) (*scheduler.Scheduler, error) {
	s := scheduler.New(scheduler.Options{Journal: d.db, Logger: d.log, Now: d.opts.Now, OnFinish: d.onFinish, Context: parent})
	loc, js, err := d.jobsFor(cfg, comps)
	if err != nil {
		return nil, err
	}
	if err := s.SetJobs(loc, js); err != nil {
		return nil, err
	}
	return s, nil
}

// takeOver settles what earlier leaders left: their runs still marked
// running are canceled, and the rotation lease the previous leader held is
// freed, so the rotations in flight resume now.
func (d *Daemon) takeOver(ctx context.Context, st election.Status) {
	if n, err := d.db.AbandonLeaderRuns(ctx, d.instance, "abandoned: the leader running it lost its lease"); err != nil {
		d.log.Error("canceling the runs of earlier leaders failed", "err", err)
	} else if n > 0 {
		d.log.Warn("runs left running by an earlier leader marked canceled", "runs", n)
	}
	if st.Previous == "" {
		return
	}
	owner := RotationLeaseOwner(st.Previous)
	holder, _, held, err := d.db.LeaseHolder(ctx, rotate.LeaseName)
	if err != nil || !held || holder != owner {
		return
	}
	if err := d.db.ReleaseLease(ctx, rotate.LeaseName, owner); err != nil {
		d.log.Error("freeing the previous leader's rotation lease failed; its rotations resume once it expires",
			"previous_leader", st.Previous, "err", err)
		return
	}
	d.log.Info("freed the previous leader's rotation lease", "previous_leader", st.Previous)
}

// serveRequests starts the runs standbys queued, until ctx ends.
func (d *Daemon) serveRequests(ctx context.Context, sched *scheduler.Scheduler) {
	every := d.opts.RequestPoll
	if every <= 0 {
		every = DefaultRequestPoll
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		d.takeRequests(ctx, sched)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// takeRequests takes each queued request (at most once across leaders),
// starts its run and records the run's id, or why it was refused.
func (d *Daemon) takeRequests(ctx context.Context, sched *scheduler.Scheduler) {
	rs, err := d.db.QueuedRunRequests(ctx, 20)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("reading queued run requests failed", "err", err)
		}
		return
	}
	for _, r := range rs {
		ok, err := d.db.TakeRunRequest(ctx, r.ID, d.instance)
		if err != nil || !ok {
			if err != nil && ctx.Err() == nil {
				d.log.Warn("taking a run request failed", "request_id", r.ID, "err", err)
			}
			continue
		}
		log := d.log.With("request_id", r.ID, "job", r.Job, "trigger", r.Trigger, "requested_by", r.RequestedBy)
		var runID int64
		run, err := d.startRequested(ctx, sched, r)
		if err == nil {
			runID = run.ID
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if serr := d.db.SettleRunRequest(ctx, r.ID, runID, msg); serr != nil {
			log.Error("recording the requested run failed", "run_id", runID, "err", serr)
		}
		if err != nil {
			log.Warn("run request refused", "err", err)
			continue
		}
		log.Info("run request started", "run_id", runID)
	}
}

func (d *Daemon) startRequested(ctx context.Context, sched *scheduler.Scheduler, r journal.RunRequest) (*scheduler.Run, error) {
	var a runArgs
	if r.Args != "" {
		if err := json.Unmarshal([]byte(r.Args), &a); err != nil {
			return nil, fmt.Errorf("arguments %q: %w", r.Args, err)
		}
	}
	if err := checkKey(d.Config(), a.Key); err != nil {
		return nil, err
	}
	return sched.Trigger(ctx, r.Job, jobs.Request{Trigger: r.Trigger, Key: a.Key, DryRun: a.DryRun, Force: a.Force})
}

// requestPollWait is how often a standby waiting for a queued run looks at it.
const requestPollWait = 200 * time.Millisecond

// queueRun queues job for the leader; with wait it polls the request, then
// its run, until the run finished or ctx ends.
func (d *Daemon) queueRun(ctx context.Context, job string, req jobs.Request, wait bool) (journal.RunRequest, journal.Run, error) {
	args, _ := json.Marshal(runArgs{Key: req.Key, DryRun: req.DryRun, Force: req.Force})
	id, err := d.db.RequestRun(ctx, job, req.Trigger, string(args), d.instance)
	if err != nil {
		return journal.RunRequest{}, journal.Run{}, err
	}
	d.log.Info("run queued for the leader", "request_id", id, "job", job, "trigger", req.Trigger)
	if !wait {
		r, err := d.db.GetRunRequest(ctx, id)
		return r, journal.Run{}, err
	}
	t := time.NewTicker(requestPollWait)
	defer t.Stop()
	var r journal.RunRequest
	for {
		if r.Status != journal.RequestStarted {
			if r, err = d.db.GetRunRequest(ctx, id); err != nil {
				return r, journal.Run{}, err
			}
			if r.Status == journal.RequestRefused {
				return r, journal.Run{}, nil
			}
		}
		if r.Status == journal.RequestStarted {
			run, err := d.db.GetRun(ctx, r.RunID)
			if err != nil && !errors.Is(err, journal.ErrNotFound) {
				return r, journal.Run{}, err
			}
			if err == nil && run.Status != journal.RunRunning {
				return r, run, nil
			}
		}
		select {
		case <-ctx.Done():
			return r, journal.Run{}, fmt.Errorf("waiting for the leader to run request %d (status %s): %w", id, r.Status, ctx.Err())
		case <-t.C:
		}
	}
}
