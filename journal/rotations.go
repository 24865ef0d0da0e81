package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Rotation statuses.
const (
	StatusInFlight = "in_flight"
	StatusDone     = "done"
	StatusFailed   = "failed"
)

// Rotation is one rotation attempt of one managed key. It holds ids, names and
// versions only, never key material.
type Rotation struct {
	ID             string    // rotation id (unique)
	KeyName        string    // the managed key's name in the config
	Step           Step      // last step journaled: begin, create, verify, publish, reverify, done, abort
	Status         string    // in_flight, done or failed
	OldKeyID       string    // platform id of the key being replaced ("" on bootstrap)
	NewKeyID       string    // platform id of the key created ("" until create)
	NewKeyName     string    // deterministic name of the new key
	StoreVersion   string    // store version written at publish
	PropagateUntil time.Time // durable end of the propagation wait
	Attempts       int       // verification (or other) attempts
	Error          string    // failure reason, no key material
	Trigger        string    // who asked: cron, cli, uid:N
	StartedAt      time.Time
	UpdatedAt      time.Time
	FinishedAt     time.Time // set when status leaves in_flight
}

const rotationCols = `id, key_name, step, status, old_key_id, new_key_id, new_key_name, store_version,
	propagate_until, attempts, error, trigger_by, started_at, updated_at, finished_at`

func scanRotation(s interface{ Scan(...any) error }) (Rotation, error) {
	var r Rotation
	var pu, st, up, fin int64
	err := s.Scan(&r.ID, &r.KeyName, &r.Step, &r.Status, &r.OldKeyID, &r.NewKeyID, &r.NewKeyName,
		&r.StoreVersion, &pu, &r.Attempts, &r.Error, &r.Trigger, &st, &up, &fin)
	r.PropagateUntil, r.StartedAt, r.UpdatedAt, r.FinishedAt = tm(pu), tm(st), tm(up), tm(fin)
	return r, err
}

func validStatus(s string) bool {
	return s == StatusInFlight || s == StatusDone || s == StatusFailed
}

