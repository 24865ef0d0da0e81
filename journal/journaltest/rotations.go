package journaltest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

func testRotations(t *testing.T, h *harness) {
	ctx := context.Background()
	db, clk := h.journal(t), h.clk

	steps := []struct {
		name    string
		do      func() error
		wantErr error
	}{
		{"begin r1", func() error {
			return db.BeginRotation(ctx, journal.Rotation{ID: "r1", KeyName: "dev", OldKeyID: "k-old", NewKeyName: "dev-20261127-r1", Trigger: "cron"})
		}, nil},
		{"second in-flight for same key", func() error {
			return db.BeginRotation(ctx, journal.Rotation{ID: "r2", KeyName: "dev"})
		}, journal.ErrRotationInFlight},
		{"duplicate id", func() error { return db.BeginRotation(ctx, journal.Rotation{ID: "r1", KeyName: "other"}) }, journal.ErrInvalid},
		{"missing key name", func() error { return db.BeginRotation(ctx, journal.Rotation{ID: "rx"}) }, journal.ErrInvalid},
		{"bad status", func() error { return db.BeginRotation(ctx, journal.Rotation{ID: "rx", KeyName: "x", Status: "weird"}) }, journal.ErrInvalid},
		{"other key in parallel", func() error { return db.BeginRotation(ctx, journal.Rotation{ID: "r3", KeyName: "ml"}) }, nil},
		{"update unknown", func() error {
			return db.UpdateRotation(ctx, journal.Rotation{ID: "nope", Status: journal.StatusInFlight})
		}, journal.ErrNotFound},
		{"update bad status", func() error { return db.UpdateRotation(ctx, journal.Rotation{ID: "r1", Status: ""}) }, journal.ErrInvalid},
		{"r1 create", func() error {
			clk.Add(time.Second)
			return db.UpdateRotation(ctx, journal.Rotation{ID: "r1", Step: "create", Status: journal.StatusInFlight, OldKeyID: "k-old",
				NewKeyID: "k-new", NewKeyName: "dev-20261127-r1", Attempts: 1})
		}, nil},
		{"r1 propagate", func() error {
			clk.Add(time.Second)
			return db.UpdateRotation(ctx, journal.Rotation{ID: "r1", Step: "propagate", Status: journal.StatusInFlight, OldKeyID: "k-old",
				NewKeyID: "k-new", NewKeyName: "dev-20261127-r1", StoreVersion: "7", PropagateUntil: clk.Now().Add(time.Minute)})
		}, nil},
		{"r1 done", func() error {
			clk.Add(time.Minute)
			return db.UpdateRotation(ctx, journal.Rotation{ID: "r1", Step: "revoke", Status: journal.StatusDone, OldKeyID: "k-old",
				NewKeyID: "k-new", NewKeyName: "dev-20261127-r1", StoreVersion: "7", PropagateUntil: T0.Add(2*time.Second + time.Minute)})
		}, nil},
		{"dev may rotate again", func() error {
			clk.Add(time.Hour)
			return db.BeginRotation(ctx, journal.Rotation{ID: "r4", KeyName: "dev", OldKeyID: "k-new"})
		}, nil},
		{"r4 fails", func() error {
			return db.UpdateRotation(ctx, journal.Rotation{ID: "r4", Step: "verify", Status: journal.StatusFailed, OldKeyID: "k-new", Error: "verify: 401"})
		}, nil},
	}
	for _, s := range steps {
		err := s.do()
		if s.wantErr == nil && err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
		}
	}

	r1, err := db.Rotation(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	want := journal.Rotation{ID: "r1", KeyName: "dev", Step: "revoke", Status: journal.StatusDone, OldKeyID: "k-old", NewKeyID: "k-new",
		NewKeyName: "dev-20261127-r1", StoreVersion: "7", PropagateUntil: T0.Add(2*time.Second + time.Minute), Trigger: "cron",
		StartedAt: T0, UpdatedAt: T0.Add(2*time.Second + time.Minute), FinishedAt: T0.Add(2*time.Second + time.Minute)}
	if r1 != want {
		t.Fatalf("r1 =\n%+v\nwant\n%+v", r1, want)
	}
	if _, err := db.Rotation(ctx, "missing"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("journal.Rotation(missing) = %v", err)
	}

	inflight, err := db.InFlightRotations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(inflight) != 1 || inflight[0].ID != "r3" {
		t.Fatalf("in flight = %+v, want r3 only", inflight)
	}
	last, ok, err := db.LastDoneRotation(ctx, "dev")
	if err != nil || !ok || last.ID != "r1" {
		t.Fatalf("LastDoneRotation(dev) = %v %v %v, want r1", last.ID, ok, err)
	}
	if _, ok, err := db.LastDoneRotation(ctx, "ml"); ok || err != nil {
		t.Fatalf("LastDoneRotation(ml) = %v %v, want none", ok, err)
	}
	hist, err := db.RotationsForKey(ctx, "dev", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].ID != "r4" || hist[1].ID != "r1" || hist[0].Error != "verify: 401" || hist[0].FinishedAt.IsZero() {
		t.Fatalf("history = %+v", hist)
	}
	if hist, _ := db.RotationsForKey(ctx, "dev", 1); len(hist) != 1 {
		t.Fatalf("limit 1 gave %d", len(hist))
	}
	recent, err := db.RecentRotations(ctx, T0.Add(time.Hour), 0)
	if err != nil || len(recent) != 1 || recent[0].ID != "r4" {
		t.Fatalf("recent = %+v, %v", recent, err)
	}
	// A failed rotation cannot be made in flight again while another is.
	if err := db.BeginRotation(ctx, journal.Rotation{ID: "r5", KeyName: "dev"}); err != nil {
		t.Fatal(err)
	}
	if err := db.UpdateRotation(ctx, journal.Rotation{ID: "r4", Status: journal.StatusInFlight}); !errors.Is(err, journal.ErrRotationInFlight) {
		t.Fatalf("reviving r4 beside r5: %v", err)
	}
}

func testBeginRotationRace(t *testing.T, h *harness) {
	ctx := context.Background()
	a, b := h.realTime(t), h.realTime(t)
	for round := 0; round < 10; round++ {
		key := "key-" + string(rune('a'+round))
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, losses := 0, 0
		for i := 0; i < 8; i++ {
			db := a
			if i%2 == 1 {
				db = b
			}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				err := db.BeginRotation(ctx, journal.Rotation{ID: key + "-" + string(rune('0'+i)), KeyName: key})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, journal.ErrRotationInFlight):
					losses++
				default:
					t.Errorf("begin: %v", err)
				}
			}(i)
		}
		wg.Wait()
		if wins != 1 || losses != 7 {
			t.Fatalf("round %d: %d wins, %d losses; want exactly one winner", round, wins, losses)
		}
	}
	inflight, err := b.InFlightRotations(ctx)
	if err != nil || len(inflight) != 10 {
		t.Fatalf("in flight: %d, %v; want 10", len(inflight), err)
	}
}
