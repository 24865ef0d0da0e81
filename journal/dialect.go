package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Dialect is what differs between the SQL engines the journal runs on. The
// queries are shared (? placeholders, ON CONFLICT, RETURNING, BIGINT Unix
// nanoseconds); a backend package (journal/postgres) supplies its Dialect and
// its schema history, and every method of DB then works on its engine.
type Dialect struct {
	// Name names the engine in errors ("sqlite", "postgres").
	Name string
	// Migrations is the engine's schema history (versions consecutive from 1).
	Migrations []Migration
	// Numbered rebinds ? placeholders to $1, $2... (PostgreSQL).
	Numbered bool
	// IsUnique reports a UNIQUE or PRIMARY KEY violation.
	IsUnique func(error) bool
	// Retryable reports an error after which a statement or transaction is
	// run again because it did nothing (a serialization failure, a deadlock,
	// a session the server ended); nil means never.
	Retryable func(error) bool
	// LostRace reports the retryable errors that are a normal part of
	// concurrency (a serialization failure) and retried without a warning;
	// other retries are logged.
	LostRace func(error) bool
	// TxOptions are the options of every transaction (nil: the engine's default).
	TxOptions *sql.TxOptions
	// MigrationLock, when set, is run first in every migration transaction
	// so that processes opening a fresh journal together migrate it once;
	// MigrationTxOptions are those transactions' options (an isolation whose
	// snapshot is taken after the lock, e.g. READ COMMITTED).
	MigrationLock      string
	MigrationTxOptions *sql.TxOptions
	// ShareLock is appended to the fence check's SELECT to lock the lease
	// row against a concurrent takeover until the fenced write commits
	// (" FOR SHARE"); "" where transactions are serial already (SQLite).
	ShareLock string
}

// Migration is one schema step. Versions are consecutive from 1; a
// migration, once released, is never edited: add a new one.
type Migration struct {
	Version int
	Name    string
	Stmts   []string
}

