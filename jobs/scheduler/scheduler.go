// Package scheduler runs mrbacd's jobs on their cron schedules and on demand.
//
// It closes the gaps of robfig/cron/v3: the last fire of each job is
// persisted in the journal and a fire missed while the daemon was down is
// caught up once at Start; a job never overlaps itself (a trigger while it runs
// is refused with ErrAlreadyRunning, never queued); each run has a timeout and
// a context that Stop cancels; a panic in a runner is recovered, journaled as a
// run with status "panicked" and reported through Options.OnFinish.
//
// Overlap control and panic recovery are done here, not with cron's
// SkipIfStillRunning and Recover wrappers: in v3.0.1, SkipIfStillRunning
// loses its token when a panic unwinds through it (Recover wrapped outside),
// so the job would never run again. Here cron only calls fire, which claims
// the job's slot under a mutex and starts the run in a goroutine whose
// deferred recover always releases the slot. The same slot serves manual
// triggers from the admin socket, so a cron fire and a manual run cannot
// overlap either.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/mrbacd/mrbacd/jobs"
)

// Errors callers branch on (the admin socket maps them to HTTP statuses).
var (
	// ErrUnknownJob: no job of that name is configured.
	ErrUnknownJob = errors.New("unknown job")
	// ErrAlreadyRunning: the job is running; the trigger is refused, not queued.
	ErrAlreadyRunning = errors.New("job already running")
	// ErrStopped: the scheduler is stopping and takes no more work.
	ErrStopped = errors.New("scheduler stopped")
	// ErrInvalidSchedule: a job's cron expression does not parse.
	ErrInvalidSchedule = errors.New("invalid schedule")
)

// Run statuses, as journaled.
const (
	StatusRunning  = "running"
	StatusOK       = "ok"
	StatusFailed   = "failed"
	StatusPanicked = "panicked"
	StatusCanceled = "canceled"
)

// Triggers the scheduler itself uses; others come from callers ("cli", "uid:N").
const (
	TriggerCron    = "cron"
	TriggerCatchUp = "catch-up"
)

// Journal is what the scheduler needs from the journal (package journal).
type Journal interface {
	StartRun(ctx context.Context, job, trigger, args string) (int64, error)
	FinishRun(ctx context.Context, id int64, status, errMsg, summary string) error
	SetLastFire(ctx context.Context, job string, t time.Time) error
	// LastFire's ok is false when the job never fired.
	LastFire(ctx context.Context, job string) (t time.Time, ok bool, err error)
}

// Job is one schedulable job.
type Job struct {
	Name string
	// Schedule is a standard 5-field cron expression or a descriptor
	// (@daily, @every 1h); "" means manual runs only.
	Schedule string
	// Timeout bounds one run; 0 means no bound other than Stop.
	Timeout time.Duration
	// Disabled jobs are not scheduled (nor caught up) but can be run manually.
	Disabled bool
	Runner   jobs.Runner
}

// Finished describes a completed run; it is passed to Options.OnFinish and
// returned by Run.Wait.
type Finished struct {
	RunID    int64
	Job      string
	Trigger  string
	Status   string
	Result   jobs.Result
	Err      error
	Started  time.Time
	Duration time.Duration
	// Panic is the recovered value when Status is StatusPanicked.
	Panic any
}

// Options configures a Scheduler.
type Options struct {
	// Journal persists runs and last fires (required).
	Journal Journal
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock used for catch-up and journaled fire times (default time.Now).
	Now func() time.Time
	// OnFinish, when set, is called after every run is journaled (metrics,
	// notifications). It must not block for long.
	OnFinish func(ctx context.Context, f Finished)
	// Context, when set, is the parent of every run's context and of the
	// scheduler's own journal writes (a leader's fenced context, see
	// journal.WithFence): its end cancels the runs as Stop does, and its
	// values go with every journal call. Default: context.Background().
	Context context.Context
}

