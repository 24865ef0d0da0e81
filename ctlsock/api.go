// Package ctlsock is mrbacd's local control socket (named so it is never
// taken for Mistral's Admin API, which package mistral calls): HTTP over a
// unix socket, guarded by the socket's file mode and by each connection's
// peer uid (SO_PEERCRED), plus the client `mrbacd ctl` uses.
//
// Routes (all JSON; errors are {"error": "..."} with a precise status):
//
//	GET  /v1/status          version, uptime, config hash, who leads, last reload, jobs
//	GET  /v1/jobs            schedule, last and next run, run in progress
//	POST /v1/jobs/{job}/run  {key, dry_run, force, wait}: 202 + run, or 200 + finished run with wait
//	                         (on a standby: queued for the leader, request_id set)
//	GET  /v1/runs?limit=N    run history, newest first
//	GET  /v1/runs/{id}       one run
//	POST /v1/reload          validate the config file and swap it in, or keep the old one (422)
//
// The server does no work itself: a Backend (the daemon) answers each route.
package ctlsock

import (
	"context"
	"errors"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
)

// Errors a Backend wraps so the server picks the status (use fmt.Errorf
// with %w on both the sentinel and the cause).
var (
	// ErrNotFound → 404 (unknown job or run).
	ErrNotFound = errors.New("not found")
	// ErrConflict → 409 (the job is already running).
	ErrConflict = errors.New("conflict")
	// ErrInvalid → 422 (a request the daemon cannot carry out as asked, an invalid config on reload).
	ErrInvalid = errors.New("invalid")
	// ErrUnavailable → 503 (the daemon is shutting down).
	ErrUnavailable = errors.New("unavailable")
)

// Backend answers the admin routes. Trigger in RunJob's request is set by
// the server from the peer's uid ("uid:N").
type Backend interface {
	Status(ctx context.Context) (Status, error)
	Jobs(ctx context.Context) ([]Job, error)
	// RunJob starts a run; with wait it returns once the run finished (or ctx ended).
	RunJob(ctx context.Context, job string, req jobs.Request, wait bool) (Run, error)
	Runs(ctx context.Context, limit int) ([]Run, error)
	Run(ctx context.Context, id int64) (Run, error)
	// Reload returns the attempt's record; an invalid config is an error
	// wrapping ErrInvalid, and the record says why.
	Reload(ctx context.Context) (Reload, error)
}

// Status is GET /v1/status.
type Status struct {
	Leadership
	Version       string    `json:"version"`
	PID           int       `json:"pid"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	ConfigPath    string    `json:"config_path"`
	ConfigHash    string    `json:"config_hash"`
	LastReload    *Reload   `json:"last_reload,omitempty"`
	Jobs          []Job     `json:"jobs"`
}

// Leadership says who leads the daemons sharing a journal (the leader runs
// the schedule; a standby queues the runs asked of it for the leader).
type Leadership struct {
	// Leader is true on the instance that leads.
	Leader bool `json:"leader"`
	// Instance is this daemon's name in the election.
	Instance string `json:"instance"`
	// LeaderInstance is who leads per the journal ("" when nobody does:
	// the lease lapsed and no standby took it yet).
	LeaderInstance string `json:"leader_instance"`
	// LeaseExpires is when the leader's lease lapses unless renewed (null
	// when nobody leads).
	LeaseExpires *time.Time `json:"lease_expires"`
	// LeaseSeconds is the configured lease (ha.lease).
	LeaseSeconds float64 `json:"lease_seconds"`
	// LeaderError says why the journal could not be asked; the fields
	// above are then this instance's own view.
	LeaderError string `json:"leader_error,omitempty"`
}

// StatusQueued is the status of a run a standby queued for the leader and
// the leader has not started yet.
const StatusQueued = "queued"

// Reload is one reload attempt.
type Reload struct {
	At         time.Time `json:"at"`
	OK         bool      `json:"ok"`
	Trigger    string    `json:"trigger"` // "signal" or "uid:N"
	ConfigHash string    `json:"config_hash,omitempty"`
	// Error says why the new config was refused (every problem, one per line).
	Error string `json:"error,omitempty"`
	// Notes lists changes that need a restart to take effect.
	Notes []string `json:"notes,omitempty"`
}

// Job is one configured job.
type Job struct {
	Name           string     `json:"name"`
	Schedule       string     `json:"schedule"`
	TimeoutSeconds float64    `json:"timeout_seconds"`
	Disabled       bool       `json:"disabled"`
	NextRun        *time.Time `json:"next_run,omitempty"`
	Running        *Run       `json:"running,omitempty"`
	LastRun        *Run       `json:"last_run,omitempty"`
}

// Run is one journaled run of a job.
type Run struct {
	ID      int64  `json:"id"`
	Job     string `json:"job"`
	Trigger string `json:"trigger"`
	// Args are the run's arguments as journaled (JSON text).
	Args       string     `json:"args,omitempty"`
	Status     string     `json:"status"` // running, ok, failed, panicked, canceled
	Error      string     `json:"error,omitempty"`
	Failed     bool       `json:"failed"`
	Summary    string     `json:"summary,omitempty"`
	Details    any        `json:"details,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// RequestID is set when a standby queued the run for the leader
	// (ID is then 0 until the leader started it); RunBy is the leader
	// that ran it.
	RequestID int64  `json:"request_id,omitempty"`
	RunBy     string `json:"run_by,omitempty"`
}

// Succeeded reports whether the run finished with status ok.
func (r Run) Succeeded() bool { return r.Status == "ok" }

// RunRequest is the body of POST /v1/jobs/{job}/run.
type RunRequest struct {
	Key    string `json:"key,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
	Force  bool   `json:"force,omitempty"`
	Wait   bool   `json:"wait,omitempty"`
}

// errorBody is every error response.
type errorBody struct {
	Error  string  `json:"error"`
	Reload *Reload `json:"reload,omitempty"`
}
