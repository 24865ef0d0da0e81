package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Run statuses.
const (
	RunRunning  = "running"
	RunOK       = "ok"
	RunFailed   = "failed"
	RunPanicked = "panicked"
	RunCanceled = "canceled"
)

// Run is one execution of a job.
type Run struct {
	ID         int64
	Job        string // rotate, audit, budget...
	Trigger    string // who asked: cron, catchup, cli, uid:N
	Args       string // the job's arguments (JSON or flags), no secrets
	Status     string // running, ok, failed, panicked, canceled
	Error      string
	Summary    string // JSON summary of the result
	StartedAt  time.Time
	FinishedAt time.Time
}

// RunFilter selects runs: Job "" means all jobs; Limit <= 0 means 50;
// BeforeID > 0 pages back from that id.
type RunFilter struct {
	Job      string
	Status   string
	Limit    int
	BeforeID int64
}

const runCols = `id, job, trigger_by, args, status, error, summary, started_at, finished_at`

func scanRun(s interface{ Scan(...any) error }) (Run, error) {
	var r Run
	var st, fin int64
	err := s.Scan(&r.ID, &r.Job, &r.Trigger, &r.Args, &r.Status, &r.Error, &r.Summary, &st, &fin)
	r.StartedAt, r.FinishedAt = tm(st), tm(fin)
	return r, err
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// StartRun records a job run as running and returns its id.
func (db *DB) StartRun(ctx context.Context, job, trigger, args string) (int64, error) {
	if job == "" {
		return 0, fmt.Errorf("start run: %w: empty job", ErrInvalid)
	}
	var id int64
	f, _ := FenceFrom(ctx) // a leader's run records whose it is (AbandonLeaderRuns)
	err := db.write(ctx, func(c conn) error {
		return c.queryRow(ctx, `INSERT INTO runs (job, trigger_by, args, status, started_at, instance)
			VALUES (?, ?, ?, 'running', ?, ?) RETURNING id`, job, trigger, args, ns(db.now()), f.Owner).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("start run of %s: %w", job, err)
	}
	return id, nil
}

// FinishRun records a run's outcome. status is ok, failed, panicked or canceled.
func (db *DB) FinishRun(ctx context.Context, id int64, status, errMsg, summary string) error {
	switch status {
	case RunOK, RunFailed, RunPanicked, RunCanceled:
	default:
		return fmt.Errorf("finish run %d: %w: status %q", id, ErrInvalid, status)
	}
	res, err := db.execWrite(ctx, `UPDATE runs SET status = ?, error = ?, summary = ?, finished_at = ? WHERE id = ?`,
		status, errMsg, summary, ns(db.now()), id)
	if err != nil {
		return fmt.Errorf("finish run %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("finish run %d: %w", id, ErrNotFound)
	}
	return nil
}

// Runs lists runs newest first.
func (db *DB) Runs(ctx context.Context, f RunFilter) ([]Run, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	q := `SELECT ` + runCols + ` FROM runs WHERE 1 = 1`
	var args []any
	if f.Job != "" {
		q += ` AND job = ?`
		args = append(args, f.Job)
	}
	if f.Status != "" {
		q += ` AND status = ?`
		args = append(args, f.Status)
	}
	if f.BeforeID > 0 {
		q += ` AND id < ?`
		args = append(args, f.BeforeID)
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, f.Limit)
	rows, err := db.conn().query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	return out, nil
}

// GetRun returns one run, or ErrNotFound.
func (db *DB) GetRun(ctx context.Context, id int64) (Run, error) {
	r, err := scanRun(db.conn().queryRow(ctx, `SELECT `+runCols+` FROM runs WHERE id = ?`, id))
	if isNoRows(err) {
		return Run{}, fmt.Errorf("run %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Run{}, fmt.Errorf("run %d: %w", id, err)
	}
	return r, nil
}

// LastRun returns the job's latest run (running or finished); ok is false when
// it never ran.
func (db *DB) LastRun(ctx context.Context, job string) (Run, bool, error) {
	r, err := scanRun(db.conn().queryRow(ctx, `SELECT `+runCols+` FROM runs WHERE job = ? ORDER BY id DESC LIMIT 1`, job))
	if isNoRows(err) {
		return Run{}, false, nil
	}
	if err != nil {
		return Run{}, false, fmt.Errorf("last run of %s: %w", job, err)
	}
	return r, true, nil
}

// AbandonRuns marks runs still "running" that started before `before` as
// canceled with reason: for a daemon starting after a crash. Pass a cutoff
// older than any run another live process may own (e.g. start time minus the
// longest job timeout). Returns how many it marked.
func (db *DB) AbandonRuns(ctx context.Context, before time.Time, reason string) (int64, error) {
	res, err := db.execWrite(ctx, `UPDATE runs SET status = 'canceled', error = ?, finished_at = ?
		WHERE status = 'running' AND started_at < ?`, reason, ns(db.now()), ns(before))
	if err != nil {
		return 0, fmt.Errorf("abandon runs: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// SetLastFire records the scheduled time of a job's latest fire (the
// schedule's time, not the wall clock at which it ran).
func (db *DB) SetLastFire(ctx context.Context, job string, t time.Time) error {
	if job == "" || t.IsZero() {
		return fmt.Errorf("set last fire: %w: job and time are required", ErrInvalid)
	}
	_, err := db.execWrite(ctx, `INSERT INTO last_fires (job, fired_at) VALUES (?, ?)
		ON CONFLICT (job) DO UPDATE SET fired_at = excluded.fired_at`, job, ns(t))
	if err != nil {
		return fmt.Errorf("set last fire of %s: %w", job, err)
	}
	return nil
}

// LastFire returns the job's last recorded fire; ok is false if none.
func (db *DB) LastFire(ctx context.Context, job string) (time.Time, bool, error) {
	var v int64
	err := db.conn().queryRow(ctx, `SELECT fired_at FROM last_fires WHERE job = ?`, job).Scan(&v)
	if isNoRows(err) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("last fire of %s: %w", job, err)
	}
	return tm(v), true, nil
}

// MarkOnce records key and reports whether this was the first time (true) or
// it was already marked (false). Atomic across processes: use it for "once per
// workspace, threshold and month" alerts. To make the alert itself
// exactly-once, prefer an outbox message whose Dedupe is the same key (one
// insert does both).
func (db *DB) MarkOnce(ctx context.Context, key string) (bool, error) {
	if key == "" {
		return false, fmt.Errorf("mark once: %w: empty key", ErrInvalid)
	}
	res, err := db.execWrite(ctx, `INSERT INTO once_marks (mark, created_at) VALUES (?, ?) ON CONFLICT (mark) DO NOTHING`,
		key, ns(db.now()))
	if err != nil {
		return false, fmt.Errorf("mark once %q: %w", key, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}
