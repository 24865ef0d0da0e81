package journal

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func benchDB(b *testing.B) *DB {
	b.Helper()
	db, err := Open(context.Background(), filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// One gateway counter update (a committed, fsynced transaction).
func BenchmarkAddUsage(b *testing.B) {
	db := benchDB(b)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		if err := db.AddUsage(ctx, "client:reporting", "day:2026-11-27", 100, 0.01); err != nil {
			b.Fatal(err)
		}
	}
}

// One notification's journal cost: Enqueue, Claim, MarkSent.
func BenchmarkOutboxCycle(b *testing.B) {
	db := benchDB(b)
	ctx := context.Background()
	payload := []byte(`{"kind":"audit_digest","title":"x"}`)
	for i := 0; b.Loop(); i++ {
		if _, _, err := db.Enqueue(ctx, Message{Dedupe: fmt.Sprint("d", i), Kind: "k", Payload: payload}); err != nil {
			b.Fatal(err)
		}
		ms, err := db.Claim(ctx, time.Now(), time.Minute, 1)
		if err != nil || len(ms) != 1 {
			b.Fatal(err)
		}
		if err := db.MarkSent(ctx, ms[0].ID, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// A rotation's journal cost: begin, six step updates, done.
func BenchmarkRotationJournal(b *testing.B) {
	db := benchDB(b)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		r := Rotation{ID: fmt.Sprint("r", i), KeyName: fmt.Sprint("k", i%50), Status: StatusInFlight}
		if err := db.BeginRotation(ctx, r); err != nil {
			b.Fatal(err)
		}
		for _, s := range []Step{StepCreate, StepVerify, StepPublish, StepPropagate, StepReverify, StepRevoke} {
			r.Step = s
			if err := db.UpdateRotation(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
		r.Status = StatusDone
		if err := db.UpdateRotation(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

// Reading a counter (the gateway's read path when not cached).
func BenchmarkUsageRead(b *testing.B) {
	db := benchDB(b)
	ctx := context.Background()
	db.AddUsage(ctx, "client:reporting", "day:2026-11-27", 100, 0.01)
	for b.Loop() {
		if _, _, err := db.Usage(ctx, "client:reporting", "day:2026-11-27"); err != nil {
			b.Fatal(err)
		}
	}
}