// Scheduler runs jobs. Create it with New, configure jobs with SetJobs, then
// Start; Stop ends it.
type Scheduler struct {
	opts Options
	log  *slog.Logger

	ctx    context.Context // cancelled by Stop; parent of every run
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	loc     *time.Location
	jobs    map[string]*entry
	running map[string]*Run // by job name; survives SetJobs
	cron    *cron.Cron
	started bool
	stopped bool
}

type entry struct {
	job   Job
	sched cron.Schedule // nil when manual only or disabled
}

// Run is a started run.
type Run struct {
	ID      int64
	Job     string
	Trigger string
	Started time.Time

	done chan struct{}
	fin  Finished
}

// Done is closed when the run has finished and been journaled.
func (r *Run) Done() <-chan struct{} { return r.done }

// Wait waits for the run to finish or ctx to end.
func (r *Run) Wait(ctx context.Context) (Finished, error) {
	select {
	case <-r.done:
		return r.fin, nil
	case <-ctx.Done():
		return Finished{}, fmt.Errorf("wait for %s run %d: %w", r.Job, r.ID, ctx.Err())
	}
}

// RunInfo describes a run in progress.
type RunInfo struct {
	ID      int64     `json:"id"`
	Trigger string    `json:"trigger"`
	Started time.Time `json:"started_at"`
}

// JobStatus is a job as the scheduler sees it now.
type JobStatus struct {
	Name     string
	Schedule string
	Timeout  time.Duration
	Disabled bool
	// Next is the next scheduled fire (zero when not scheduled).
	Next time.Time
	// Running is the run in progress, nil when idle.
	Running *RunInfo
}

// New returns a scheduler with no jobs.
func New(opts Options) *Scheduler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	parent := opts.Context
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithCancel(parent)
	return &Scheduler{
		opts:    opts,
		log:     opts.Logger,
		ctx:     ctx,
		cancel:  cancel,
		loc:     time.UTC,
		jobs:    map[string]*entry{},
		running: map[string]*Run{},
	}
}

// SetJobs replaces the configured jobs and the time zone schedules are read
// in (nil means UTC). Every schedule is validated first; on error nothing
// changes. Runs in progress go on with the runner they started with; the
// next run of a job uses the new one. Used at start and on reload.
func (s *Scheduler) SetJobs(loc *time.Location, js []Job) error {
	if loc == nil {
		loc = time.UTC
	}
	next := make(map[string]*entry, len(js))
	for _, j := range js {
		if j.Name == "" {
			return errors.New("set jobs: a job has no name")
		}
		if j.Runner == nil {
			return fmt.Errorf("set jobs: job %s: no runner", j.Name)
		}
		if _, dup := next[j.Name]; dup {
			return fmt.Errorf("set jobs: job %s listed twice", j.Name)
		}
		if j.Timeout < 0 {
			return fmt.Errorf("set jobs: job %s: negative timeout", j.Name)
		}
		e := &entry{job: j}
		if j.Schedule != "" && !j.Disabled {
			sched, err := ParseSchedule(j.Schedule)
			if err != nil {
				return fmt.Errorf("set jobs: job %s: %w", j.Name, err)
			}
			e.sched = sched
		}
		next[j.Name] = e
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrStopped
	}
	s.loc = loc
	s.jobs = next
	if s.started {
		s.restartCronLocked()
	}
	return nil
}

// restartCronLocked replaces the cron instance with one holding the current
// entries. Caller holds s.mu.
func (s *Scheduler) restartCronLocked() {
	if s.cron != nil {
		s.cron.Stop() // our cron funcs return at once; nothing to wait for
	}
	c := cron.New(cron.WithLocation(s.loc), cron.WithParser(parser))
	for name, e := range s.jobs {
		if e.sched == nil {
			continue
		}
		name := name
		c.Schedule(e.sched, cron.FuncJob(func() { s.fire(name) }))
	}
	c.Start()
	s.cron = c
}

