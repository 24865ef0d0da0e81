package journal

import (
	"context"
	"fmt"
	"time"
)

// Finding is one audit (or other) observation with a stable identity.
type Finding struct {
	ID         string // stable identity within its scope, e.g. "unused:key_id"
	Kind       string // unused, overdue, expiring, undeclared, drift, workspace_drift...
	Severity   string // info, warning, critical
	Subject    string // what it is about: a key name/id, a workspace
	Detail     string // human-readable detail, no key material
	Action     string // what the operator should do
	FirstSeen  time.Time
	LastSeen   time.Time
	ReportedAt time.Time // zero until MarkFindingsReported
	ResolvedAt time.Time // zero while open
}

// FindingsDelta is what changed in a scope since the previous sync.
type FindingsDelta struct {
	// New: findings to report: first seen now, seen again after being
	// resolved, or open but never reported (a previous run crashed before
	// MarkFindingsReported).
	New []Finding
	// Persisting: open findings already reported (a digest line only).
	Persisting []Finding
	// Resolved: reported findings no longer present whose resolution has not
	// been reported yet.
	Resolved []Finding
}

const findingCols = `id, kind, severity, subject, detail, action, first_seen, last_seen, reported_at, resolved_at, resolution_reported`

type findingRow struct {
	Finding
	resolutionReported int64
}

func scanFinding(s interface{ Scan(...any) error }) (findingRow, error) {
	var f findingRow
	var fs, ls, rep, res int64
	err := s.Scan(&f.ID, &f.Kind, &f.Severity, &f.Subject, &f.Detail, &f.Action, &fs, &ls, &rep, &res, &f.resolutionReported)
	f.FirstSeen, f.LastSeen, f.ReportedAt, f.ResolvedAt = tm(fs), tm(ls), tm(rep), tm(res)
	return f, err
}

