package journaltest

import (
	"context"
	"sync"
	"testing"

	"github.com/mrbacd/mrbacd/journal"
)

// Reopening applies no migration twice: every handle reports the same schema
// version, the latest (fenced leases are migration 3).
func testMigrations(t *testing.T, h *harness) {
	ctx := context.Background()
	var first int
	for i := 0; i < 3; i++ {
		j := h.journal(t)
		v, err := j.SchemaVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = v
		}
		if v < 3 || v != first {
			t.Fatalf("open #%d: schema version %d (first open: %d)", i, v, first)
		}
		if err := j.Ping(ctx); err != nil {
			t.Fatalf("ping: %v", err)
		}
	}
}

// Four handles opening a fresh store at once (as processes starting
// together) all succeed and migrate it once.
func testConcurrentOpen(t *testing.T, h *harness) {
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.open(t)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent open: %v", err)
		}
	}
	j := h.journal(t)
	v, err := j.SchemaVersion(ctx)
	if err != nil || v < 3 {
		t.Fatalf("schema version %d, %v after concurrent opens", v, err)
	}
}

var _ journal.Journal = (*journal.DB)(nil)