// Start catches up, once, each scheduled job whose last persisted fire is
// older than its most recent scheduled time, then starts the cron timers.
// A job that never fired is not caught up; its first fire time is recorded
// so that downtime from now on is detected.
func (s *Scheduler) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started || s.stopped {
		s.mu.Unlock()
		return errors.New("scheduler: start: already started or stopped")
	}
	now := s.opts.Now().In(s.loc)
	var catchUp []string
	names := make([]string, 0, len(s.jobs))
	for name := range s.jobs {
		names = append(names, name)
	}
	sort.Strings(names)
	scheds := map[string]cron.Schedule{}
	for _, name := range names {
		if e := s.jobs[name]; e.sched != nil {
			scheds[name] = e.sched
		}
	}
	s.mu.Unlock()

	for _, name := range names {
		sched := scheds[name]
		if sched == nil {
			continue
		}
		last, ok, err := s.opts.Journal.LastFire(ctx, name)
		if err != nil {
			s.log.Error("catch-up: reading last fire failed; not catching up", "job", name, "err", err)
			continue
		}
		if !ok || last.IsZero() {
			if err := s.opts.Journal.SetLastFire(ctx, name, now); err != nil {
				s.log.Error("recording first fire time failed", "job", name, "err", err)
			}
			continue
		}
		if nextAfter := sched.Next(last.In(s.loc)); !nextAfter.After(now) {
			s.log.Info("catching up a run missed while down", "job", name,
				"last_fire", last.UTC().Format(time.RFC3339), "missed_fire", nextAfter.UTC().Format(time.RFC3339))
			catchUp = append(catchUp, name)
		}
	}

	s.mu.Lock()
	s.started = true
	s.restartCronLocked()
	s.mu.Unlock()

	for _, name := range catchUp {
		if _, err := s.trigger(name, jobs.Request{Trigger: TriggerCatchUp}, true); err != nil {
			s.log.Error("catch-up run not started", "job", name, "err", err)
		}
	}
	return nil
}

// fire is what cron calls: it starts a scheduled run, or logs why not.
func (s *Scheduler) fire(name string) {
	defer func() {
		if v := recover(); v != nil { // a bug in fire itself must not kill cron
			s.log.Error("scheduler fire panicked", "job", name, "panic", fmt.Sprint(v))
		}
	}()
	if _, err := s.trigger(name, jobs.Request{Trigger: TriggerCron}, true); err != nil {
		level := slog.LevelError
		if errors.Is(err, ErrAlreadyRunning) || errors.Is(err, ErrStopped) {
			level = slog.LevelWarn
		}
		s.log.Log(s.ctx, level, "scheduled run skipped", "job", name, "err", err)
	}
}

// Trigger starts a run of job now, unless it is running already
// (ErrAlreadyRunning), unknown (ErrUnknownJob) or the scheduler is stopping
// (ErrStopped). req.Trigger says who asked ("cli", "uid:N"); req.RunID is
// set by the scheduler. The run's context is the scheduler's, not ctx: a
// client that disconnects does not cancel the run.
func (s *Scheduler) Trigger(ctx context.Context, job string, req jobs.Request) (*Run, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req.Trigger == "" {
		return nil, errors.New("trigger: empty trigger: say who asked")
	}
	return s.trigger(job, req, false)
}

