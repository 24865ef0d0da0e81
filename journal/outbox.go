package journal

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Outbox message statuses.
const (
	MsgPending = "pending"
	MsgSent    = "sent"
	MsgDead    = "dead" // permanent failure: kept for inspection, never retried
)

// Message is one notification in the outbox. Payload is the encoded
// notification (package notify owns the format); it carries no key material.
type Message struct {
	ID       int64
	Dedupe   string // unique when non-empty: enqueuing the same dedupe twice is a no-op
	Severity string
	Channel  string
	Kind     string
	Payload  []byte
	Status   string // pending, sent, dead
	Attempts int    // delivery attempts claimed so far
	// InDoubt is set by Claim when the previous attempt ended with no
	// recorded outcome (its worker died, or MarkUncertain was called after a
	// timeout): the message may already have been delivered, and a sender
	// that can check (notify.Confirmer) should before sending again.
	InDoubt     bool
	NextAttempt time.Time
	LastError   string
	CreatedAt   time.Time
	SentAt      time.Time
}

const msgCols = `id, dedupe, severity, channel, kind, payload, status, attempts, next_attempt, last_error, created_at, sent_at, claimed_at`

func scanMsg(s interface{ Scan(...any) error }) (Message, error) {
	var m Message
	var dd sql.NullString
	var na, ca, sa, cl int64
	err := s.Scan(&m.ID, &dd, &m.Severity, &m.Channel, &m.Kind, &m.Payload, &m.Status, &m.Attempts, &na, &m.LastError, &ca, &sa, &cl)
	m.InDoubt = cl != 0
	m.Dedupe = dd.String
	m.NextAttempt, m.CreatedAt, m.SentAt = tm(na), tm(ca), tm(sa)
	return m, err
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Enqueue adds a pending message, due at m.NextAttempt (now when zero),
// created at m.CreatedAt (now when zero). When
// a message with the same non-empty Dedupe exists (in any status), nothing is
// written and its id is returned with created false.
func (db *DB) Enqueue(ctx context.Context, m Message) (id int64, created bool, err error) {
	if m.Payload == nil {
		m.Payload = []byte{}
	}
	now := db.now()
	if !m.CreatedAt.IsZero() {
		now = m.CreatedAt
	}
	if m.NextAttempt.IsZero() {
		m.NextAttempt = now
	}
	err = db.tx(ctx, func(tx conn) error {
		id, created = 0, false
		rows, err := tx.query(ctx, `INSERT INTO outbox (dedupe, severity, channel, kind, payload, status, attempts, next_attempt, created_at)
			VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?) ON CONFLICT (dedupe) DO NOTHING RETURNING id`,
			nullable(m.Dedupe), m.Severity, m.Channel, m.Kind, m.Payload, ns(m.NextAttempt), ns(now))
		if err != nil {
			return err
		}
		if rows.Next() {
			created = true
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if created {
			return nil
		}
		return tx.queryRow(ctx, `SELECT id FROM outbox WHERE dedupe = ?`, m.Dedupe).Scan(&id)
	})
	if err != nil {
		return 0, false, fmt.Errorf("enqueue %s message: %w", m.Kind, err)
	}
	return id, created, nil
}

// Due lists pending messages due at now, in enqueue order, without claiming them.
func (db *DB) Due(ctx context.Context, now time.Time, limit int) ([]Message, error) {
	if limit <= 0 {
		limit = 100
	}
	return db.queryMsgs(ctx, "due messages", `WHERE status = 'pending' AND next_attempt <= ? ORDER BY id LIMIT ?`, ns(now), limit)
}

// Claim atomically takes up to limit pending messages due at now, in enqueue
// (id) order, for one
// delivery attempt: each one's attempts is incremented and its next_attempt
// pushed to now+lease, so another worker (in this or another process) does not
// send it meanwhile, and a worker that dies mid-send leaves it due again once
// the lease ends (and InDoubt set). The caller then calls MarkSent,
// MarkRetry, MarkUncertain or MarkDead.
func (db *DB) Claim(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Message, error) {
	if limit <= 0 {
		limit = 100
	}
	if lease <= 0 {
		return nil, fmt.Errorf("claim messages: %w: lease must be positive", ErrInvalid)
	}
	var out []Message
	err := db.tx(ctx, func(tx conn) error {
		out = out[:0]
		rows, err := tx.query(ctx, `SELECT `+msgCols+` FROM outbox WHERE status = 'pending' AND next_attempt <= ?
			ORDER BY id LIMIT ?`, ns(now), limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			m, err := scanMsg(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		until := now.Add(lease)
		for i := range out {
			if _, err := tx.exec(ctx, `UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, claimed_at = ? WHERE id = ?`,
				ns(until), ns(now), out[i].ID); err != nil {
				return err
			}
			out[i].Attempts++
			out[i].NextAttempt = until
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim messages: %w", err)
	}
	return out, nil
}

// MarkSent records a message as delivered at at.
func (db *DB) MarkSent(ctx context.Context, id int64, at time.Time) error {
	return db.updateMsg(ctx, "mark sent", id, `UPDATE outbox SET status = 'sent', sent_at = ?, last_error = '', claimed_at = 0 WHERE id = ?`, ns(at), id)
}

// MarkRetry records a failed attempt and when to try again.
func (db *DB) MarkRetry(ctx context.Context, id int64, next time.Time, errMsg string) error {
	return db.updateMsg(ctx, "mark retry", id, `UPDATE outbox SET next_attempt = ?, last_error = ?, claimed_at = 0 WHERE id = ? AND status = 'pending'`,
		ns(next), errMsg, id)
}

// MarkUncertain records an attempt whose outcome is unknown (a timeout or a
// connection lost after the request was written) and when to try again; the
// next Claim returns the message with InDoubt set.
func (db *DB) MarkUncertain(ctx context.Context, id int64, next time.Time, errMsg string) error {
	return db.updateMsg(ctx, "mark uncertain", id, `UPDATE outbox SET next_attempt = ?, last_error = ? WHERE id = ? AND status = 'pending'`,
		ns(next), errMsg, id)
}

// MarkDead records a permanent failure: the message stays in the journal
// (status dead, with the error) but is never retried.
func (db *DB) MarkDead(ctx context.Context, id int64, errMsg string) error {
	return db.updateMsg(ctx, "mark dead", id, `UPDATE outbox SET status = 'dead', last_error = ?, claimed_at = 0 WHERE id = ? AND status = 'pending'`,
		errMsg, id)
}

// Requeue makes a dead (or pending) message pending and due now again, for an
// operator who fixed the cause (e.g. the Slack channel).
func (db *DB) Requeue(ctx context.Context, id int64) error {
	return db.updateMsg(ctx, "requeue", id, `UPDATE outbox SET status = 'pending', next_attempt = ? WHERE id = ? AND status <> 'sent'`,
		ns(db.now()), id)
}

func (db *DB) updateMsg(ctx context.Context, what string, id int64, q string, args ...any) error {
	res, err := db.execWrite(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("%s message %d: %w", what, id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%s message %d: %w", what, id, ErrNotFound)
	}
	return nil
}

// PendingCount returns how many messages await delivery.
func (db *DB) PendingCount(ctx context.Context) (int, error) {
	var n int
	if err := db.conn().queryRow(ctx, `SELECT COUNT(*) FROM outbox WHERE status = 'pending'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("pending count: %w", err)
	}
	return n, nil
}

// NextDue returns the earliest next_attempt of a pending message; ok is false
// when nothing is pending.
func (db *DB) NextDue(ctx context.Context) (time.Time, bool, error) {
	var v sql.NullInt64
	if err := db.conn().queryRow(ctx, `SELECT MIN(next_attempt) FROM outbox WHERE status = 'pending'`).Scan(&v); err != nil {
		return time.Time{}, false, fmt.Errorf("next due: %w", err)
	}
	if !v.Valid {
		return time.Time{}, false, nil
	}
	return tm(v.Int64), true, nil
}

// Message returns one outbox message, or ErrNotFound.
func (db *DB) Message(ctx context.Context, id int64) (Message, error) {
	m, err := scanMsg(db.conn().queryRow(ctx, `SELECT `+msgCols+` FROM outbox WHERE id = ?`, id))
	if isNoRows(err) {
		return Message{}, fmt.Errorf("message %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Message{}, fmt.Errorf("message %d: %w", id, err)
	}
	return m, nil
}

// Messages lists outbox messages with the given status ("" for all), newest
// first; limit <= 0 means 100.
func (db *DB) Messages(ctx context.Context, status string, limit int) ([]Message, error) {
	if limit <= 0 {
		limit = 100
	}
	if status == "" {
		return db.queryMsgs(ctx, "messages", `ORDER BY id DESC LIMIT ?`, limit)
	}
	return db.queryMsgs(ctx, "messages", `WHERE status = ? ORDER BY id DESC LIMIT ?`, status, limit)
}

func (db *DB) queryMsgs(ctx context.Context, what, q string, args ...any) ([]Message, error) {
	rows, err := db.conn().query(ctx, `SELECT `+msgCols+` FROM outbox `+q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		m, err := scanMsg(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}
