package journal

import (
	"context"
	"fmt"
	"time"
)

// ActionsMigration (shared by both engines: portable SQL) adds the tables of operator actions (one row per action
// taken from a chat button, so a redelivered or double click runs it once)
// and of finding suppressions (snoozes and acknowledgements).
var ActionsMigration = []string{
	`CREATE TABLE operator_actions (
		action_key   TEXT PRIMARY KEY,
		action       TEXT NOT NULL,
		target       TEXT NOT NULL DEFAULT '',
		user_id      TEXT NOT NULL,
		status       TEXT NOT NULL CHECK (status IN ('running','done','failed','refused')),
		run_id       BIGINT NOT NULL DEFAULT 0,
		outcome      TEXT NOT NULL DEFAULT '',
		started_at   BIGINT NOT NULL,
		finished_at  BIGINT NOT NULL DEFAULT 0
	)`,
	`CREATE TABLE finding_suppressions (
		scope       TEXT NOT NULL,
		finding_id  TEXT NOT NULL,
		kind        TEXT NOT NULL CHECK (kind IN ('snooze','ack')),
		until_at    BIGINT NOT NULL DEFAULT 0,
		first_seen  BIGINT NOT NULL DEFAULT 0,
		by_user     TEXT NOT NULL DEFAULT '',
		created_at  BIGINT NOT NULL,
		PRIMARY KEY (scope, finding_id)
	)`,
}

// Operator action statuses.
const (
	ActionRunning = "running"
	ActionDone    = "done"
	ActionFailed  = "failed"
	ActionRefused = "refused"
)

// OperatorAction is one action an operator took from a chat message.
type OperatorAction struct {
	// Key identifies the click: the message, the finding and the action.
	Key        string
	Action     string // rotate, revoke, snooze, acknowledge
	Target     string // the finding id or key name acted on
	User       string // the chat user id that clicked
	Status     string // running, done, failed, refused
	RunID      int64  // the journal run recording it
	Outcome    string // what happened, for people
	StartedAt  time.Time
	FinishedAt time.Time
}

const actionCols = `action_key, action, target, user_id, status, run_id, outcome, started_at, finished_at`

func scanAction(s interface{ Scan(...any) error }) (OperatorAction, error) {
	var a OperatorAction
	var st, fin int64
	err := s.Scan(&a.Key, &a.Action, &a.Target, &a.User, &a.Status, &a.RunID, &a.Outcome, &st, &fin)
	a.StartedAt, a.FinishedAt = tm(st), tm(fin)
	return a, err
}

// ClaimAction records that user starts action on target under key and
// returns it with first true; when key was already claimed it returns the
// earlier claim with first false and records nothing. A claim that failed
// may be claimed again (the operator retries after fixing the cause); one
// running, done or refused may not. Atomic across processes.
func (db *DB) ClaimAction(ctx context.Context, key, action, target, user string) (OperatorAction, bool, error) {
	if key == "" || action == "" || user == "" {
		return OperatorAction{}, false, fmt.Errorf("claim action: %w: key, action and user are required", ErrInvalid)
	}
	now := ns(db.now())
	var a OperatorAction
	first := false
	err := db.tx(ctx, func(tx conn) error {
		res, err := tx.exec(ctx, `INSERT INTO operator_actions (action_key, action, target, user_id, status, started_at)
			VALUES (?, ?, ?, ?, 'running', ?)
			ON CONFLICT (action_key) DO UPDATE SET user_id = excluded.user_id, status = 'running', run_id = 0,
				outcome = '', started_at = excluded.started_at, finished_at = 0
			WHERE operator_actions.status = 'failed'`, key, action, target, user, now)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		first = n == 1
		a, err = scanAction(tx.queryRow(ctx, `SELECT `+actionCols+` FROM operator_actions WHERE action_key = ?`, key))
		return err
	})
	if err != nil {
		return OperatorAction{}, false, fmt.Errorf("claim action %s: %w", action, err)
	}
	return a, first, nil
}

// SetActionRun links a claimed action to the run that records it.
func (db *DB) SetActionRun(ctx context.Context, key string, runID int64) error {
	if _, err := db.conn().exec(ctx, `UPDATE operator_actions SET run_id = ? WHERE action_key = ?`, runID, key); err != nil {
		return fmt.Errorf("set action run: %w", err)
	}
	return nil
}

