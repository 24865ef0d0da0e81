package journal

import (
	"context"
	"time"
)

// Journal is everything mrbacd keeps durably, grouped by concern. *DB (the
// SQLite file) implements it; a second backend implements the same
// interface and the jobs, the scheduler, the outbox and the daemon work
// unchanged on it. Consumers depend on the smallest group they use (or on
// an interface of their own, declared where used, whose methods are a subset
// of these).
type Journal interface {
	Rotations
	Leases
	Fencing
	Runs
	RunRequests
	Findings
	AuditLog
	Actions
	Outbox
	Usage
	Budgets
	Maintenance
}

// Rotations is the rotation protocol's durable record (jobs/rotate).
type Rotations interface {
	// BeginRotation journals a new in-flight rotation; ErrRotationInFlight
	// when the key already has one.
	BeginRotation(ctx context.Context, r Rotation) error
	UpdateRotation(ctx context.Context, r Rotation) error
	InFlightRotations(ctx context.Context) ([]Rotation, error)
	// Rotation returns one rotation or ErrNotFound.
	Rotation(ctx context.Context, id string) (Rotation, error)
	RotationsForKey(ctx context.Context, keyName string, limit int) ([]Rotation, error)
	RecentRotations(ctx context.Context, since time.Time, limit int) ([]Rotation, error)
	LastDoneRotation(ctx context.Context, keyName string) (r Rotation, ok bool, err error)
}

// Leases is a cross-process mutex with a TTL per name.
type Leases interface {
	AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	RenewLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, owner string) error
	LeaseHolder(ctx context.Context, name string) (owner string, expires time.Time, ok bool, err error)
}

// Fencing is leader election's lease: one holder per name, each tenure
// numbered by a token that only grows, and writes made under WithFence
// refused (ErrFenced) once their tenure is over (package election).
type Fencing interface {
	AcquireFenced(ctx context.Context, name, owner string, ttl time.Duration) (token int64, ok bool, err error)
	RenewFenced(ctx context.Context, name, owner string, token int64, ttl time.Duration) (bool, error)
	ReleaseFenced(ctx context.Context, name, owner string, token int64) error
	FencedHolder(ctx context.Context, name string) (info LeaseInfo, ok bool, err error)
}

// Runs records job runs and the scheduler's last fires (jobs/scheduler,
// the admin socket's history).
type Runs interface {
	StartRun(ctx context.Context, job, trigger, args string) (int64, error)
	FinishRun(ctx context.Context, id int64, status, errMsg, summary string) error
	Runs(ctx context.Context, f RunFilter) ([]Run, error)
	// GetRun returns one run or ErrNotFound.
	GetRun(ctx context.Context, id int64) (Run, error)
	LastRun(ctx context.Context, job string) (Run, bool, error)
	AbandonRuns(ctx context.Context, before time.Time, reason string) (int64, error)
	AbandonLeaderRuns(ctx context.Context, instance, reason string) (int64, error)
	SetLastFire(ctx context.Context, job string, t time.Time) error
	LastFire(ctx context.Context, job string) (time.Time, bool, error)
}

// RunRequests queues runs asked of whichever daemon leads: `mrbacd ctl
// run` on a standby queues one, the leader takes it, starts the run and
// records its id, and the asker polls the request, then the run.
type RunRequests interface {
	RequestRun(ctx context.Context, job, trigger, args, requestedBy string) (int64, error)
	QueuedRunRequests(ctx context.Context, limit int) ([]RunRequest, error)
	TakeRunRequest(ctx context.Context, id int64, instance string) (bool, error)
	SettleRunRequest(ctx context.Context, id, runID int64, errMsg string) error
	// GetRunRequest returns one request or ErrNotFound.
	GetRunRequest(ctx context.Context, id int64) (RunRequest, error)
}

// Findings holds the audit's findings already reported and the once-marks
// of alert dedupe (jobs/audit, jobs/budget).
type Findings interface {
	SyncFindings(ctx context.Context, scope string, current []Finding, now time.Time) (FindingsDelta, error)
	MarkFindingsReported(ctx context.Context, scope string, d FindingsDelta, at time.Time) error
	OpenFindings(ctx context.Context, scope string) ([]Finding, error)
	MarkOnce(ctx context.Context, key string) (bool, error)
	Marked(ctx context.Context, key string) (bool, error)
}

