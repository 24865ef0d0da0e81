// Package backend opens the journal a config's state section names: the
// SQLite file at state.path, or the PostgreSQL database whose DSN is read
// from state.postgres.dsn_env or dsn_file. The daemon and the gateway open
// their journal through Open, so either runs on either engine.
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/journal/postgres"
)

// Open opens (creating and migrating as needed) the journal s names. The
// PostgreSQL DSN is a secret: errors name where it was read from, never it.
func Open(ctx context.Context, s config.State, opts ...journal.Option) (*journal.DB, error) {
	switch {
	case s.Postgres != nil && s.Path != "":
		return nil, fmt.Errorf("open journal: %w: state.path and state.postgres are both set", journal.ErrInvalid)
	case s.Postgres != nil:
		dsn, err := config.ResolveSecret(s.Postgres.DSNEnv, s.Postgres.DSNFile)
		if err != nil {
			return nil, fmt.Errorf("open journal: state.postgres DSN: %w", err)
		}
		db, err := postgres.Open(ctx, dsn, opts...)
		if err != nil {
			return nil, fmt.Errorf("%w (DSN from %s)", err, Describe(s))
		}
		return db, nil
	case s.Path != "":
		return journal.Open(ctx, s.Path, opts...)
	}
	return nil, errors.New("open journal: no state.path or state.postgres")
}

// OpenConfig opens the journal cfg.State names, as a journal.Journal: the
// shape of the daemon's OpenJournal hook.
func OpenConfig(ctx context.Context, cfg *config.Config) (journal.Journal, error) {
	db, err := Open(ctx, cfg.State, journal.WithLogger(slog.Default()))
	if err != nil {
		return nil, err // a nil *journal.DB must not become a non-nil Journal
	}
	return db, nil
}

// Describe names the journal s configures for logs and status, without
// the DSN: "sqlite /var/lib/mrbacd/state.db", "postgres (dsn_env
// MRBACD_PG_DSN)".
func Describe(s config.State) string {
	switch {
	case s.Postgres != nil && s.Postgres.DSNEnv != "":
		return "postgres (dsn_env " + s.Postgres.DSNEnv + ")"
	case s.Postgres != nil:
		return "postgres (dsn_file " + s.Postgres.DSNFile + ")"
	}
	return "sqlite " + s.Path
}
