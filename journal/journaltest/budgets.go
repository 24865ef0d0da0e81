package journaltest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// testBudgetLeases walks one budget through grants, spending, returns and
// an expired grant charged in full.
func testBudgetLeases(t *testing.T, h *harness) {
	ctx := context.Background()
	db, clk := h.journal(t), h.clk
	const sub, win = "gateway-client:a", "day:2026-11-27"
	limit := journal.Amounts{Tokens: 1000, USD: 1}
	held := map[string]journal.Amounts{}
	call := func(owner string, spent, ret, minA, want journal.Amounts) journal.LeaseResult {
		t.Helper()
		r, err := db.LeaseBudget(ctx, journal.LeaseRequest{Owner: owner, Subject: sub, Window: win, Limit: limit,
			Held: held[owner], Spent: spent, Return: ret, Min: minA, Want: want, TTL: time.Minute})
		if err != nil {
			t.Fatalf("%s: lease: %v", owner, err)
		}
		held[owner] = r.Held
		return r
	}
	tok := func(n int64, usd float64) journal.Amounts { return journal.Amounts{Tokens: n, USD: usd} }
	type step struct {
		name        string
		owner       string
		spent, ret  journal.Amounts
		min, want   journal.Amounts
		wantGranted journal.Amounts
		wantHeld    journal.Amounts
		wantUsed    journal.Amounts
		wantLost    bool
		advance     time.Duration // before the call
	}
	steps := []step{
		{name: "A takes 400", owner: "A", min: tok(100, 0.1), want: tok(400, 0.4), wantGranted: tok(400, 0.4), wantHeld: tok(400, 0.4)},
		{name: "B takes 500", owner: "B", min: tok(100, 0.1), want: tok(500, 0.5), wantGranted: tok(500, 0.5), wantHeld: tok(500, 0.5)},
		{name: "C gets the 100 left of 300 asked", owner: "C", min: tok(50, 0.05), want: tok(300, 0.3), wantGranted: tok(100, 0.1), wantHeld: tok(100, 0.1)},
		{name: "C cannot get its minimum", owner: "C", min: tok(1, 0.01), want: tok(10, 0.1), wantHeld: tok(100, 0.1)},
		{name: "A spends 300 and returns 100", owner: "A", spent: tok(300, 0.3), ret: tok(100, 0.1), wantHeld: journal.Amounts{USD: 0}, wantUsed: tok(300, 0.3)},
		{name: "C gets what A returned", owner: "C", min: tok(100, 0.05), want: tok(200, 0.2), wantGranted: tok(100, 0.1), wantHeld: tok(200, 0.2), wantUsed: tok(300, 0.3)},
		{name: "C renews", owner: "C", advance: 30 * time.Second, wantHeld: tok(200, 0.2), wantUsed: tok(300, 0.3)},
		{name: "B's grant expires: charged in full", owner: "C", advance: 31 * time.Second, min: tok(1, 0.001), want: tok(1, 0.001), wantHeld: tok(200, 0.2), wantUsed: tok(800, 0.8)},
		{name: "B comes back: lost, spend not added twice", owner: "B", spent: tok(200, 0.2), min: tok(1, 0.001), want: tok(1, 0.001), wantLost: true, wantUsed: tok(800, 0.8)},
	}
	for _, s := range steps {
		clk.Add(s.advance)
		r := call(s.owner, s.spent, s.ret, s.min, s.want)
		if !closeAmounts(r.Granted, s.wantGranted) || !closeAmounts(r.Held, s.wantHeld) || !closeAmounts(r.Used, s.wantUsed) || r.Lost != s.wantLost {
			t.Fatalf("%s: granted %+v held %+v used %+v lost %v; want %+v %+v %+v %v",
				s.name, r.Granted, r.Held, r.Used, r.Lost, s.wantGranted, s.wantHeld, s.wantUsed, s.wantLost)
		}
	}
	gs, err := db.BudgetGrants(ctx, sub, win)
	if err != nil || len(gs) != 1 || gs[0].Owner != "C" {
		t.Fatalf("grants %+v %v, want C's only (A returned all, B's expired)", gs, err)
	}
	// C returns everything: its grant is deleted.
	if r := call("C", tok(50, 0.05), tok(150, 0.15), journal.Amounts{}, journal.Amounts{}); !r.Held.IsZero() || r.Used.Tokens != 850 {
		t.Fatalf("C's return: %+v", r)
	}
	if gs, _ := db.BudgetGrants(ctx, sub, win); len(gs) != 0 {
		t.Fatalf("grants after every return: %+v", gs)
	}
	// rpm: requests spent at admission.
	rl := journal.Amounts{Requests: 3}
	r, err := db.LeaseBudget(ctx, journal.LeaseRequest{Owner: "A", Subject: sub, Window: "minute:2026-11-27T03:00", Limit: rl,
		Min: journal.Amounts{Requests: 1}, Want: journal.Amounts{Requests: 5}, TTL: time.Minute})
	if err != nil || r.Granted.Requests != 3 {
		t.Fatalf("rpm grant %+v %v", r, err)
	}
	if used, err := db.BudgetUsed(ctx, sub, win); err != nil || used.Tokens != 850 {
		t.Fatalf("BudgetUsed = %+v %v", used, err)
	}
	for _, bad := range []journal.LeaseRequest{{Subject: sub, Window: win, TTL: time.Minute}, {Owner: "A", Subject: sub, Window: win}} {
		if _, err := db.LeaseBudget(ctx, bad); err == nil {
			t.Fatalf("LeaseBudget(%+v) accepted", bad)
		}
	}
}

