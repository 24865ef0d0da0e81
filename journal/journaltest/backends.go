package journaltest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/journal/postgres"
)

// SQLite is the embedded backend: one file per store, in t's temporary directory.
var SQLite = Backend{
	Name: "sqlite",
	New: func(t testing.TB) func(t testing.TB, opts ...journal.Option) (journal.Journal, error) {
		path := filepath.Join(t.TempDir(), "state.db")
		return func(t testing.TB, opts ...journal.Option) (journal.Journal, error) {
			return closing(t)(journal.Open(context.Background(), path, opts...))
		}
	},
}

// Postgres is the PostgreSQL backend: one database per store on the
// machine's server (testenv.Postgres), dropped when t ends.
var Postgres = Backend{
	Name: "postgres",
	New: func(t testing.TB) func(t testing.TB, opts ...journal.Option) (journal.Journal, error) {
		pg := testenv.Postgres(t)
		return func(t testing.TB, opts ...journal.Option) (journal.Journal, error) {
			return closing(t)(postgres.Open(context.Background(), pg.DSN, opts...))
		}
	},
}

// Backends lists every engine, for tests run against each.
var Backends = []Backend{SQLite, Postgres}

// closing closes an opened journal when t ends.
func closing(t testing.TB) func(db *journal.DB, err error) (journal.Journal, error) {
	return func(db *journal.DB, err error) (journal.Journal, error) {
		if err != nil {
			return nil, err // a nil *journal.DB must not become a non-nil Journal
		}
		t.Cleanup(func() { db.Close() })
		return db, nil
	}
}
