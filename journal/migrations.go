package journal

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations is the schema history, applied in order by Open.
var migrations = []Migration{
	{1, "initial", []string{
		`CREATE TABLE rotations (
			id               TEXT PRIMARY KEY,
			key_name         TEXT NOT NULL,
			step             TEXT NOT NULL,
			status           TEXT NOT NULL CHECK (status IN ('in_flight','done','failed')),
			old_key_id       TEXT NOT NULL DEFAULT '',
			new_key_id       TEXT NOT NULL DEFAULT '',
			new_key_name     TEXT NOT NULL DEFAULT '',
			store_version    TEXT NOT NULL DEFAULT '',
			propagate_until  BIGINT NOT NULL DEFAULT 0,
			attempts         INTEGER NOT NULL DEFAULT 0,
			error            TEXT NOT NULL DEFAULT '',
			trigger_by       TEXT NOT NULL DEFAULT '',
			started_at       BIGINT NOT NULL,
			updated_at       BIGINT NOT NULL,
			finished_at      BIGINT NOT NULL DEFAULT 0
		)`,
		// One in-flight rotation per key, even across processes.
		`CREATE UNIQUE INDEX rotations_one_in_flight ON rotations (key_name) WHERE status = 'in_flight'`,
		`CREATE INDEX rotations_key ON rotations (key_name, started_at)`,
		`CREATE TABLE leases (
			name        TEXT PRIMARY KEY,
			owner       TEXT NOT NULL,
			expires_at  BIGINT NOT NULL
		)`,
		`CREATE TABLE runs (
			id           INTEGER PRIMARY KEY,
			job          TEXT NOT NULL,
			trigger_by   TEXT NOT NULL,
			args         TEXT NOT NULL DEFAULT '',
			status       TEXT NOT NULL CHECK (status IN ('running','ok','failed','panicked','canceled')),
			error        TEXT NOT NULL DEFAULT '',
			summary      TEXT NOT NULL DEFAULT '',
			started_at   BIGINT NOT NULL,
			finished_at  BIGINT NOT NULL DEFAULT 0
		)`,
		`CREATE INDEX runs_job ON runs (job, id)`,
		`CREATE TABLE last_fires (
			job       TEXT PRIMARY KEY,
			fired_at  BIGINT NOT NULL
		)`,
		`CREATE TABLE findings (
			scope                TEXT NOT NULL,
			id                   TEXT NOT NULL,
			kind                 TEXT NOT NULL,
			severity             TEXT NOT NULL DEFAULT '',
			subject              TEXT NOT NULL DEFAULT '',
			detail               TEXT NOT NULL DEFAULT '',
			action               TEXT NOT NULL DEFAULT '',
			first_seen           BIGINT NOT NULL,
			last_seen            BIGINT NOT NULL,
			reported_at          BIGINT NOT NULL DEFAULT 0,
			resolved_at          BIGINT NOT NULL DEFAULT 0,
			resolution_reported  BIGINT NOT NULL DEFAULT 0,
			PRIMARY KEY (scope, id)
		)`,
		`CREATE TABLE once_marks (
			mark        TEXT PRIMARY KEY,
			created_at  BIGINT NOT NULL
		)`,
		`CREATE TABLE outbox (
			id            INTEGER PRIMARY KEY,
			dedupe        TEXT UNIQUE,
			severity      TEXT NOT NULL DEFAULT '',
			channel       TEXT NOT NULL DEFAULT '',
			kind          TEXT NOT NULL DEFAULT '',
			payload       BLOB NOT NULL,
			status        TEXT NOT NULL CHECK (status IN ('pending','sent','dead')),
			attempts      INTEGER NOT NULL DEFAULT 0,
			next_attempt  BIGINT NOT NULL,
			last_error    TEXT NOT NULL DEFAULT '',
			created_at    BIGINT NOT NULL,
			sent_at       BIGINT NOT NULL DEFAULT 0
		)`,
		`CREATE INDEX outbox_due ON outbox (status, next_attempt)`,
		`CREATE TABLE usage_counters (
			subject     TEXT NOT NULL,
			period      TEXT NOT NULL,
			tokens      BIGINT NOT NULL DEFAULT 0,
			usd         DOUBLE PRECISION NOT NULL DEFAULT 0,
			updated_at  BIGINT NOT NULL,
			PRIMARY KEY (subject, period)
		)`,
	}},
	{2, "outbox claims", []string{
		// claimed_at is set by Claim and cleared by MarkSent, MarkRetry and
		// MarkDead: a claim still set at the next Claim means the previous
		// attempt ended with no recorded outcome (the worker died or timed
		// out mid-send), so the message may already have been delivered.
		`ALTER TABLE outbox ADD COLUMN claimed_at BIGINT NOT NULL DEFAULT 0`,
	}},
	{3, "fenced leases", []string{
		// Leader election's leases: never deleted (Prune keeps them), so a
		// name's token only grows and a write fenced with an old token is
		// refused. expires_at 0 means released.
		`CREATE TABLE fenced_leases (
			name        TEXT PRIMARY KEY,
			owner       TEXT NOT NULL,
			token       BIGINT NOT NULL,
			expires_at  BIGINT NOT NULL
		)`,
	}},
	{4, "audit log cursors", []string{
		// The position reached in an external audit log (the platform's
		// GET /v1/admin/audit-logs): the last event time read and the ids
		// of the events read at exactly that time (a JSON array), so a
		// restart neither repeats nor skips events sharing a timestamp.
		`CREATE TABLE audit_cursors (
			source      TEXT PRIMARY KEY,
			last_time   BIGINT NOT NULL,
			ids         TEXT NOT NULL DEFAULT '[]',
			updated_at  BIGINT NOT NULL
		)`,
	}},
	{5, "operator actions and finding suppressions", ActionsMigration},
	{6, "run requests", RunRequestsMigration("INTEGER PRIMARY KEY")},
	{7, "budget grants", []string{
		// The requests a counter holds (rpm windows, per UTC minute).
		`ALTER TABLE usage_counters ADD COLUMN requests BIGINT NOT NULL DEFAULT 0`,
		// Slices of a (subject, window) budget granted to gateway
		// instances (LeaseBudget): one row per instance, holding what it
		// was granted and has not reported spent. Granting checks the
		// counter plus every grant against the limit in one transaction;
		// an expired grant is charged to the counter in full, since the
		// instance that held it may have spent it.
		`CREATE TABLE budget_grants (
			subject     TEXT NOT NULL,
			period      TEXT NOT NULL,
			owner       TEXT NOT NULL,
			tokens      BIGINT NOT NULL DEFAULT 0,
			usd         DOUBLE PRECISION NOT NULL DEFAULT 0,
			requests    BIGINT NOT NULL DEFAULT 0,
			expires_at  BIGINT NOT NULL,
			PRIMARY KEY (subject, period, owner)
		)`,
	}},
}