func closeAmounts(a, b journal.Amounts) bool {
	d := a.USD - b.USD
	return a.Tokens == b.Tokens && a.Requests == b.Requests && d < 1e-9 && d > -1e-9
}

// testBudgetLeaseRace: handles (as separate processes) grant, spend and
// return concurrently; the counter plus the grants never pass the limit and
// what was granted and spent adds up.
func testBudgetLeaseRace(t *testing.T, h *harness) {
	ctx := context.Background()
	const sub, win, limit = "gateway-client:race", "day:2026-11-27", 5000
	var spentTotal atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 4 {
		db := h.realTime(t)
		owner := fmt.Sprint("gw-", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var held journal.Amounts
			for n := 0; n < 40; n++ {
				spend := journal.Amounts{Tokens: min(held.Tokens, int64(10+n%7*10))}
				r, err := db.LeaseBudget(ctx, journal.LeaseRequest{Owner: owner, Subject: sub, Window: win,
					Limit: journal.Amounts{Tokens: limit}, Held: held, Spent: spend,
					Min: journal.Amounts{Tokens: 10}, Want: journal.Amounts{Tokens: 150}, TTL: time.Minute})
				if err != nil {
					errs <- err
					return
				}
				spentTotal.Add(spend.Tokens)
				held = r.Held
				if r.Used.Tokens+r.Others.Tokens+r.Held.Tokens > limit {
					errs <- fmt.Errorf("%s: used %d + others %d + held %d > %d", owner, r.Used.Tokens, r.Others.Tokens, r.Held.Tokens, limit)
					return
				}
			}
			if _, err := db.LeaseBudget(ctx, journal.LeaseRequest{Owner: owner, Subject: sub, Window: win,
				Limit: journal.Amounts{Tokens: limit}, Held: held, Return: held, TTL: time.Minute}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	db := h.realTime(t)
	used, err := db.BudgetUsed(ctx, sub, win)
	if err != nil || used.Tokens != spentTotal.Load() || used.Tokens > limit {
		t.Fatalf("counter %+v %v, spent %d, limit %d", used, err, spentTotal.Load(), limit)
	}
	if gs, _ := db.BudgetGrants(ctx, sub, win); len(gs) != 0 {
		t.Fatalf("grants left after every return: %+v", gs)
	}
}
