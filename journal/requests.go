package journal

import (
	"context"
	"fmt"
	"time"
)

// Run request statuses. A request is queued by any instance, taken by the
// leader (before it starts the run, so a leader dying in between never runs
// it twice), then started (RunID set) or refused (Error says why).
const (
	RequestQueued  = "queued"
	RequestTaken   = "taken"
	RequestStarted = "started"
	RequestRefused = "refused"
)

// RunRequest is a run of a job asked of whichever instance leads (`mrbacd
// ctl run` on a standby).
type RunRequest struct {
	ID      int64
	Job     string
	Trigger string // who asked: uid:N
	Args    string // the request's arguments as JSON (key, dry_run, force), no secrets
	// RequestedBy is the instance that queued it.
	RequestedBy string
	RequestedAt time.Time
	Status      string
	// TakenBy is the leader that took it, when taken.
	TakenBy string
	TakenAt time.Time
	// RunID is the run started for it (0 until started).
	RunID int64
	Error string
}

const requestCols = `id, job, trigger_by, args, requested_by, requested_at, status, taken_by, taken_at, run_id, error`

func scanRequest(s interface{ Scan(...any) error }) (RunRequest, error) {
	var r RunRequest
	var at, taken int64
	err := s.Scan(&r.ID, &r.Job, &r.Trigger, &r.Args, &r.RequestedBy, &at, &r.Status, &r.TakenBy, &taken, &r.RunID, &r.Error)
	r.RequestedAt, r.TakenAt = tm(at), tm(taken)
	return r, err
}

// RequestRun queues a run of job for the leader and returns the request's id.
func (db *DB) RequestRun(ctx context.Context, job, trigger, args, requestedBy string) (int64, error) {
	if job == "" || trigger == "" {
		return 0, fmt.Errorf("request run: %w: job and trigger are required", ErrInvalid)
	}
	var id int64
	err := db.write(ctx, func(c conn) error {
		return c.queryRow(ctx, `INSERT INTO run_requests (job, trigger_by, args, requested_by, requested_at, status)
			VALUES (?, ?, ?, ?, ?, 'queued') RETURNING id`, job, trigger, args, requestedBy, ns(db.now())).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("request a run of %s: %w", job, err)
	}
	return id, nil
}

// QueuedRunRequests returns up to limit queued requests, oldest first.
func (db *DB) QueuedRunRequests(ctx context.Context, limit int) ([]RunRequest, error) {
	if limit <= 0 {
		limit = 20
	}
	rows, err := db.conn().query(ctx, `SELECT `+requestCols+` FROM run_requests WHERE status = 'queued' ORDER BY id LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("queued run requests: %w", err)
	}
	defer rows.Close()
	var out []RunRequest
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			return nil, fmt.Errorf("queued run requests: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("queued run requests: %w", err)
	}
	return out, nil
}

// TakeRunRequest marks a queued request taken by instance; false when it
// is no longer queued (another leader took it). Take it before starting
// its run: a request is run at most once.
func (db *DB) TakeRunRequest(ctx context.Context, id int64, instance string) (bool, error) {
	res, err := db.execWrite(ctx, `UPDATE run_requests SET status = 'taken', taken_by = ?, taken_at = ?
		WHERE id = ? AND status = 'queued'`, instance, ns(db.now()), id)
	if err != nil {
		return false, fmt.Errorf("take run request %d: %w", id, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// SettleRunRequest records what became of a taken request: started as run
// runID, or refused with errMsg when runID is 0.
func (db *DB) SettleRunRequest(ctx context.Context, id, runID int64, errMsg string) error {
	status := RequestStarted
	if runID == 0 {
		status = RequestRefused
	}
	res, err := db.execWrite(ctx, `UPDATE run_requests SET status = ?, run_id = ?, error = ?
		WHERE id = ? AND status = 'taken'`, status, runID, errMsg, id)
	if err != nil {
		return fmt.Errorf("settle run request %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("settle run request %d: %w (not taken)", id, ErrNotFound)
	}
	return nil
}

// GetRunRequest returns one request or ErrNotFound.
func (db *DB) GetRunRequest(ctx context.Context, id int64) (RunRequest, error) {
	r, err := scanRequest(db.conn().queryRow(ctx, `SELECT `+requestCols+` FROM run_requests WHERE id = ?`, id))
	if isNoRows(err) {
		return RunRequest{}, fmt.Errorf("run request %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return RunRequest{}, fmt.Errorf("run request %d: %w", id, err)
	}
	return r, nil
}

// AbandonLeaderRuns marks canceled, with reason, the runs still running
// that a leader other than instance started under its fence (StartRun with
// a WithFence context records the fence's owner), and refuses, with
// reason, the run requests such a leader took but never started: called by
// a new leader, whose predecessors cannot be running anything any more.
// Runs of one-shot commands (no fence) are left alone. It returns how many
// runs it canceled.
func (db *DB) AbandonLeaderRuns(ctx context.Context, instance, reason string) (int64, error) {
	var n int64
	err := db.tx(ctx, func(c conn) error {
		res, err := c.exec(ctx, `UPDATE runs SET status = 'canceled', error = ?, finished_at = ?
			WHERE status = 'running' AND instance <> '' AND instance <> ?`, reason, ns(db.now()), instance)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		_, err = c.exec(ctx, `UPDATE run_requests SET status = 'refused', error = ?
			WHERE status = 'taken' AND taken_by <> ?`, reason, instance)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("abandon runs of earlier leaders: %w", err)
	}
	return n, nil
}
