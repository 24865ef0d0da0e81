// Package postgres is the journal on PostgreSQL (driver pgx, through
// database/sql): what daemons and gateways on several hosts share. It runs
// the journal's queries (package journal) with a dialect of its own: $n
// placeholders, its own schema history (migrations.go, versioned like the
// SQLite one), SERIALIZABLE transactions retried on a lost race where the
// SQLite backend relies on its single writer, and lease rows locked FOR
// SHARE by fenced writes so a takeover waits for them.
//
// The DSN is a secret (it may hold a password): it never appears in an
// error or a log line; errors name the engine only.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/mrbacd/mrbacd/journal"
)

// SQLSTATE codes the dialect branches on.
const (
	uniqueViolation      = "23505"
	serializationFailure = "40001"
	deadlockDetected     = "40P01"
	adminShutdown        = "57P01" // pg_terminate_backend, a fast shutdown
	crashShutdown        = "57P02"
	cannotConnectNow     = "57P03" // the server is starting up
)

// Dialect is PostgreSQL's journal dialect.
var Dialect = journal.Dialect{
	Name:       "postgres",
	Migrations: migrations,
	Numbered:   true,
	IsUnique:   func(err error) bool { return sqlState(err) == uniqueViolation },
	Retryable:  retryable,
	LostRace: func(err error) bool {
		c := sqlState(err)
		return c == serializationFailure || c == deadlockDetected
	},
	TxOptions: &sql.TxOptions{Isolation: sql.LevelSerializable},
	// One lock id for every mrbacd journal migration ("mrbacd" in ASCII).
	MigrationLock:      `SELECT pg_advisory_xact_lock(109114098097099100)`,
	MigrationTxOptions: &sql.TxOptions{Isolation: sql.LevelReadCommitted},
	ShareLock:          ` FOR SHARE`,
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// retryable: a transaction that failed this way was not committed and may
// run again from the start: a lost serialization race or deadlock, a
// backend terminated (its transaction rolled back), or a request the driver
// never sent (among them any attempted on a session the driver had already
// found closed, e.g. ended by the server while idle in the pool).
func retryable(err error) bool {
	switch sqlState(err) {
	case serializationFailure, deadlockDetected, adminShutdown, crashShutdown, cannotConnectNow:
		return true
	}
	return pgconn.SafeToRetry(err) || errors.Is(err, pgconn.ErrConnClosed)
}

// Open connects to the PostgreSQL database dsn names (a URL or key=value
// connection string) and applies pending migrations. Errors never contain
// the DSN or its password.
func Open(ctx context.Context, dsn string, opts ...journal.Option) (*journal.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// The parser's message quotes the DSN, redacted only best effort.
		return nil, errors.New("open postgres journal: the DSN is not a valid PostgreSQL URL or connection string")
	}
	pw := cfg.Password
	sdb := stdlib.OpenDB(*cfg)
	sdb.SetMaxOpenConns(8)
	sdb.SetMaxIdleConns(8)
	sdb.SetConnMaxIdleTime(time.Minute)
	if err := sdb.PingContext(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open postgres journal: %w", redact(err, pw))
	}
	db, err := journal.New(ctx, sdb, Dialect, "", opts...)
	if err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open postgres journal: %w", redact(err, pw))
	}
	return db, nil
}

// redact hides secret in err's message should the driver ever quote it,
// keeping err for errors.Is and errors.As.
func redact(err error, secret string) error {
	if secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redacted{err: err, secret: secret}
}

type redacted struct {
	err    error
	secret string
}

func (r *redacted) Error() string { return strings.ReplaceAll(r.err.Error(), r.secret, "xxxxx") }
func (r *redacted) Unwrap() error { return r.err }
