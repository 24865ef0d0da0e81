package state

import (
	"context"
	"database/sql"
	"fmt"
)

// migration is one schema step. Versions are consecutive from 1; a migration,
// once released, is never edited: add a new one.
type migration struct {
	version int
	name    string
	stmts   []string
}

// migrations is the schema history, applied in order by Open.
var migrations = []migration{
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
	{3, "operator actions and finding suppressions", actionsMigration},
}

// migrate applies every migration not yet recorded in schema_version, each in
// its own transaction. Re-checking the version inside the (IMMEDIATE)
// transaction makes concurrent opens by two processes safe.
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.sql.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version     INTEGER PRIMARY KEY,
		name        TEXT NOT NULL,
		applied_at  BIGINT NOT NULL
	)`); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	for _, m := range migrations {
		if err := db.tx(ctx, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_version WHERE version = ?`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			for _, s := range m.stmts {
				if _, err := tx.ExecContext(ctx, s); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, ns(db.now()))
			return err
		}); err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
	}
	return nil
}

// SchemaVersion returns the highest applied migration.
func (db *DB) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	if err := db.sql.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return int(v.Int64), nil
}
