package journaltest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

func testLeases(t *testing.T, h *harness) {
	ctx := context.Background()
	db, clk := h.journal(t), h.clk
	type step struct {
		name    string
		do      func() (bool, error)
		want    bool
		wantErr bool
	}
	acq := func(name, owner string, ttl time.Duration) func() (bool, error) {
		return func() (bool, error) { return db.AcquireLease(ctx, name, owner, ttl) }
	}
	renew := func(name, owner string, ttl time.Duration) func() (bool, error) {
		return func() (bool, error) { return db.RenewLease(ctx, name, owner, ttl) }
	}
	advance := func(d time.Duration) func() (bool, error) {
		return func() (bool, error) { clk.Add(d); return true, nil }
	}
	release := func(name, owner string) func() (bool, error) {
		return func() (bool, error) { return true, db.ReleaseLease(ctx, name, owner) }
	}
	steps := []step{
		{"A takes free lease", acq("rotate:dev", "A", time.Minute), true, false},
		{"B refused while A holds", acq("rotate:dev", "B", time.Minute), false, false},
		{"A re-acquires (extends)", acq("rotate:dev", "A", time.Minute), true, false},
		{"other name is independent", acq("rotate:ml", "B", time.Minute), true, false},
		{"A renews", renew("rotate:dev", "A", time.Minute), true, false},
		{"B cannot renew A's", renew("rotate:dev", "B", time.Minute), false, false},
		{"time passes beyond ttl", advance(61 * time.Second), true, false},
		{"A's renew fails after expiry", renew("rotate:dev", "A", time.Minute), false, false},
		{"B takes expired lease", acq("rotate:dev", "B", time.Minute), true, false},
		{"A refused now", acq("rotate:dev", "A", time.Minute), false, false},
		{"A's release is a no-op", release("rotate:dev", "A"), true, false},
		{"A still refused", acq("rotate:dev", "A", time.Minute), false, false},
		{"B releases", release("rotate:dev", "B"), true, false},
		{"A takes released", acq("rotate:dev", "A", time.Minute), true, false},
		{"zero ttl", acq("rotate:dev", "A", 0), false, true},
		{"empty owner", acq("rotate:dev", "", time.Minute), false, true},
	}
	for _, s := range steps {
		got, err := s.do()
		if (err != nil) != s.wantErr {
			t.Fatalf("%s: err = %v", s.name, err)
		}
		if err == nil && got != s.want {
			t.Fatalf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
	owner, exp, ok, err := db.LeaseHolder(ctx, "rotate:dev")
	if err != nil || !ok || owner != "A" || !exp.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("holder = %q %v %v %v", owner, exp, ok, err)
	}
}

func testLeaseRace(t *testing.T, h *harness) {
	ctx := context.Background()
	dbs := []journal.Journal{h.realTime(t), h.realTime(t)}
	for round := 0; round < 10; round++ {
		name := "lease-" + string(rune('a'+round))
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []string
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				owner := "owner-" + string(rune('0'+i))
				ok, err := dbs[i%2].AcquireLease(ctx, name, owner, time.Minute)
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				if ok {
					mu.Lock()
					winners = append(winners, owner)
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: winners %v, want exactly one", round, winners)
		}
		owner, _, ok, err := dbs[0].LeaseHolder(ctx, name)
		if err != nil || !ok || owner != winners[0] {
			t.Fatalf("holder %q, want %q (%v)", owner, winners[0], err)
		}
	}
}
