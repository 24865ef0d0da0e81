package journaltest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// A fenced lease's tenures: one holder at a time, a token that grows with
// each new tenure and stays with an extension.
func testFenced(t *testing.T, h *harness) {
	ctx := context.Background()
	db, clk := h.journal(t), h.clk
	const name = "leader"
	type want struct {
		ok    bool
		token int64
	}
	steps := []struct {
		name string
		do   func() (int64, bool, error)
		want want
	}{
		{"A takes the free lease: token 1", func() (int64, bool, error) { return db.AcquireFenced(ctx, name, "A", time.Minute) }, want{true, 1}},
		{"B refused while A holds", func() (int64, bool, error) { return db.AcquireFenced(ctx, name, "B", time.Minute) }, want{false, 0}},
		{"A re-acquires: same tenure", func() (int64, bool, error) { return db.AcquireFenced(ctx, name, "A", time.Minute) }, want{true, 1}},
		{"A renews", func() (int64, bool, error) {
			ok, err := db.RenewFenced(ctx, name, "A", 1, time.Minute)
			return 1, ok, err
		}, want{true, 1}},
		{"A renewing with a wrong token fails", func() (int64, bool, error) {
			ok, err := db.RenewFenced(ctx, name, "A", 7, time.Minute)
			return 0, ok, err
		}, want{false, 0}},
		{"B cannot renew A's", func() (int64, bool, error) {
			ok, err := db.RenewFenced(ctx, name, "B", 1, time.Minute)
			return 0, ok, err
		}, want{false, 0}},
		{"ttl passes", func() (int64, bool, error) { clk.Add(61 * time.Second); return 0, false, nil }, want{false, 0}},
		{"A's renewal after expiry fails", func() (int64, bool, error) {
			ok, err := db.RenewFenced(ctx, name, "A", 1, time.Minute)
			return 0, ok, err
		}, want{false, 0}},
		{"B takes over: token 2", func() (int64, bool, error) { return db.AcquireFenced(ctx, name, "B", time.Minute) }, want{true, 2}},
		{"A refused", func() (int64, bool, error) { return db.AcquireFenced(ctx, name, "A", time.Minute) }, want{false, 0}},
		{"A's release of its old tenure is a no-op", func() (int64, bool, error) { return 0, false, db.ReleaseFenced(ctx, name, "A", 1) }, want{false, 0}},
		{"B releases", func() (int64, bool, error) { return 0, false, db.ReleaseFenced(ctx, name, "B", 2) }, want{false, 0}},
		{"B again after its release: token 3", func() (int64, bool, error) { return db.AcquireFenced(ctx, name, "B", time.Minute) }, want{true, 3}},
		{"B's lease expires unrenewed", func() (int64, bool, error) { clk.Add(2 * time.Minute); return 0, false, nil }, want{false, 0}},
		{"B again after expiry: a new tenure, token 4", func() (int64, bool, error) { return db.AcquireFenced(ctx, name, "B", time.Minute) }, want{true, 4}},
		{"A takes another name: token 1", func() (int64, bool, error) { return db.AcquireFenced(ctx, "other", "A", time.Minute) }, want{true, 1}},
	}
	for _, s := range steps {
		tok, ok, err := s.do()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if ok != s.want.ok || (ok && tok != s.want.token) {
			t.Fatalf("%s: token %d ok %v; want token %d ok %v", s.name, tok, ok, s.want.token, s.want.ok)
		}
	}
	info, ok, err := db.FencedHolder(ctx, name)
	if err != nil || !ok || info.Owner != "B" || info.Token != 4 || !info.Expires.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("holder = %+v %v %v", info, ok, err)
	}
	if err := db.ReleaseFenced(ctx, name, "B", 4); err != nil {
		t.Fatal(err)
	}
	if info, ok, err := db.FencedHolder(ctx, name); err != nil || ok || info.Owner != "B" || info.Token != 4 {
		t.Fatalf("holder after release = %+v %v %v; want not held, last tenure B/4", info, ok, err)
	}
	if _, ok, err := db.FencedHolder(ctx, "never"); ok || err != nil {
		t.Fatalf("holder of a never-held lease = %v %v", ok, err)
	}
	for _, bad := range []struct {
		name, owner string
		ttl         time.Duration
	}{{"", "A", time.Minute}, {name, "", time.Minute}, {name, "A", 0}} {
		if _, _, err := db.AcquireFenced(ctx, bad.name, bad.owner, bad.ttl); !errors.Is(err, journal.ErrInvalid) {
			t.Errorf("AcquireFenced(%q, %q, %v) = %v, want ErrInvalid", bad.name, bad.owner, bad.ttl, err)
		}
	}
}

