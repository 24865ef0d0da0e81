package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Errors callers branch on.
var (
	// ErrNotFound: no row with that id.
	ErrNotFound = errors.New("journal: not found")
	// ErrRotationInFlight: the key already has an in-flight rotation.
	ErrRotationInFlight = errors.New("journal: rotation already in flight for this key")
	// ErrInvalid: an argument the journal refuses (empty id, unknown status...).
	ErrInvalid = errors.New("journal: invalid argument")
)

// busyTimeout is how long a statement waits for another connection or
// process holding the write lock.
const busyTimeout = 15 * time.Second

// DB is an open journal. It is safe for concurrent use, and several DBs (in
// one process or several) may share one file.
type DB struct {
	sql  *sql.DB
	path string
	now  func() time.Time
	d    Dialect
	log  *slog.Logger
}

// sqlite is the embedded engine's dialect.
var sqliteDialect = Dialect{
	Name:       "sqlite",
	Migrations: migrations,
	IsUnique:   isSQLiteUnique,
}

// Open opens (creating if needed) the SQLite journal at path and applies
// pending migrations. The parent directory is created with mode 0700 and the
// file is restricted to 0600.
func Open(ctx context.Context, path string, opts ...Option) (*DB, error) {
	if path == "" {
		return nil, fmt.Errorf("open journal: %w: empty path", ErrInvalid)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open journal: %w", err)
		}
	}
	// Create the file ourselves so its mode is 0600 whatever the umask.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	f.Close()

	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busyTimeout.Milliseconds()))
	q.Set("_journal_mode", "WAL")
	q.Set("_foreign_keys", "1")
	q.Set("_synchronous", "FULL")
	q.Set("_txlock", "immediate")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	sdb.SetMaxOpenConns(4)
	sdb.SetMaxIdleConns(4)
	sdb.SetConnMaxIdleTime(time.Minute)
	var db *DB
	err = retryBusy(ctx, func() error {
		if err := sdb.PingContext(ctx); err != nil {
			return err
		}
		db, err = New(ctx, sdb, sqliteDialect, path, opts...)
		return err
	})
	if err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	return db, nil
}

// retryBusy runs open again while it fails with SQLITE_BUSY, up to
// busyTimeout. Processes opening a new journal together contend for the
// switch to WAL and for its recovery, where SQLite answers SQLITE_BUSY
// without calling the busy handler.
func retryBusy(ctx context.Context, open func() error) error {
	deadline := time.Now().Add(busyTimeout)
	err := open()
	for attempt := 1; isSQLiteBusy(err) && time.Now().Before(deadline); attempt++ {
		if werr := backoff(ctx, min(attempt, 30)); werr != nil {
			return errors.Join(err, werr)
		}
		err = open()
	}
	return err
}

// Close closes the journal.
func (db *DB) Close() error { return db.sql.Close() }

// Path returns the journal's file path ("" when it is not a file).
func (db *DB) Path() string { return db.path }

// Ping checks the journal answers (for status and health checks).
func (db *DB) Ping(ctx context.Context) error { return db.sql.PingContext(ctx) }

// ns converts a time to the stored form: Unix nanoseconds, 0 for the zero time.
func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// tm converts a stored time back; 0 gives the zero time. Times come back in UTC.
func tm(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v).UTC()
}

// Vacuum checkpoints the WAL into the main file and rebuilds it to reclaim
// space freed by Prune. SQLite-specific; run it rarely (it takes the write lock).
func (db *DB) Vacuum(ctx context.Context) error {
	if db.d.Name != sqliteDialect.Name {
		return fmt.Errorf("vacuum: %w: only the SQLite journal is vacuumed by mrbacd", ErrInvalid)
	}
	if _, err := db.conn().exec(ctx, `VACUUM`); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	if _, err := db.conn().exec(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fmt.Errorf("wal checkpoint: %w", err)
	}
	return nil
}

// PruneOptions says what Prune may delete: rows finished, sent or resolved
// before Before.
type PruneOptions struct {
	Before time.Time
}

// PruneResult counts deleted rows.
type PruneResult struct {
	Runs, Messages, Rotations, Findings, Marks, Usage, Leases, Requests int64
	// Grants are budget grants expired before the cutoff (their windows
	// long over, left by gateway instances that crashed).
	Grants int64
}

// Prune deletes history older than opts.Before: finished runs, sent and dead
// outbox messages, finished rotations (the last done rotation of each key is
// kept), resolved findings whose resolution was reported, once-marks, usage
// counters not updated since, expired leases and budget grants, settled run requests. Running rotations, running
// runs, pending messages and open findings are never pruned. Keep Before at
// least 45 days back so monthly alert dedupe (outbox dedupe, MarkOnce) holds.
func (db *DB) Prune(ctx context.Context, opts PruneOptions) (PruneResult, error) {
	var res PruneResult
	if opts.Before.IsZero() {
		return res, fmt.Errorf("prune: %w: zero cutoff", ErrInvalid)
	}
	cut := ns(opts.Before)
	steps := []struct {
		n *int64
		q string
	}{
		{&res.Runs, `DELETE FROM runs WHERE status <> 'running' AND finished_at < ?`},
		{&res.Messages, `DELETE FROM outbox WHERE status IN ('sent','dead') AND created_at < ?`},
		{&res.Rotations, `DELETE FROM rotations WHERE status <> 'in_flight' AND finished_at < ?
			AND id NOT IN (SELECT r.id FROM rotations r WHERE r.status = 'done'
				AND r.finished_at = (SELECT MAX(r2.finished_at) FROM rotations r2 WHERE r2.key_name = r.key_name AND r2.status = 'done'))`},
		{&res.Findings, `DELETE FROM findings WHERE resolved_at <> 0 AND resolution_reported <> 0 AND resolved_at < ?`},
		{&res.Marks, `DELETE FROM once_marks WHERE created_at < ?`},
		{&res.Usage, `DELETE FROM usage_counters WHERE updated_at < ?`},
		{&res.Leases, `DELETE FROM leases WHERE expires_at < ?`},
		{&res.Requests, `DELETE FROM run_requests WHERE status IN ('started','refused') AND requested_at < ?`},
		{&res.Grants, `DELETE FROM budget_grants WHERE expires_at < ?`},
	}
	err := db.tx(ctx, func(tx conn) error {
		res = PruneResult{}
		for _, s := range steps {
			r, err := tx.exec(ctx, s.q, cut)
			if err != nil {
				return err
			}
			*s.n, _ = r.RowsAffected()
		}
		return nil
	})
	if err != nil {
		return PruneResult{}, fmt.Errorf("prune: %w", err)
	}
	return res, nil
}