// AuditLog holds the cursor over the platform's audit log (jobs/audit's
// platform_change findings): read from it, and advance it once the events
// read are reported, together with settling their findings.
type AuditLog interface {
	// AuditCursor returns the source's cursor (the zero cursor when none).
	AuditCursor(ctx context.Context, source string) (AuditCursor, error)
	// AdvanceAuditCursor moves the source's cursor forward to c (never
	// back) and, in the same transaction, settles the findings ids of
	// scope: resolved at at, their resolution counted as reported, so they
	// are neither reported again nor announced as resolved.
	AdvanceAuditCursor(ctx context.Context, source string, c AuditCursor, scope string, settle []string, at time.Time) error
}

// Actions records what operators do from chat buttons (each click once)
// and the snoozes and acknowledgements of findings (notify/slack,
// jobs/audit, mrbacd plan).
type Actions interface {
	ClaimAction(ctx context.Context, key, action, target, user string) (OperatorAction, bool, error)
	SetActionRun(ctx context.Context, key string, runID int64) error
	FinishAction(ctx context.Context, key, status, outcome string) error
	// Action returns one recorded action or ErrNotFound.
	Action(ctx context.Context, key string) (OperatorAction, error)
	Snooze(ctx context.Context, scope, findingID string, until time.Time, by string) error
	Acknowledge(ctx context.Context, scope, findingID, by string) error
	Suppressions(ctx context.Context, scope string, now time.Time) (map[string]Suppression, error)
	WithoutSuppressed(ctx context.Context, scope string, d FindingsDelta, now time.Time) (FindingsDelta, []Finding, error)
	// ManagedKeyName names the keys: entry a platform key id belongs to
	// according to the rotations journaled.
	ManagedKeyName(ctx context.Context, keyID string) (string, bool, error)
}

// Outbox is the durable notification queue package notify drives.
type Outbox interface {
	Enqueue(ctx context.Context, m Message) (id int64, created bool, err error)
	Claim(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Message, error)
	MarkSent(ctx context.Context, id int64, at time.Time) error
	MarkRetry(ctx context.Context, id int64, next time.Time, errMsg string) error
	MarkUncertain(ctx context.Context, id int64, next time.Time, errMsg string) error
	MarkDead(ctx context.Context, id int64, errMsg string) error
	Requeue(ctx context.Context, id int64) error
	Due(ctx context.Context, now time.Time, limit int) ([]Message, error)
	NextDue(ctx context.Context) (time.Time, bool, error)
	PendingCount(ctx context.Context) (int, error)
	// Message returns one message or ErrNotFound.
	Message(ctx context.Context, id int64) (Message, error)
	Messages(ctx context.Context, status string, limit int) ([]Message, error)
}

// Usage holds the gateway's usage counters per (subject, window).
type Usage interface {
	AddUsage(ctx context.Context, subject, window string, tokens int64, usd float64) error
	Usage(ctx context.Context, subject, window string) (tokens int64, usd float64, err error)
	LoadUsage(ctx context.Context, windowPrefix string) (map[UsageKey]UsageTotal, error)
}

// Budgets leases slices of (subject, window) budgets to gateway instances,
// so that any number of them sharing the journal never admit more than a
// budget in total (package gateway).
type Budgets interface {
	// LeaseBudget settles, renews, grows or returns the owner's grant in one
	// transaction; see DB.LeaseBudget.
	LeaseBudget(ctx context.Context, r LeaseRequest) (LeaseResult, error)
	// BudgetGrants lists the grants on a budget.
	BudgetGrants(ctx context.Context, subject, window string) ([]BudgetGrant, error)
	// BudgetUsed returns a budget's counter, requests included.
	BudgetUsed(ctx context.Context, subject, window string) (Amounts, error)
}

// Maintenance is the journal's own upkeep: health, retention, schema.
type Maintenance interface {
	Ping(ctx context.Context) error
	Prune(ctx context.Context, opts PruneOptions) (PruneResult, error)
	SchemaVersion(ctx context.Context) (int, error)
	Close() error
}

var _ Journal = (*DB)(nil)
