package postgres_test

import (
	"context"
	"testing"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/journal/journaltest"
	"github.com/mrbacd/mrbacd/journal/postgres"
)

// Backend is the PostgreSQL backend: one database per case on the machine's server.
var Backend = journaltest.Backend{
	Name: "postgres",
	New: func(t *testing.T) func(t *testing.T, opts ...journal.Option) (journal.Journal, error) {
		pg := testenv.Postgres(t)
		return func(t *testing.T, opts ...journal.Option) (journal.Journal, error) {
			db, err := postgres.Open(context.Background(), pg.DSN, opts...)
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { db.Close() })
			return db, nil
		}
	},
}

func TestContract(t *testing.T) { journaltest.Run(t, Backend) }