// isSQLiteUnique reports whether err is a UNIQUE or PRIMARY KEY constraint violation.
func isSQLiteUnique(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// isSQLiteBusy reports SQLITE_BUSY and its extended codes.
func isSQLiteBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// BeginRotation journals a new rotation. Status defaults to in_flight, Step to
// "begin", StartedAt/UpdatedAt to now. It returns ErrRotationInFlight when
// KeyName already has an in-flight rotation: the UNIQUE partial index makes
// this hold across processes.
func (db *DB) BeginRotation(ctx context.Context, r Rotation) error {
	if r.ID == "" || r.KeyName == "" {
		return fmt.Errorf("begin rotation: %w: id and key name are required", ErrInvalid)
	}
	if r.Status == "" {
		r.Status = StatusInFlight
	}
	if !validStatus(r.Status) {
		return fmt.Errorf("begin rotation %s: %w: status %q", r.ID, ErrInvalid, r.Status)
	}
	if r.Step == "" {
		r.Step = StepBegin
	}
	now := db.now()
	if r.StartedAt.IsZero() {
		r.StartedAt = now
	}
	r.UpdatedAt = now
	if r.Status != StatusInFlight && r.FinishedAt.IsZero() {
		r.FinishedAt = now
	}
	_, err := db.execWrite(ctx, `INSERT INTO rotations (`+rotationCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.KeyName, r.Step, r.Status, r.OldKeyID, r.NewKeyID, r.NewKeyName, r.StoreVersion,
		ns(r.PropagateUntil), r.Attempts, r.Error, r.Trigger, ns(r.StartedAt), ns(r.UpdatedAt), ns(r.FinishedAt))
	if err != nil {
		if db.d.IsUnique(err) {
			// Either the id exists or the key has a rotation in flight: tell which.
			var n int
			if qerr := db.conn().queryRow(ctx, `SELECT COUNT(*) FROM rotations WHERE id = ?`, r.ID).Scan(&n); qerr == nil && n > 0 {
				return fmt.Errorf("begin rotation %s: %w: duplicate rotation id", r.ID, ErrInvalid)
			}
			return fmt.Errorf("begin rotation %s of %s: %w", r.ID, r.KeyName, ErrRotationInFlight)
		}
		return fmt.Errorf("begin rotation %s: %w", r.ID, err)
	}
	return nil
}

// UpdateRotation writes r's step, status, ids, store version, deadline,
// attempts and error to the row with r.ID, and sets updated_at (and
// finished_at when the status leaves in_flight). KeyName, Trigger and
// StartedAt are immutable. ErrNotFound if there is no such rotation.
func (db *DB) UpdateRotation(ctx context.Context, r Rotation) error {
	if r.ID == "" {
		return fmt.Errorf("update rotation: %w: empty id", ErrInvalid)
	}
	if !validStatus(r.Status) {
		return fmt.Errorf("update rotation %s: %w: status %q", r.ID, ErrInvalid, r.Status)
	}
	now := db.now()
	fin := r.FinishedAt
	if r.Status != StatusInFlight && fin.IsZero() {
		fin = now
	}
	if r.Status == StatusInFlight {
		fin = time.Time{}
	}
	res, err := db.execWrite(ctx, `UPDATE rotations SET step = ?, status = ?, old_key_id = ?, new_key_id = ?,
		new_key_name = ?, store_version = ?, propagate_until = ?, attempts = ?, error = ?, updated_at = ?, finished_at = ?
		WHERE id = ?`,
		r.Step, r.Status, r.OldKeyID, r.NewKeyID, r.NewKeyName, r.StoreVersion, ns(r.PropagateUntil),
		r.Attempts, r.Error, ns(now), ns(fin), r.ID)
	if err != nil {
		if db.d.IsUnique(err) {
			return fmt.Errorf("update rotation %s: %w", r.ID, ErrRotationInFlight)
		}
		return fmt.Errorf("update rotation %s: %w", r.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("update rotation %s: %w", r.ID, ErrNotFound)
	}
	return nil
}

func (db *DB) queryRotations(ctx context.Context, what, q string, args ...any) ([]Rotation, error) {
	rows, err := db.conn().query(ctx, `SELECT `+rotationCols+` FROM rotations `+q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []Rotation
	for rows.Next() {
		r, err := scanRotation(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// InFlightRotations returns every rotation still in flight, oldest first: what
// recovery resumes on start.
func (db *DB) InFlightRotations(ctx context.Context) ([]Rotation, error) {
	return db.queryRotations(ctx, "in-flight rotations", `WHERE status = 'in_flight' ORDER BY started_at, id`)
}

// Rotation returns one rotation by id, or ErrNotFound.
func (db *DB) Rotation(ctx context.Context, id string) (Rotation, error) {
	r, err := scanRotation(db.conn().queryRow(ctx, `SELECT `+rotationCols+` FROM rotations WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Rotation{}, fmt.Errorf("rotation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Rotation{}, fmt.Errorf("rotation %s: %w", id, err)
	}
	return r, nil
}

// RotationsForKey returns the key's rotations, newest first; limit <= 0 means all.
func (db *DB) RotationsForKey(ctx context.Context, keyName string, limit int) ([]Rotation, error) {
	if limit <= 0 {
		limit = math.MaxInt32
	}
	return db.queryRotations(ctx, "rotations of "+keyName,
		`WHERE key_name = ? ORDER BY started_at DESC, id DESC LIMIT ?`, keyName, limit)
}

// RecentRotations returns the latest rotations of all keys, newest first
// (for status pages and digests); limit <= 0 means all.
func (db *DB) RecentRotations(ctx context.Context, since time.Time, limit int) ([]Rotation, error) {
	if limit <= 0 {
		limit = math.MaxInt32
	}
	return db.queryRotations(ctx, "recent rotations",
		`WHERE updated_at >= ? ORDER BY started_at DESC, id DESC LIMIT ?`, ns(since), limit)
}

// LastDoneRotation returns the key's most recently finished successful
// rotation; ok is false when it has none.
func (db *DB) LastDoneRotation(ctx context.Context, keyName string) (r Rotation, ok bool, err error) {
	rs, err := db.queryRotations(ctx, "last done rotation of "+keyName,
		`WHERE key_name = ? AND status = 'done' ORDER BY finished_at DESC, id DESC LIMIT 1`, keyName)
	if err != nil || len(rs) == 0 {
		return Rotation{}, false, err
	}
	return rs[0], true, nil
}
