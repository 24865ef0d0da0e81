package journal

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// AuditCursor is a position in an audit log ordered by time: every event
// up to Time has been read, and of the events at exactly Time those whose
// ids are in IDs (a log may hold several events at one timestamp, and a
// read may stop between them).
type AuditCursor struct {
	Time time.Time
	IDs  []string
}

// IsZero reports whether the cursor is unset (nothing read yet).
func (c AuditCursor) IsZero() bool { return c.Time.IsZero() }

// Seen reports whether the event (id, at) is at or before the cursor.
func (c AuditCursor) Seen(id string, at time.Time) bool {
	switch {
	case c.Time.IsZero():
		return false
	case at.Before(c.Time):
		return true
	case at.Equal(c.Time):
		return slices.Contains(c.IDs, id)
	}
	return false
}

// Advance returns the cursor moved past the event (id, at); an event
// before the cursor leaves it unchanged.
func (c AuditCursor) Advance(id string, at time.Time) AuditCursor {
	switch {
	case c.Time.IsZero() || at.After(c.Time):
		return AuditCursor{Time: at, IDs: []string{id}}
	case at.Equal(c.Time) && !slices.Contains(c.IDs, id):
		return AuditCursor{Time: c.Time, IDs: append(slices.Clone(c.IDs), id)}
	}
	return c
}

// AuditCursor returns the source's cursor (the zero cursor when none).
func (db *DB) AuditCursor(ctx context.Context, source string) (AuditCursor, error) {
	var t int64
	var ids string
	err := db.conn().queryRow(ctx, `SELECT last_time, ids FROM audit_cursors WHERE source = ?`, source).Scan(&t, &ids)
	if errors.Is(err, sql.ErrNoRows) {
		return AuditCursor{}, nil
	}
	if err != nil {
		return AuditCursor{}, fmt.Errorf("audit cursor %s: %w", source, err)
	}
	c := AuditCursor{Time: tm(t)}
	if err := json.Unmarshal([]byte(ids), &c.IDs); err != nil {
		return AuditCursor{}, fmt.Errorf("audit cursor %s: ids: %w", source, err)
	}
	return c, nil
}

// AdvanceAuditCursor moves the source's cursor forward to c (a c before
// the stored cursor leaves it; one at the same time adds its ids) and
// settles the findings ids of scope in the same transaction: resolved at
// at with their resolution counted as reported.
func (db *DB) AdvanceAuditCursor(ctx context.Context, source string, c AuditCursor, scope string, settle []string, at time.Time) error {
	if source == "" || c.Time.IsZero() {
		return fmt.Errorf("advance audit cursor: %w: empty source or time", ErrInvalid)
	}
	if len(settle) > 0 && scope == "" {
		return fmt.Errorf("advance audit cursor %s: %w: findings to settle without a scope", source, ErrInvalid)
	}
	err := db.tx(ctx, func(tx conn) error {
		var t int64
		var raw string
		err := tx.queryRow(ctx, `SELECT last_time, ids FROM audit_cursors WHERE source = ?`, source).Scan(&t, &raw)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			old := AuditCursor{Time: tm(t)}
			if err := json.Unmarshal([]byte(raw), &old.IDs); err != nil {
				return fmt.Errorf("ids: %w", err)
			}
			for _, id := range c.IDs {
				old = old.Advance(id, c.Time)
			}
			if old.Time.After(c.Time) || old.Time.Equal(c.Time) {
				c = old
			}
		}
		ids, err := json.Marshal(append([]string{}, c.IDs...))
		if err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `INSERT INTO audit_cursors (source, last_time, ids, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (source) DO UPDATE SET last_time = excluded.last_time, ids = excluded.ids, updated_at = excluded.updated_at`,
			source, ns(c.Time), string(ids), ns(at)); err != nil {
			return err
		}
		for _, id := range settle {
			if _, err := tx.exec(ctx, `UPDATE findings SET resolved_at = ?, resolution_reported = ? WHERE scope = ? AND id = ? AND resolved_at = 0`,
				ns(at), ns(at), scope, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("advance audit cursor %s: %w", source, err)
	}
	return nil
}