// FinishAction records a claimed action's outcome: status is done, failed
// or refused.
func (db *DB) FinishAction(ctx context.Context, key, status, outcome string) error {
	switch status {
	case ActionDone, ActionFailed, ActionRefused:
	default:
		return fmt.Errorf("finish action: %w: status %q", ErrInvalid, status)
	}
	res, err := db.conn().exec(ctx, `UPDATE operator_actions SET status = ?, outcome = ?, finished_at = ? WHERE action_key = ?`,
		status, outcome, ns(db.now()), key)
	if err != nil {
		return fmt.Errorf("finish action: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("finish action %q: %w", key, ErrNotFound)
	}
	return nil
}

// Action returns one recorded action, or ErrNotFound.
func (db *DB) Action(ctx context.Context, key string) (OperatorAction, error) {
	a, err := scanAction(db.conn().queryRow(ctx, `SELECT `+actionCols+` FROM operator_actions WHERE action_key = ?`, key))
	if isNoRows(err) {
		return OperatorAction{}, fmt.Errorf("action %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return OperatorAction{}, fmt.Errorf("action %q: %w", key, err)
	}
	return a, nil
}

// Suppression kinds.
const (
	SuppressSnooze = "snooze"
	SuppressAck    = "ack"
)

// Suppression silences one finding: a snooze until a time, or an
// acknowledgement that holds while the finding stays open (the same
// occurrence: a finding that resolves and comes back is news again).
type Suppression struct {
	Scope     string
	FindingID string
	Kind      string    // snooze or ack
	Until     time.Time // snoozes only
	FirstSeen time.Time // the occurrence acknowledged (acks only)
	By        string    // who: a chat user id
	At        time.Time
}

// Active reports whether s silences a finding first seen at firstSeen, at now.
func (s Suppression) Active(firstSeen, now time.Time) bool {
	switch s.Kind {
	case SuppressSnooze:
		return now.Before(s.Until)
	case SuppressAck:
		return s.FirstSeen.IsZero() || firstSeen.IsZero() || s.FirstSeen.Equal(firstSeen)
	}
	return false
}

// Snooze silences the scope's finding until until.
func (db *DB) Snooze(ctx context.Context, scope, findingID string, until time.Time, by string) error {
	if until.IsZero() {
		return fmt.Errorf("snooze: %w: no end", ErrInvalid)
	}
	return db.suppress(ctx, Suppression{Scope: scope, FindingID: findingID, Kind: SuppressSnooze, Until: until, By: by})
}

// Acknowledge silences the scope's finding for as long as its current
// occurrence stays open.
func (db *DB) Acknowledge(ctx context.Context, scope, findingID, by string) error {
	var fs int64
	err := db.conn().queryRow(ctx, `SELECT first_seen FROM findings WHERE scope = ? AND id = ? AND resolved_at = 0`,
		scope, findingID).Scan(&fs)
	if err != nil && !isNoRows(err) {
		return fmt.Errorf("acknowledge %s: %w", findingID, err)
	}
	return db.suppress(ctx, Suppression{Scope: scope, FindingID: findingID, Kind: SuppressAck, FirstSeen: tm(fs), By: by})
}

func (db *DB) suppress(ctx context.Context, s Suppression) error {
	if s.Scope == "" || s.FindingID == "" {
		return fmt.Errorf("%s: %w: scope and finding id are required", s.Kind, ErrInvalid)
	}
	_, err := db.conn().exec(ctx, `INSERT INTO finding_suppressions (scope, finding_id, kind, until_at, first_seen, by_user, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (scope, finding_id) DO UPDATE SET kind = excluded.kind, until_at = excluded.until_at,
			first_seen = excluded.first_seen, by_user = excluded.by_user, created_at = excluded.created_at`,
		s.Scope, s.FindingID, s.Kind, ns(s.Until), ns(s.FirstSeen), s.By, ns(db.now()))
	if err != nil {
		return fmt.Errorf("%s %s: %w", s.Kind, s.FindingID, err)
	}
	return nil
}

// Suppressions returns the scope's snoozes and acknowledgements that are
// active at now, by finding id (those of resolved occurrences and expired
// snoozes are left out).
func (db *DB) Suppressions(ctx context.Context, scope string, now time.Time) (map[string]Suppression, error) {
	rows, err := db.conn().query(ctx, `SELECT s.finding_id, s.kind, s.until_at, s.first_seen, s.by_user, s.created_at,
			COALESCE(f.first_seen, 0)
		FROM finding_suppressions s LEFT JOIN findings f ON f.scope = s.scope AND f.id = s.finding_id AND f.resolved_at = 0
		WHERE s.scope = ?`, scope)
	if err != nil {
		return nil, fmt.Errorf("suppressions %s: %w", scope, err)
	}
	defer rows.Close()
	out := map[string]Suppression{}
	for rows.Next() {
		s := Suppression{Scope: scope}
		var until, fs, at, open int64
		if err := rows.Scan(&s.FindingID, &s.Kind, &until, &fs, &s.By, &at, &open); err != nil {
			return nil, fmt.Errorf("suppressions %s: %w", scope, err)
		}
		s.Until, s.FirstSeen, s.At = tm(until), tm(fs), tm(at)
		if s.Kind == SuppressAck && open == 0 {
			continue // the acknowledged occurrence is resolved
		}
		if s.Active(tm(open), now) {
			out[s.FindingID] = s
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("suppressions %s: %w", scope, err)
	}
	return out, nil
}

// WithoutSuppressed returns d without the findings snoozed or acknowledged
// at now in New and Persisting (resolutions are always reported), and the
// ones left out.
func (db *DB) WithoutSuppressed(ctx context.Context, scope string, d FindingsDelta, now time.Time) (FindingsDelta, []Finding, error) {
	sup, err := db.Suppressions(ctx, scope, now)
	if err != nil || len(sup) == 0 {
		return d, nil, err
	}
	var quiet []Finding
	keep := func(in []Finding) []Finding {
		var out []Finding
		for _, f := range in {
			if s, ok := sup[f.ID]; ok && s.Active(f.FirstSeen, now) {
				quiet = append(quiet, f)
				continue
			}
			out = append(out, f)
		}
		return out
	}
	return FindingsDelta{New: keep(d.New), Persisting: keep(d.Persisting), Resolved: d.Resolved}, quiet, nil
}

// ManagedKeyName names the managed key (keys: entry) a platform key id
// belongs to according to the rotations journal: the key a done or
// in-flight rotation created, or the old key an in-flight rotation still
// serves. ok is false when no rotation names it.
func (db *DB) ManagedKeyName(ctx context.Context, keyID string) (string, bool, error) {
	if keyID == "" {
		return "", false, nil
	}
	var name string
	err := db.conn().queryRow(ctx, `SELECT key_name FROM rotations
		WHERE (new_key_id = ? AND status IN ('done','in_flight')) OR (old_key_id = ? AND status = 'in_flight')
		ORDER BY started_at DESC LIMIT 1`, keyID, keyID).Scan(&name)
	if isNoRows(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("managed key of %s: %w", keyID, err)
	}
	return name, true, nil
}
