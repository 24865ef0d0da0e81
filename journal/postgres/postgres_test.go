package postgres_test

import (
	"testing"

	"github.com/mrbacd/mrbacd/journal/journaltest"
)

func TestContract(t *testing.T) { journaltest.Run(t, journaltest.Postgres) }