func (s *Scheduler) trigger(name string, req jobs.Request, scheduled bool) (*Run, error) {
	now := s.opts.Now()
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil, fmt.Errorf("run %s: %w", name, ErrStopped)
	}
	e, ok := s.jobs[name]
	if !ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("run %q: %w", name, ErrUnknownJob)
	}
	if cur := s.running[name]; cur != nil {
		// Read cur under the lock: its ID is set once its run is journaled.
		err := fmt.Errorf("run %s: %w (starting, asked by %s)", name, ErrAlreadyRunning, cur.Trigger)
		if cur.ID != 0 {
			err = fmt.Errorf("run %s: %w (run %d, asked by %s, started %s)", name, ErrAlreadyRunning,
				cur.ID, cur.Trigger, cur.Started.UTC().Format(time.RFC3339))
		}
		s.mu.Unlock()
		if scheduled {
			s.recordFire(name, now)
		}
		return nil, err
	}
	r := &Run{Job: name, Trigger: req.Trigger, Started: now, done: make(chan struct{})}
	s.running[name] = r // claim the slot before leaving the lock
	s.wg.Add(1)
	job := e.job
	s.mu.Unlock()

	if scheduled {
		s.recordFire(name, now)
	}
	id, err := startRun(s.ctx, s.opts.Journal, name, req)
	if err != nil {
		s.release(name, r)
		s.wg.Done()
		return nil, fmt.Errorf("run %s: journal: %w", name, err)
	}
	s.mu.Lock()
	r.ID = id
	s.mu.Unlock()
	req.RunID = id
	go s.execute(job, r, req)
	return r, nil
}

func (s *Scheduler) recordFire(name string, t time.Time) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
	defer cancel()
	if err := s.opts.Journal.SetLastFire(ctx, name, t); err != nil {
		s.log.Error("recording fire time failed", "job", name, "err", err)
	}
}

func (s *Scheduler) release(name string, r *Run) {
	s.mu.Lock()
	if s.running[name] == r {
		delete(s.running, name)
	}
	s.mu.Unlock()
}

// execute runs one job and journals the outcome. It never lets a panic out.
func (s *Scheduler) execute(job Job, r *Run, req jobs.Request) {
	defer s.wg.Done()
	ctx, cancel := s.ctx, context.CancelFunc(func() {})
	if job.Timeout > 0 {
		ctx, cancel = context.WithTimeout(s.ctx, job.Timeout)
	}
	log := s.log.With("job", job.Name, "run_id", r.ID, "trigger", r.Trigger)
	fin := Finished{RunID: r.ID, Job: job.Name, Trigger: r.Trigger, Started: r.Started}
	invoke(ctx, job.Runner, req, &fin, log)
	cancel()
	fin.Duration = s.opts.Now().Sub(r.Started)
	if fin.Err != nil && fin.Panic == nil && s.ctx.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		fin.Err = fmt.Errorf("timed out after %s: %w", job.Timeout, fin.Err)
	}
	classify(&fin, s.ctx)
	if fin.Status == StatusCanceled && fin.Err != nil {
		fin.Err = fmt.Errorf("canceled by shutdown: %w", fin.Err)
	}
	finishRun(s.ctx, s.opts.Journal, &fin, log)

	if s.opts.OnFinish != nil {
		func() {
			defer func() {
				if v := recover(); v != nil {
					log.Error("run finish hook panicked", "panic", fmt.Sprint(v))
				}
			}()
			hctx, hcancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
			defer hcancel()
			s.opts.OnFinish(hctx, fin)
		}()
	}
	r.fin = fin
	s.release(job.Name, r)
	close(r.done)
}

// Jobs returns the configured jobs sorted by name, with their next fire and
// the run in progress.
func (s *Scheduler) Jobs() []JobStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now().In(s.loc)
	out := make([]JobStatus, 0, len(s.jobs))
	for name, e := range s.jobs {
		st := JobStatus{Name: name, Schedule: e.job.Schedule, Timeout: e.job.Timeout, Disabled: e.job.Disabled}
		if e.sched != nil && !s.stopped {
			st.Next = e.sched.Next(now).UTC()
		}
		if r := s.running[name]; r != nil {
			st.Running = &RunInfo{ID: r.ID, Trigger: r.Trigger, Started: r.Started}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Location returns the time zone schedules are read in.
func (s *Scheduler) Location() *time.Location {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loc
}

// Stop takes no more work, stops the timers, cancels every running run and
// waits for them to be journaled or ctx to end (then it returns ctx's error;
// the runs go on being cancelled in the background).
func (s *Scheduler) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	if s.cron != nil {
		s.cron.Stop()
	}
	s.mu.Unlock()
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("scheduler stop: runs still finishing: %w", ctx.Err())
	}
}
