package journaltest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// Benchmark measures the journal's common operations on b's engine, each on
// a new store: run it for every backend in one `go test -bench` to compare.
func Benchmark(b *testing.B, be Backend) {
	ops := []struct {
		name string
		fn   func(b *testing.B, j journal.Journal)
	}{
		{"AddUsage", benchAddUsage},
		{"UsageRead", benchUsageRead},
		{"OutboxCycle", benchOutboxCycle},
		{"RotationJournal", benchRotationJournal},
		{"FencedUpdateRotation", benchFencedUpdate},
		{"RenewFenced", benchRenewFenced},
		{"AddUsageParallel", benchAddUsageParallel},
		{"ClaimParallel", benchClaimParallel},
	}
	for _, op := range ops {
		b.Run(op.name, func(b *testing.B) {
			j, err := be.New(b)(b)
			if err != nil {
				b.Fatal(err)
			}
			op.fn(b, j)
		})
	}
}

// One gateway counter update (a committed, durable write).
func benchAddUsage(b *testing.B, j journal.Journal) {
	ctx := context.Background()
	for b.Loop() {
		if err := j.AddUsage(ctx, "client:reporting", "day:2026-11-27", 100, 0.01); err != nil {
			b.Fatal(err)
		}
	}
}

// Reading a counter (the gateway's read path when not cached).
func benchUsageRead(b *testing.B, j journal.Journal) {
	ctx := context.Background()
	if err := j.AddUsage(ctx, "client:reporting", "day:2026-11-27", 100, 0.01); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := j.Usage(ctx, "client:reporting", "day:2026-11-27"); err != nil {
			b.Fatal(err)
		}
	}
}

// One notification's journal cost: Enqueue, Claim, MarkSent.
func benchOutboxCycle(b *testing.B, j journal.Journal) {
	ctx := context.Background()
	payload := []byte(`{"kind":"audit_digest","title":"x"}`)
	for i := 0; b.Loop(); i++ {
		if _, _, err := j.Enqueue(ctx, journal.Message{Dedupe: fmt.Sprint("d", i), Kind: "k", Payload: payload}); err != nil {
			b.Fatal(err)
		}
		ms, err := j.Claim(ctx, time.Now(), time.Minute, 1)
		if err != nil || len(ms) != 1 {
			b.Fatal(err)
		}
		if err := j.MarkSent(ctx, ms[0].ID, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// A rotation's journal cost: begin, six step updates, done.
func benchRotationJournal(b *testing.B, j journal.Journal) {
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		if err := rotation(ctx, j, i); err != nil {
			b.Fatal(err)
		}
	}
}

func rotation(ctx context.Context, j journal.Journal, i int) error {
	r := journal.Rotation{ID: fmt.Sprint("r", i), KeyName: fmt.Sprint("k", i%50), Status: journal.StatusInFlight}
	if err := j.BeginRotation(ctx, r); err != nil {
		return err
	}
	for _, s := range []journal.Step{journal.StepCreate, journal.StepVerify, journal.StepPublish, journal.StepPropagate, journal.StepReverify, journal.StepRevoke} {
		r.Step = s
		if err := j.UpdateRotation(ctx, r); err != nil {
			return err
		}
	}
	r.Status = journal.StatusDone
	return j.UpdateRotation(ctx, r)
}

// One rotation step written by a leader: the fence check and the write in
// one transaction.
func benchFencedUpdate(b *testing.B, j journal.Journal) {
	ctx := context.Background()
	tok, ok, err := j.AcquireFenced(ctx, "leader", "bench", time.Hour)
	if err != nil || !ok {
		b.Fatal(ok, err)
	}
	fctx := journal.WithFence(ctx, journal.Fence{Name: "leader", Owner: "bench", Token: tok})
	r := journal.Rotation{ID: "r", KeyName: "k", Status: journal.StatusInFlight}
	if err := j.BeginRotation(fctx, r); err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		r.Attempts = i
		if err := j.UpdateRotation(fctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

// A leader's renewal.
func benchRenewFenced(b *testing.B, j journal.Journal) {
	ctx := context.Background()
	tok, ok, err := j.AcquireFenced(ctx, "leader", "bench", time.Hour)
	if err != nil || !ok {
		b.Fatal(ok, err)
	}
	for b.Loop() {
		if ok, err := j.RenewFenced(ctx, "leader", "bench", tok, time.Hour); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// Gateway counter updates from concurrent requests, one counter.
func benchAddUsageParallel(b *testing.B, j journal.Journal) {
	ctx := context.Background()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := j.AddUsage(ctx, "client:reporting", "day:2026-11-27", 100, 0.01); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// Outbox workers claiming and marking concurrently from one queue: each
// iteration enqueues one message and some worker delivers one.
func benchClaimParallel(b *testing.B, j journal.Journal) {
	ctx := context.Background()
	var mu sync.Mutex
	n := 0
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			n++
			id := n
			mu.Unlock()
			if _, _, err := j.Enqueue(ctx, journal.Message{Dedupe: fmt.Sprint("p", id), Kind: "k"}); err != nil {
				b.Error(err)
				return
			}
			ms, err := j.Claim(ctx, time.Now(), time.Minute, 1)
			if err != nil {
				b.Error(err)
				return
			}
			for _, m := range ms {
				if err := j.MarkSent(ctx, m.ID, time.Now()); err != nil {
					b.Error(err)
					return
				}
			}
		}
	})
}