// RunRequestsMigration is migration 6 on either engine (journal/postgres
// uses it too), given its auto-numbered primary key column type: the runs `mrbacd ctl run` asked a
// standby for, queued for the leader (status queued, then taken by the
// leader before it starts the run, then started with the run's id or
// refused with why), and the instance whose fenced run each run is (""
// for runs of one-shot commands), so a new leader cancels the runs its
// predecessor left running.
func RunRequestsMigration(idCol string) []string {
	return []string{
		`CREATE TABLE run_requests (
			id            ` + idCol + `,
			job           TEXT NOT NULL,
			trigger_by    TEXT NOT NULL,
			args          TEXT NOT NULL DEFAULT '',
			requested_by  TEXT NOT NULL DEFAULT '',
			requested_at  BIGINT NOT NULL,
			status        TEXT NOT NULL CHECK (status IN ('queued','taken','started','refused')),
			taken_by      TEXT NOT NULL DEFAULT '',
			taken_at      BIGINT NOT NULL DEFAULT 0,
			run_id        BIGINT NOT NULL DEFAULT 0,
			error         TEXT NOT NULL DEFAULT ''
		)`,
		`CREATE INDEX run_requests_status ON run_requests (status, id)`,
		`ALTER TABLE runs ADD COLUMN instance TEXT NOT NULL DEFAULT ''`,
	}
}

// migrate applies every migration not yet recorded in schema_version, each in
// its own transaction. Re-checking the version inside the transaction (IMMEDIATE
// on SQLite, behind the dialect's MigrationLock elsewhere) makes concurrent
// opens by several processes safe.
func (db *DB) migrate(ctx context.Context) error {
	if err := db.txWith(ctx, db.d.MigrationTxOptions, func(tx conn) error {
		if err := db.migrationLock(ctx, tx); err != nil {
			return err
		}
		_, err := tx.exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			version     INTEGER PRIMARY KEY,
			name        TEXT NOT NULL,
			applied_at  BIGINT NOT NULL
		)`)
		return err
	}); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	for _, m := range db.d.Migrations {
		if err := db.txWith(ctx, db.d.MigrationTxOptions, func(tx conn) error {
			if err := db.migrationLock(ctx, tx); err != nil {
				return err
			}
			var n int
			if err := tx.queryRow(ctx, `SELECT COUNT(*) FROM schema_version WHERE version = ?`, m.Version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			for _, s := range m.Stmts {
				if _, err := tx.exec(ctx, s); err != nil {
					return err
				}
			}
			_, err := tx.exec(ctx, `INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)`,
				m.Version, m.Name, ns(db.now()))
			return err
		}); err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.Version, m.Name, err)
		}
	}
	return nil
}

func (db *DB) migrationLock(ctx context.Context, tx conn) error {
	if db.d.MigrationLock == "" {
		return nil
	}
	_, err := tx.exec(ctx, db.d.MigrationLock)
	return err
}

// SchemaVersion returns the highest applied migration.
func (db *DB) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	if err := db.conn().queryRow(ctx, `SELECT MAX(version) FROM schema_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return int(v.Int64), nil
}
