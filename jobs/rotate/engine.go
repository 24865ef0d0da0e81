package rotate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/secrets"
)

// Deps are the engine's collaborators.
type Deps struct {
	Platform Platform
	// Stores maps a backend name ("vault", "aws", "file") to its store.
	Stores  map[string]secrets.Store
	Journal Journal
	// Notifier is optional.
	Notifier Notifier
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// Engine rotates managed keys. It is safe for concurrent use; concurrent runs
// never work on the same key (journal constraint, journal lease and an
// in-process claim per key).
type Engine struct {
	d     Deps
	opts  Options
	keys  []KeySpec
	byKey map[string]KeySpec
	log   *slog.Logger
	now   func() time.Time
	host  string

	mu        sync.Mutex
	active    map[string]bool // keys some run of this engine works on
	leaseRefs int             // runs holding the journal lease
}

// Outcomes of a key in a run's report.
const (
	OutcomeRotated        = "rotated"
	OutcomeBootstrapped   = "bootstrapped"
	OutcomeNotDue         = "not_due"
	OutcomeFailed         = "failed"
	OutcomeBusy           = "busy"
	OutcomeInterrupted    = "interrupted"
	OutcomeWouldRotate    = "would_rotate"
	OutcomeWouldBootstrap = "would_bootstrap"
	OutcomeWouldResume    = "would_resume"
)

// KeyReport is one key's line in a run's report (Result.Details is a
// []KeyReport sorted by key).
type KeyReport struct {
	Key        string       `json:"key"`
	Outcome    string       `json:"outcome"`
	Reason     string       `json:"reason,omitempty"`
	RotationID string       `json:"rotation_id,omitempty"`
	Resumed    bool         `json:"resumed,omitempty"`
	Step       journal.Step `json:"step,omitempty"`
	OldKeyID   string       `json:"old_key_id,omitempty"`
	NewKeyID   string       `json:"new_key_id,omitempty"`
	NewKeyName string       `json:"new_key_name,omitempty"`
	// InFlight is true when the rotation stays journaled for the next run.
	InFlight bool   `json:"in_flight,omitempty"`
	Note     string `json:"note,omitempty"`
	Error    string `json:"error,omitempty"`
}

// New checks its arguments and returns an engine for keys. Deps.Journal may
// be nil for an engine that only plans (Plan); Run and Resume need it.
func New(d Deps, opts Options, keys []KeySpec) (*Engine, error) {
	if d.Platform == nil {
		return nil, errors.New("rotate: a platform is required")
	}
	opts.fill()
	e := &Engine{d: d, opts: opts, byKey: map[string]KeySpec{}, log: d.Logger, now: d.Now, active: map[string]bool{}}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	for _, k := range keys {
		if k.Name == "" {
			return nil, errors.New("rotate: a managed key has no name")
		}
		if _, dup := e.byKey[k.Name]; dup {
			return nil, fmt.Errorf("rotate: managed key %q declared twice", k.Name)
		}
		if _, ok := d.Stores[k.Backend]; !ok {
			return nil, fmt.Errorf("rotate: key %q: no %q store configured", k.Name, k.Backend)
		}
		if k.RotateEvery <= 0 {
			k.RotateEvery = DefaultRotateEvery
		}
		if k.ExpirationGrace <= 0 {
			k.ExpirationGrace = DefaultExpirationGrace
		}
		e.byKey[k.Name] = k
		e.keys = append(e.keys, k)
	}
	// Bound API work per service: Concurrency calls at once to the platform
	// and to each store.
	e.d.Platform = boundedPlatform{p: d.Platform, slots: make(slots, opts.Concurrency)}
	bounded := make(map[string]secrets.Store, len(d.Stores))
	for name, st := range d.Stores {
		b := boundedStore{s: st, slots: make(slots, opts.Concurrency)}
		if st.Name() == "file" {
			b.writes = make(slots, 1)
		}
		bounded[name] = b
	}
	e.d.Stores = bounded
	if d.Journal != nil {
		e.d.Journal = serialJournal{j: d.Journal, mu: make(slots, 1)}
	}
	e.host, _ = os.Hostname()
	if e.opts.Owner == "" {
		e.opts.Owner = fmt.Sprintf("mrbacd:%s:%d:%s", e.host, os.Getpid(), randHex(4))
	}
	return e, nil
}

var errNoJournal = errors.New("rotate: no journal")

// Keys returns the managed keys.
func (e *Engine) Keys() []KeySpec { return append([]KeySpec(nil), e.keys...) }

// Run implements jobs.Runner: it resumes the rotations in flight, then
// rotates the keys that are due (all of them with req.Force; only req.Key when
// set). A key whose in-flight rotation was resumed is not rotated again in the
// same run. With req.DryRun it reports what it would do and changes nothing.
func (e *Engine) Run(ctx context.Context, req jobs.Request) (jobs.Result, error) {
	if req.Key != "" {
		if _, ok := e.byKey[req.Key]; !ok {
			return jobs.Result{}, fmt.Errorf("rotate: unknown key %q", req.Key)
		}
	}
	if req.DryRun {
		return e.dryRun(ctx, req)
	}
	if e.d.Journal == nil {
		return jobs.Result{}, errNoJournal
	}
	inflight, err := e.d.Journal.InFlightRotations(ctx)
	if err != nil {
		return jobs.Result{}, fmt.Errorf("rotate: %w", err)
	}
	r := e.newRun(ctx, req)
	var tasks []*task
	resumed := map[string]bool{}
	for _, rot := range inflight {
		if req.Key != "" && rot.KeyName != req.Key {
			continue
		}
		resumed[rot.KeyName] = true
		tasks = append(tasks, r.resumeTask(rot))
	}
	for _, k := range e.keys {
		if (req.Key != "" && k.Name != req.Key) || resumed[k.Name] {
			continue
		}
		tasks = append(tasks, r.checkTask(k))
	}
	if err := r.drive(tasks); err != nil {
		return jobs.Result{}, fmt.Errorf("rotate: %w", err)
	}
	return r.result(tasks), nil
}

// Resume resumes the rotations in flight only (what a daemon does at start).
func (e *Engine) Resume(ctx context.Context) (jobs.Result, error) {
	if e.d.Journal == nil {
		return jobs.Result{}, errNoJournal
	}
	inflight, err := e.d.Journal.InFlightRotations(ctx)
	if err != nil {
		return jobs.Result{}, fmt.Errorf("rotate: %w", err)
	}
	r := e.newRun(ctx, jobs.Request{Trigger: "resume"})
	var tasks []*task
	for _, rot := range inflight {
		tasks = append(tasks, r.resumeTask(rot))
	}
	if err := r.drive(tasks); err != nil {
		return jobs.Result{}, fmt.Errorf("rotate: %w", err)
	}
	return r.result(tasks), nil
}

// result summarizes a run.
func (r *run) result(tasks []*task) jobs.Result {
	reps := make([]KeyReport, 0, len(tasks))
	counts := map[string]int{}
	failed := false
	for _, t := range tasks {
		reps = append(reps, t.rep)
		counts[t.rep.Outcome]++
		if t.rep.Outcome == OutcomeFailed || t.rep.Outcome == OutcomeInterrupted {
			failed = true
		}
	}
	sort.Slice(reps, func(i, j int) bool { return reps[i].Key < reps[j].Key })
	started := counts[OutcomeRotated] + counts[OutcomeBootstrapped] + counts[OutcomeFailed] + counts[OutcomeInterrupted]
	s := fmt.Sprintf("rotated %d of %d keys", counts[OutcomeRotated]+counts[OutcomeBootstrapped], started)
	var extra []string
	for _, o := range []string{OutcomeBootstrapped, OutcomeFailed, OutcomeInterrupted, OutcomeBusy, OutcomeNotDue} {
		if counts[o] > 0 {
			extra = append(extra, fmt.Sprintf("%d %s", counts[o], strings.ReplaceAll(o, "_", " ")))
		}
	}
	if n := r.resumedCount(tasks); n > 0 {
		extra = append(extra, fmt.Sprintf("%d resumed", n))
	}
	if len(extra) > 0 {
		s += " (" + strings.Join(extra, ", ") + ")"
	}
	return jobs.Result{Failed: failed, Summary: s, Details: reps}
}

func (r *run) resumedCount(tasks []*task) int {
	n := 0
	for _, t := range tasks {
		if t.rep.Resumed {
			n++
		}
	}
	return n
}

// run is one pass of the engine.
type run struct {
	e   *Engine
	ctx context.Context
	req jobs.Request

	mu       sync.Mutex
	keys     []mistral.Key // all platform keys, listed at most once per run
	keysErr  error
	keysDone bool
	wsMu     sync.Mutex
	ws       map[string]string // workspace name -> uuid, under wsMu
}

func (e *Engine) newRun(ctx context.Context, req jobs.Request) *run {
	return &run{e: e, ctx: ctx, req: req, ws: map[string]string{}}
}

// task is one key's rotation within a run.
type task struct {
	spec    KeySpec
	known   bool // spec comes from the config
	rot     journal.Rotation
	begun   bool // rot is journaled
	recover bool // resumed before publish: reconcile with the store first
	claimed bool // this engine works on the key (in-process exclusion)

	newKey       mistral.Secret // plaintext of the new key, memory only
	newCreatedAt time.Time
	base         secrets.Version // CAS precondition for publish
	bootstrap    bool
	// failedStep is the step that failed (Event.FailedStep), once known.
	failedStep journal.Step
	// storeUnavailable: the failure was the store being unavailable.
	storeUnavailable bool
	// policyNotes say how the key-expiration policy moved this rotation:
	// the old key due early, the new key's expiry shortened (Event.Note).
	policyNotes []string

	ctx    context.Context
	cancel context.CancelFunc
	rep    KeyReport
	log    *slog.Logger
}

func (r *run) checkTask(k KeySpec) *task {
	t := &task{spec: k, known: true, rep: KeyReport{Key: k.Name}}
	t.log = r.e.log.With("key_name", k.Name)
	return t
}

func (r *run) resumeTask(rot journal.Rotation) *task {
	spec, known := r.e.byKey[rot.KeyName]
	t := &task{spec: spec, known: known, rot: rot, begun: true, recover: true,
		bootstrap: rot.OldKeyID == "",
		rep:       KeyReport{Key: rot.KeyName, Resumed: true, RotationID: rot.ID}}
	t.log = r.e.log.With("key_name", rot.KeyName, "rotation_id", rot.ID)
	return t
}

// drive runs tasks until each is finished. Each task is a small state
// machine on a goroutine of its own that holds nothing while it waits; the
// work that costs is bounded by the engine's API slots (see bounded.go), so a
// rotation parked in its propagation wait holds no slot.
func (r *run) drive(tasks []*task) error {
	if len(tasks) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	held, err := r.e.lockJournal(ctx)
	if err != nil {
		return err
	}
	if !held {
		for _, t := range tasks {
			t.rep.Outcome, t.rep.Reason = OutcomeBusy, "another process is running rotations on this journal"
		}
		return nil
	}
	defer r.e.unlockJournal()
	renewDone := make(chan struct{})
	go r.e.renewLease(ctx, cancel, renewDone)
	var wg sync.WaitGroup
	for _, t := range tasks {
		t.ctx, t.cancel = context.WithCancel(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer t.cancel()
			defer r.e.unclaim(t)
			for {
				until, done := r.advance(t)
				if done {
					return
				}
				tm := time.NewTimer(time.Until(until))
				select {
				case <-tm.C:
				case <-t.ctx.Done():
					tm.Stop()
					r.interrupted(t, t.ctx.Err())
					return
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	<-renewDone
	return nil
}

// wake converts a journaled deadline to the process clock.
func (r *run) wake(deadline time.Time) time.Time {
	return time.Now().Add(deadline.Sub(r.e.now()))
}

// advance runs t's steps until it parks (returns the wake time) or ends.
func (r *run) advance(t *task) (time.Time, bool) {
	for {
		if err := t.ctx.Err(); err != nil {
			r.interrupted(t, err)
			return time.Time{}, true
		}
		var next bool
		var park time.Time
		switch {
		case !t.known:
			r.fail(t, errors.New("the key is not in the configuration any more; its rotation stays in flight"), true)
		case !t.begun:
			next = r.check(t) // claims the key when it is due
		case !t.claimed:
			next = r.e.claim(t) && r.reloadResumed(t)
		case t.rot.Status != journal.StatusInFlight:
			return time.Time{}, true
		case t.rot.Step == journal.StepAbort:
			next = r.abort(t, errors.New(t.rot.Error))
		case t.recover && (t.rot.Step == journal.StepBegin || t.rot.Step == journal.StepCreate || t.rot.Step == journal.StepVerify):
			next = r.reconcile(t)
		case t.rot.Step == journal.StepBegin:
			next = r.create(t)
		case t.rot.Step == journal.StepCreate:
			next = r.verify(t)
		case t.rot.Step == journal.StepVerify:
			next = r.publish(t)
		case t.rot.Step == journal.StepPublish:
			if left := t.rot.PropagateUntil.Sub(r.e.now()); left > 0 {
				park = r.wake(t.rot.PropagateUntil)
				t.log.Info("rotation parked for propagation", "step", journal.StepPropagate,
					"new_key_id", t.rot.NewKeyID, "wait", left.Round(time.Millisecond))
				next = true
				break
			}
			next = r.reverify(t)
		case t.rot.Step == journal.StepReverify:
			next = r.revoke(t)
		default:
			r.fail(t, fmt.Errorf("unknown journaled step %q", t.rot.Step), true)
		}
		if !park.IsZero() {
			return park, false
		}
		if !next {
			return time.Time{}, true
		}
	}
}

// --- helpers ---

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// journal writes t.rot; the write outlives a cancelled run context so what
// happened is recorded.
func (r *run) journal(t *task) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), 15*time.Second)
	defer cancel()
	if err := r.e.d.Journal.UpdateRotation(ctx, t.rot); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// stepLog logs one step with the ids.
func (t *task) stepLog(msg string, step journal.Step, args ...any) {
	base := []any{"step", step, "old_key_id", t.rot.OldKeyID, "new_key_id", t.rot.NewKeyID}
	t.log.Info(msg, append(base, args...)...)
}

// interrupted records that t stopped on cancellation; it stays journaled.
func (r *run) interrupted(t *task, err error) {
	if t.rep.Outcome != "" {
		return
	}
	t.rep.Outcome = OutcomeInterrupted
	t.rep.Step = t.rot.Step
	t.rep.InFlight = t.begun && t.rot.Status == journal.StatusInFlight
	t.rep.Error = err.Error()
	t.log.Warn("rotation interrupted; it stays journaled and resumes next start", "step", t.rot.Step, "err", err)
}

// fail records a failure. inFlight says the rotation stays journaled in
// flight, to be resumed by the next run.
func (r *run) fail(t *task, err error, inFlight bool) {
	if t.ctx != nil && t.ctx.Err() != nil && t.begun {
		r.interrupted(t, t.ctx.Err())
		return
	}
	msg := err.Error()
	if t.failedStep == "" {
		t.failedStep = failedStepOf(err)
	}
	if t.failedStep == "" {
		t.failedStep = t.rot.Step
	}
	if errors.Is(err, secrets.ErrUnavailable) {
		t.storeUnavailable = true
	}
	t.rep.Outcome = OutcomeFailed
	t.rep.Error = msg
	t.rep.Step = t.rot.Step
	t.rep.InFlight = inFlight && t.begun
	t.fillIDs()
	if t.begun && inFlight && t.rot.Status == journal.StatusInFlight && t.known {
		t.rot.Error = msg
		if jerr := r.journal(t); jerr != nil {
			t.log.Error("journal the failure", "err", jerr)
		}
	}
	t.log.Error("rotation failed", "step", t.rot.Step, "old_key_id", t.rot.OldKeyID,
		"new_key_id", t.rot.NewKeyID, "in_flight", t.rep.InFlight, "err", msg)
	if t.begun {
		r.notifyFailed(t, msg, t.rep.InFlight)
	}
}

func (t *task) fillIDs() {
	t.rep.RotationID = t.rot.ID
	t.rep.OldKeyID = t.rot.OldKeyID
	t.rep.NewKeyID = t.rot.NewKeyID
	t.rep.NewKeyName = t.rot.NewKeyName
}

func (r *run) event(t *task, errMsg string, inFlight bool) Event {
	return Event{KeyName: t.rot.KeyName, RotationID: t.rot.ID, OldKeyID: t.rot.OldKeyID, NewKeyID: t.rot.NewKeyID,
		NewKeyName: t.rot.NewKeyName, Step: t.rot.Step, FailedStep: t.failedStep, Bootstrap: t.bootstrap, Err: errMsg,
		StillInFlight: inFlight, Published: t.rot.StoreVersion != "" && t.rot.Step != journal.StepAbort,
		StoreUnavailable: errMsg != "" && t.storeUnavailable, Note: strings.Join(t.policyNotes, "; ")}
}

func (r *run) notifyFailed(t *task, msg string, inFlight bool) {
	if r.e.d.Notifier != nil {
		r.e.d.Notifier.OnFailed(context.WithoutCancel(t.ctx), r.event(t, msg, inFlight))
	}
}

// retry calls fn with exponential backoff until it succeeds, retryable says
// no, the bound passes or ctx ends. It returns the last error.
func (r *run) retry(ctx context.Context, bound time.Duration, retryable func(error) bool, fn func() error) error {
	deadline := time.Now().Add(bound)
	wait := r.e.opts.MinBackoff
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%w (gave up after %d attempts in %s)", err, attempt, bound)
		}
		tm := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			tm.Stop()
			return err
		case <-tm.C:
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// platformKeys lists every platform key once per run.
func (r *run) platformKeys(ctx context.Context) ([]mistral.Key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.keysDone {
		r.keys, r.keysErr = r.e.d.Platform.ListAllKeys(ctx, "")
		if r.keys == nil && r.keysErr == nil {
			r.keys = []mistral.Key{}
		}
		r.keysDone = r.keysErr == nil
	}
	return r.keys, r.keysErr
}

// workspaceID returns the key's workspace uuid, resolving the name once per run.
func (r *run) workspaceID(ctx context.Context, spec KeySpec) (string, error) {
	if spec.WorkspaceID != "" {
		return spec.WorkspaceID, nil
	}
	// One resolution at a time: the others then find the answer cached.
	r.wsMu.Lock()
	defer r.wsMu.Unlock()
	if id, ok := r.ws[spec.Workspace]; ok {
		return id, nil
	}
	all, err := r.e.d.Platform.ListAllWorkspaces(ctx)
	if err != nil {
		return "", fmt.Errorf("resolve workspace %q: %w", spec.Workspace, err)
	}
	for _, w := range all {
		if w.Name == spec.Workspace { // the listing holds no archived workspace
			r.ws[spec.Workspace] = w.UUID
			return w.UUID, nil
		}
	}
	return "", fmt.Errorf("resolve workspace %q: no such workspace on the platform", spec.Workspace)
}

func (r *run) store(spec KeySpec) secrets.Store { return r.e.d.Stores[spec.Backend] }

// readStore reads the key's record, retrying an unavailable store with
// backoff for a short while (ErrNotFound is an answer, not a failure).
func (r *run) readStore(ctx context.Context, spec KeySpec) (secrets.Versioned, error) {
	var v secrets.Versioned
	err := r.retry(ctx, min(r.e.opts.PublishTimeout, 10*time.Second), secrets.Retryable, func() error {
		var err error
		v, err = r.store(spec).Read(ctx, spec.Target)
		return err
	})
	return v, err
}

// readCurrent reads the store and, if needed, the platform.
func (r *run) readCurrent(ctx context.Context, spec KeySpec) (Current, error) {
	v, err := r.readStore(ctx, spec)
	found := err == nil
	if err != nil && !errors.Is(err, secrets.ErrNotFound) {
		return Current{}, fmt.Errorf("read store: %w", err)
	}
	// The platform's listing is read for every key (once per run): it
	// holds the key's expiration_date, which an organization's policy may
	// have set or shortened, whoever created the key.
	// A listing that fails leaves a complete record judged by its age
	// alone, as the note says; an incomplete one cannot be judged.
	keys, listErr := r.platformKeys(ctx)
	cur, need := ReadCurrent(v, found, spec, spec.WorkspaceID, nil)
	if !need {
		if listErr != nil {
			cur.ExpiryUnknown = fmt.Sprintf("expiry unknown, judged by age only: list platform keys: %v", listErr)
			return cur, nil
		}
		return WithExpiry(cur, keys), nil
	}
	if listErr != nil {
		return Current{}, fmt.Errorf("list platform keys: %w", listErr)
	}
	ws := spec.WorkspaceID
	if ws == "" && v.KeyID == "" {
		if ws, err = r.workspaceID(ctx, spec); err != nil {
			return Current{}, err
		}
	}
	cur, _ = ReadCurrent(v, found, spec, ws, keys)
	return WithExpiry(cur, keys), nil
}

// Schedule is when spec's key is due: its rotate_every, and a lead before
// its expiry of ExpiryMargin, its propagation wait and the bound on the
// rotation's own retries (verify, publish, reverify).
func (e *Engine) Schedule(spec KeySpec) Schedule {
	bound := 2*e.opts.VerifyTimeout + e.opts.PublishTimeout
	return Schedule{Every: spec.RotateEvery, Lead: ExpiryMargin + spec.PropagationWait + bound}
}
