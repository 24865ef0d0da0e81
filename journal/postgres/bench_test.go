package postgres_test

import (
	"testing"

	"github.com/mrbacd/mrbacd/journal/journaltest"
)

// BenchmarkJournal runs the journal's operations on SQLite and PostgreSQL
// in one run: go test -run '^$' -bench Journal ./journal/postgres/
func BenchmarkJournal(b *testing.B) {
	for _, be := range journaltest.Backends {
		b.Run(be.Name, func(b *testing.B) { journaltest.Benchmark(b, be) })
	}
}