// rebind turns ? placeholders into $n for engines that number them. The
// journal's queries contain no ? inside string literals.
func rebind(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// querier is what *sql.DB, *sql.Conn and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// conn runs the journal's queries on a querier, rebinding placeholders.
// A conn over the pool (not a transaction) retries a statement that failed
// in a way the dialect says left nothing done (a session the server ended,
// a request never sent): the pool then hands out a fresh session, so the
// journal rides over a database restart. Transactions retry as a whole (tx).
type conn struct {
	q        querier
	numbered bool
	retry    func(error) bool
	db       *DB // for retry warnings
}

func (c conn) bind(q string) string {
	if c.numbered {
		return rebind(q)
	}
	return q
}

// do runs fn, again while it fails retryably (a few times, briefly backing off).
func (c conn) do(ctx context.Context, fn func() error) error {
	err := fn()
	for attempt := 1; err != nil && c.retry != nil && c.retry(err) && attempt < maxTxAttempts; attempt++ {
		c.db.warnRetry(err, attempt)
		if werr := backoff(ctx, attempt); werr != nil {
			return errors.Join(err, werr)
		}
		err = fn()
	}
	return err
}

func (c conn) exec(ctx context.Context, q string, args ...any) (res sql.Result, err error) {
	q = c.bind(q)
	err = c.do(ctx, func() error {
		res, err = c.q.ExecContext(ctx, q, args...)
		return err
	})
	return res, err
}

func (c conn) query(ctx context.Context, q string, args ...any) (rows *sql.Rows, err error) {
	q = c.bind(q)
	err = c.do(ctx, func() error {
		rows, err = c.q.QueryContext(ctx, q, args...)
		return err
	})
	return rows, err
}

// queryRow returns a row whose Scan runs the query (and its retries).
func (c conn) queryRow(ctx context.Context, q string, args ...any) row {
	return row{c: c, ctx: ctx, q: c.bind(q), args: args}
}

// row is a single-row query run when scanned.
type row struct {
	c    conn
	ctx  context.Context
	q    string
	args []any
}

func (r row) Scan(dest ...any) error {
	return r.c.do(r.ctx, func() error { return r.c.q.QueryRowContext(r.ctx, r.q, r.args...).Scan(dest...) })
}

// Option adjusts how a journal is opened.
type Option func(*options)

type options struct {
	now func() time.Time
	log *slog.Logger
}

// WithClock makes the journal read the time from now instead of time.Now
// (tests; every process sharing a journal must agree on the time within a
// small fraction of the shortest lease).
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithLogger makes the journal log its recoveries (a statement run again on
// a new session after the server ended one) to l instead of slog.Default.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// warnRetry logs a retry that is not a lost race: the operator sees the
// database's trouble and that the journal rode over it. err comes from the
// driver and the server and holds no DSN.
func (db *DB) warnRetry(err error, attempt int) {
	if db.d.LostRace != nil && db.d.LostRace(err) {
		return
	}
	db.log.Warn("journal: statement did not run; retrying on a new session", "engine", db.d.Name, "attempt", attempt, "err", err)
}

// New wraps an open database of dialect d as a journal and applies pending
// migrations: what a backend package's Open calls. The journal owns sdb
// (Close closes it). path is what Path reports ("" when not a file).
func New(ctx context.Context, sdb *sql.DB, d Dialect, path string, opts ...Option) (*DB, error) {
	if len(d.Migrations) == 0 || d.IsUnique == nil {
		return nil, fmt.Errorf("journal: dialect %q: %w: migrations and IsUnique are required", d.Name, ErrInvalid)
	}
	o := options{now: time.Now, log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	db := &DB{sql: sdb, path: path, now: o.now, d: d, log: o.log}
	if err := db.migrate(ctx); err != nil {
		return nil, err
	}
	return db, nil
}

// maxTxAttempts bounds the runs of a statement or transaction the dialect
// says may run again.
const maxTxAttempts = 20

// tx runs fn in a transaction, committing when fn returns nil, and retries
// it from the start when the dialect says the failure left nothing done (a
// lost race, a session the server ended): fn must reset what it accumulates. When ctx carries a Fence, the
// transaction first checks it (ErrFenced when the lease was lost).
func (db *DB) tx(ctx context.Context, fn func(conn) error) error {
	return db.txWith(ctx, db.d.TxOptions, fn)
}

func (db *DB) txWith(ctx context.Context, opts *sql.TxOptions, fn func(conn) error) error {
	var err error
	for attempt := 0; attempt < maxTxAttempts; attempt++ {
		if attempt > 0 {
			if werr := backoff(ctx, attempt); werr != nil {
				return errors.Join(err, werr)
			}
		}
		err = db.tryTx(ctx, opts, fn)
		if err == nil || db.d.Retryable == nil || !db.d.Retryable(err) {
			return err
		}
		db.warnRetry(err, attempt+1)
	}
	return fmt.Errorf("%w (after %d attempts)", err, maxTxAttempts)
}

func (db *DB) tryTx(ctx context.Context, opts *sql.TxOptions, fn func(conn) error) error {
	tx, err := db.sql.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	c := conn{q: tx, numbered: db.d.Numbered} // retried as a whole by tx
	if f, ok := FenceFrom(ctx); ok {
		if err := db.checkFence(ctx, c, f); err != nil {
			tx.Rollback()
			return err
		}
	}
	if err := fn(c); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// backoff waits a little before a transaction's next attempt.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(attempt*attempt) * time.Millisecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// write runs fn, one or more statements that change the journal: directly
// (each statement atomic on its own) or, when ctx carries a Fence, in a
// transaction that checks the fence first.
func (db *DB) write(ctx context.Context, fn func(conn) error) error {
	if _, ok := FenceFrom(ctx); ok {
		return db.tx(ctx, fn)
	}
	return fn(db.conn())
}

// conn returns the pool as a conn, for reads and unfenced single writes.
func (db *DB) conn() conn {
	return conn{q: db.sql, numbered: db.d.Numbered, retry: db.d.Retryable, db: db}
}

// execWrite runs one statement that changes the journal (see write).
func (db *DB) execWrite(ctx context.Context, q string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := db.write(ctx, func(c conn) error {
		var err error
		res, err = c.exec(ctx, q, args...)
		return err
	})
	return res, err
}
