// Package jobs holds mrbacd's jobs (jobs/rotate, jobs/audit, jobs/budget) and
// the scheduler that runs them (jobs/scheduler). This file is the contract
// between them: every job is a Runner the scheduler, the admin socket and the
// one-shot commands call the same way.
package jobs

import "context"

// Job names.
const (
	Rotate = "rotate"
	Audit  = "audit"
	Budget = "budget"
)

// Request is one run of a job.
type Request struct {
	// RunID is the journal's id for this run (0 when not journaled).
	RunID int64
	// Trigger says who asked: "cron", "catch-up", "cli" or "uid:N".
	Trigger string
	// Key limits the run to one managed key (rotate) or is ignored.
	Key string
	// DryRun reports what would happen and changes nothing.
	DryRun bool
	// Force rotates whatever the age (rotate only).
	Force bool
}

// Result is what a run reports.
type Result struct {
	// Failed is true when the job ran but something in it failed
	// (a rotation failed, a workspace could not be polled).
	Failed bool `json:"failed"`
	// Summary is one human line, e.g. "rotated 3 of 3 due keys".
	Summary string `json:"summary"`
	// Details is the job's structured report, marshalled to JSON for --json,
	// the journal and the admin socket.
	Details any `json:"details,omitempty"`
}

// Runner runs one job once. An error means the run could not be carried out
// at all (config, journal or platform unreachable); partial failures are
// reported in Result.Failed.
type Runner interface {
	Run(ctx context.Context, req Request) (Result, error)
}

// RunnerFunc adapts a function to Runner.
type RunnerFunc func(ctx context.Context, req Request) (Result, error)

// Run calls f.
func (f RunnerFunc) Run(ctx context.Context, req Request) (Result, error) { return f(ctx, req) }
