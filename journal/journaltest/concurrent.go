package journaltest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// Many goroutines using every part of the API at once (run with -race).
func testConcurrentUse(t *testing.T, h *harness) {
	ctx := context.Background()
	db, db2 := h.realTime(t), h.realTime(t)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		h := db
		if w%2 == 1 {
			h = db2
		}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 15; i++ {
				id, err := h.StartRun(ctx, "job", "cron", "")
				if err != nil {
					t.Error(err)
					return
				}
				key := fmt.Sprintf("k%d", i%3)
				rid := fmt.Sprintf("r-%d-%d", w, i)
				if err := h.BeginRotation(ctx, journal.Rotation{ID: rid, KeyName: key}); err == nil {
					h.UpdateRotation(ctx, journal.Rotation{ID: rid, Status: journal.StatusDone, Step: "done"})
				}
				if err := h.AddUsage(ctx, "s", "day:1", 1, 0.5); err != nil {
					t.Error(err)
				}
				if _, _, err := h.Enqueue(ctx, journal.Message{Dedupe: fmt.Sprintf("d%d", i), Kind: "k"}); err != nil {
					t.Error(err)
				}
				if _, err := h.Claim(ctx, time.Now(), time.Minute, 2); err != nil {
					t.Error(err)
				}
				if _, err := h.SyncFindings(ctx, fmt.Sprintf("scope%d", w), []journal.Finding{{ID: "f", Kind: "k"}}, time.Now()); err != nil {
					t.Error(err)
				}
				if _, err := h.Runs(ctx, journal.RunFilter{Job: "job"}); err != nil {
					t.Error(err)
				}
				if err := h.FinishRun(ctx, id, journal.RunOK, "", ""); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	wg.Wait()
	tok, usd, err := db.Usage(ctx, "s", "day:1")
	if err != nil || tok != 8*15 || usd != 8*15*0.5 {
		t.Fatalf("usage = %d %v %v, want %d", tok, usd, err, 8*15)
	}
	if fl, _ := db.InFlightRotations(ctx); len(fl) != 0 {
		t.Fatalf("in flight left: %+v", fl)
	}
	runs, _ := db.Runs(ctx, journal.RunFilter{Job: "job", Limit: 1000})
	if len(runs) != 8*15 {
		t.Fatalf("runs = %d", len(runs))
	}
}