// SyncFindings records the scope's current findings (the whole set, e.g. the
// audit's output) at time now and returns, in one transaction, what is new,
// what persists and what was resolved. A finding is reported once: New holds
// it until MarkFindingsReported is called; a resolution likewise stays in
// Resolved until marked, so a crash between sync and notification repeats the
// notice instead of losing it (the outbox's dedupe absorbs the repeat when the
// dedupe id is derived from scope, id and FirstSeen / ResolvedAt).
// Findings never reported that disappear resolve silently.
func (db *DB) SyncFindings(ctx context.Context, scope string, current []Finding, now time.Time) (FindingsDelta, error) {
	var d FindingsDelta
	if scope == "" {
		return d, fmt.Errorf("sync findings: %w: empty scope", ErrInvalid)
	}
	seen := make(map[string]bool, len(current))
	for _, f := range current {
		if f.ID == "" || f.Kind == "" {
			return d, fmt.Errorf("sync findings %s: %w: finding with empty id or kind", scope, ErrInvalid)
		}
		if seen[f.ID] {
			return d, fmt.Errorf("sync findings %s: %w: duplicate finding id %q", scope, ErrInvalid, f.ID)
		}
		seen[f.ID] = true
	}
	t := ns(now)
	err := db.tx(ctx, func(tx conn) error {
		d = FindingsDelta{}
		rows, err := tx.query(ctx, `SELECT `+findingCols+` FROM findings WHERE scope = ?`, scope)
		if err != nil {
			return err
		}
		existing := map[string]findingRow{}
		var order []string
		for rows.Next() {
			f, err := scanFinding(rows)
			if err != nil {
				rows.Close()
				return err
			}
			existing[f.ID] = f
			order = append(order, f.ID)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, c := range current {
			old, ok := existing[c.ID]
			c.LastSeen = now
			switch {
			case !ok:
				c.FirstSeen, c.ReportedAt, c.ResolvedAt = now, time.Time{}, time.Time{}
				if _, err := tx.exec(ctx, `INSERT INTO findings (scope, `+findingCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0)`,
					scope, c.ID, c.Kind, c.Severity, c.Subject, c.Detail, c.Action, t, t); err != nil {
					return err
				}
				d.New = append(d.New, c)
			case !old.ResolvedAt.IsZero():
				// Back after being resolved: a new occurrence.
				c.FirstSeen, c.ReportedAt, c.ResolvedAt = now, time.Time{}, time.Time{}
				if _, err := tx.exec(ctx, `UPDATE findings SET kind = ?, severity = ?, subject = ?, detail = ?, action = ?,
					first_seen = ?, last_seen = ?, reported_at = 0, resolved_at = 0, resolution_reported = 0 WHERE scope = ? AND id = ?`,
					c.Kind, c.Severity, c.Subject, c.Detail, c.Action, t, t, scope, c.ID); err != nil {
					return err
				}
				d.New = append(d.New, c)
			default:
				c.FirstSeen, c.ReportedAt = old.FirstSeen, old.ReportedAt
				if _, err := tx.exec(ctx, `UPDATE findings SET kind = ?, severity = ?, subject = ?, detail = ?, action = ?,
					last_seen = ? WHERE scope = ? AND id = ?`,
					c.Kind, c.Severity, c.Subject, c.Detail, c.Action, t, scope, c.ID); err != nil {
					return err
				}
				if old.ReportedAt.IsZero() {
					d.New = append(d.New, c)
				} else {
					d.Persisting = append(d.Persisting, c)
				}
			}
		}
		for _, id := range order {
			old := existing[id]
			if seen[id] {
				continue
			}
			switch {
			case old.ResolvedAt.IsZero() && old.ReportedAt.IsZero():
				// Never reported: resolve silently.
				if _, err := tx.exec(ctx, `UPDATE findings SET resolved_at = ?, resolution_reported = ? WHERE scope = ? AND id = ?`,
					t, t, scope, id); err != nil {
					return err
				}
			case old.ResolvedAt.IsZero():
				if _, err := tx.exec(ctx, `UPDATE findings SET resolved_at = ? WHERE scope = ? AND id = ?`, t, scope, id); err != nil {
					return err
				}
				old.ResolvedAt = now
				d.Resolved = append(d.Resolved, old.Finding)
			case old.resolutionReported == 0:
				d.Resolved = append(d.Resolved, old.Finding)
			}
		}
		return nil
	})
	if err != nil {
		return FindingsDelta{}, fmt.Errorf("sync findings %s: %w", scope, err)
	}
	return d, nil
}

// MarkFindingsReported records that d.New was reported and d.Resolved's
// resolutions were announced, at time at. Call it once the notifications are
// in the outbox.
func (db *DB) MarkFindingsReported(ctx context.Context, scope string, d FindingsDelta, at time.Time) error {
	t := ns(at)
	err := db.tx(ctx, func(tx conn) error {
		for _, f := range d.New {
			if _, err := tx.exec(ctx, `UPDATE findings SET reported_at = ? WHERE scope = ? AND id = ? AND resolved_at = 0`,
				t, scope, f.ID); err != nil {
				return err
			}
		}
		for _, f := range d.Resolved {
			if _, err := tx.exec(ctx, `UPDATE findings SET resolution_reported = ? WHERE scope = ? AND id = ? AND resolved_at <> 0`,
				t, scope, f.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark findings reported %s: %w", scope, err)
	}
	return nil
}

// OpenFindings returns the scope's unresolved findings, by kind then id.
func (db *DB) OpenFindings(ctx context.Context, scope string) ([]Finding, error) {
	rows, err := db.conn().query(ctx, `SELECT `+findingCols+` FROM findings WHERE scope = ? AND resolved_at = 0 ORDER BY kind, id`, scope)
	if err != nil {
		return nil, fmt.Errorf("open findings %s: %w", scope, err)
	}
	defer rows.Close()
	var out []Finding
	for rows.Next() {
		f, err := scanFinding(rows)
		if err != nil {
			return nil, fmt.Errorf("open findings %s: %w", scope, err)
		}
		out = append(out, f.Finding)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("open findings %s: %w", scope, err)
	}
	return out, nil
}