// Contenders on two handles racing for an expired lease: one winner per
// round, and its token is one more than the previous round's.
func testFencedRace(t *testing.T, h *harness) {
	ctx := context.Background()
	dbs := []journal.Journal{h.journal(t), h.journal(t)}
	var last int64
	for round := 0; round < 8; round++ {
		h.clk.Add(2 * time.Minute) // every earlier tenure has expired
		var wg sync.WaitGroup
		var mu sync.Mutex
		var tokens []int64
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				tok, ok, err := dbs[i%2].AcquireFenced(ctx, "leader", fmt.Sprintf("r%d-c%d", round, i), time.Minute)
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				if ok {
					mu.Lock()
					tokens = append(tokens, tok)
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
		if len(tokens) != 1 || tokens[0] != last+1 {
			t.Fatalf("round %d: winners' tokens %v, want exactly one, %d", round, tokens, last+1)
		}
		last = tokens[0]
	}
}

// Writes under WithFence succeed while the tenure is current and are refused,
// writing nothing, once it was taken over or expired.
func testFencedWrites(t *testing.T, h *harness) {
	ctx := context.Background()
	db, clk := h.journal(t), h.clk
	tokA, ok, err := db.AcquireFenced(ctx, "leader", "A", time.Minute)
	if err != nil || !ok {
		t.Fatalf("A acquire: %v %v", ok, err)
	}
	fa := journal.WithFence(ctx, journal.Fence{Name: "leader", Owner: "A", Token: tokA})
	// Every kind of write, by a leader's job, under fence ctx; n makes ids unique.
	writes := []struct {
		name  string
		write func(ctx context.Context, n int) error
		// written reports (with an unfenced ctx) whether write n landed.
		written func(n int) bool
	}{
		{"begin rotation", func(c context.Context, n int) error {
			return db.BeginRotation(c, journal.Rotation{ID: fmt.Sprint("r", n), KeyName: fmt.Sprint("k", n)})
		}, func(n int) bool { _, err := db.Rotation(ctx, fmt.Sprint("r", n)); return err == nil }},
		{"start run", func(c context.Context, n int) error {
			_, err := db.StartRun(c, fmt.Sprint("job", n), "cron", "")
			return err
		},
			func(n int) bool { _, ok, _ := db.LastRun(ctx, fmt.Sprint("job", n)); return ok }},
		{"set last fire", func(c context.Context, n int) error { return db.SetLastFire(c, fmt.Sprint("job", n), T0) },
			func(n int) bool { _, ok, _ := db.LastFire(ctx, fmt.Sprint("job", n)); return ok }},
		{"mark once", func(c context.Context, n int) error { _, err := db.MarkOnce(c, fmt.Sprint("m", n)); return err },
			func(n int) bool { ok, _ := db.Marked(ctx, fmt.Sprint("m", n)); return ok }},
		{"enqueue", func(c context.Context, n int) error {
			_, _, err := db.Enqueue(c, journal.Message{Dedupe: fmt.Sprint("d", n), Kind: "k"})
			return err
		}, func(n int) bool {
			ms, _ := db.Messages(ctx, "", 1000)
			for _, m := range ms {
				if m.Dedupe == fmt.Sprint("d", n) {
					return true
				}
			}
			return false
		}},
		{"sync findings", func(c context.Context, n int) error {
			_, err := db.SyncFindings(c, fmt.Sprint("s", n), []journal.Finding{{ID: "f", Kind: "k"}}, clk.Now())
			return err
		}, func(n int) bool { fs, _ := db.OpenFindings(ctx, fmt.Sprint("s", n)); return len(fs) == 1 }},
		{"add usage", func(c context.Context, n int) error { return db.AddUsage(c, fmt.Sprint("u", n), "day:1", 1, 0) },
			func(n int) bool { tok, _, _ := db.Usage(ctx, fmt.Sprint("u", n), "day:1"); return tok == 1 }},
	}
	phases := []struct {
		name    string
		before  func()
		wantErr bool
	}{
		{"A current", func() {}, false},
		{"A renewed later", func() {
			clk.Add(50 * time.Second)
			if ok, err := db.RenewFenced(ctx, "leader", "A", tokA, time.Minute); !ok || err != nil {
				t.Fatalf("renew: %v %v", ok, err)
			}
		}, false},
		{"A expired, nobody took over", func() { clk.Add(61 * time.Second) }, true},
		{"B took over", func() {
			if _, ok, err := db.AcquireFenced(ctx, "leader", "B", time.Minute); !ok || err != nil {
				t.Fatalf("B acquire: %v %v", ok, err)
			}
		}, true},
	}
	n := 0
	for _, p := range phases {
		p.before()
		for _, w := range writes {
			n++
			err := w.write(fa, n)
			if p.wantErr != errors.Is(err, journal.ErrFenced) || (!p.wantErr && err != nil) {
				t.Fatalf("%s: %s: err = %v, want fenced %v", p.name, w.name, err, p.wantErr)
			}
			if got := w.written(n); got == p.wantErr {
				t.Fatalf("%s: %s: written = %v", p.name, w.name, got)
			}
		}
	}
	// A fence naming a lease never held refuses too.
	never := journal.WithFence(ctx, journal.Fence{Name: "nobody", Owner: "A", Token: 1})
	if _, err := db.StartRun(never, "x", "cron", ""); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("write fenced by a never-held lease: %v", err)
	}
}
