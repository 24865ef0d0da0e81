package gateway

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// dayTokensHeld is the budget_held gauge of the budget client's daily tokens.
func dayTokensHeld(e *testEnv) float64 {
	return testutil.ToFloat64(e.gw.lm.held.WithLabelValues(usageSubject("budget-app"), "day", "tokens"))
}

// TestBudgetLeaseMetrics: a lease cycle on a SQLite journal moves the lease
// series: the first request waits for a fetch the journal grants, the
// instance holds part of the daily budget, a fetch past the budget comes
// back short, and Close gives everything back (held 0).
func TestBudgetLeaseMetrics(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	body := chatBody("mistral-small-latest", 100, false, "count me")
	if resp, b, err := e.do(ctx, "budget", "POST", pathChat, body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v %s", err, resp, b)
	}
	lm := e.gw.lm
	if w := testutil.ToFloat64(lm.waits); w != 1 {
		t.Fatalf("waits %v after the first request, want 1 (it waited for the first fetch)", w)
	}
	if g := testutil.ToFloat64(lm.fetches.WithLabelValues(fetchGranted)); g < 1 {
		t.Fatalf("granted fetches %v, want at least 1", g)
	}
	if h := dayTokensHeld(e); h <= 0 || h > 1000 {
		t.Fatalf("day tokens held %v, want within (0, 1000]", h)
	}
	// Spend the daily 1000 tokens: a fetch comes back short, the request 429.
	status := 200
	for i := 0; i < 100 && status == 200; i++ {
		resp, _, err := e.do(ctx, "budget", "POST", pathChat, body)
		if err != nil {
			t.Fatal(err)
		}
		status = resp.StatusCode
	}
	if status != http.StatusTooManyRequests {
		t.Fatalf("status %d once the budget was spent, want 429", status)
	}
	if s := testutil.ToFloat64(lm.fetches.WithLabelValues(fetchShort)); s < 1 {
		t.Fatalf("short fetches %v after the budget was spent, want at least 1", s)
	}
	if w := testutil.ToFloat64(lm.waits); w < 2 {
		t.Fatalf("waits %v, want the refused request's wait counted", w)
	}
	if u, l, er := testutil.ToFloat64(lm.unavailable), testutil.ToFloat64(lm.lost), testutil.ToFloat64(lm.fetches.WithLabelValues(fetchError)); u+l+er != 0 {
		t.Fatalf("on a reachable journal: %v unavailable, %v lost grants, %v fetch errors", u, l, er)
	}
	if err := e.gw.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if h := dayTokensHeld(e); h != 0 {
		t.Fatalf("day tokens held %v after Close, want 0 (all given back)", h)
	}
	// Every series is exported under its name, bounded labels only.
	want := []string{"mrbacd_gateway_budget_held", "mrbacd_gateway_budget_fetches_total", "mrbacd_gateway_budget_waits_total",
		"mrbacd_gateway_budget_unavailable_total", "mrbacd_gateway_budget_lost_grants_total"}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.Contains(lp.GetValue(), dayWindow(dayOf(time.Now()))) {
					t.Errorf("%s carries a window id in label %s", mf.GetName(), lp.GetName())
				}
			}
		}
	}
	for _, n := range want {
		if !got[n] {
			t.Errorf("%s is not exported", n)
		}
	}
}

// TestBudgetLeaseMetricsUnreachable: cut off from its journal, the instance
// counts the failed fetches and each 503 it answers.
func TestBudgetLeaseMetricsUnreachable(t *testing.T) {
	var fj *failingJournal
	e := newEnv(t, withOptions(func(o *Options) { fj = &failingJournal{UsageStore: o.Usage}; o.Usage = fj }))
	ctx := context.Background()
	body := chatBody("mistral-small-latest", 10, false, "are you there")
	if resp, b, err := e.do(ctx, "budget", "POST", pathChat, body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v %s", err, resp, b)
	}
	fj.down.Store(true)
	refused := 0
	for i := 0; i < 200 && refused == 0; i++ {
		resp, _, err := e.do(ctx, "budget", "POST", pathChat, body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusServiceUnavailable {
			refused++
		}
	}
	lm := e.gw.lm
	if u := testutil.ToFloat64(lm.unavailable); refused != 1 || u != 1 {
		t.Fatalf("%d requests answered 503, unavailable_total %v: want 1 and 1", refused, u)
	}
	if er := testutil.ToFloat64(lm.fetches.WithLabelValues(fetchError)); er < 1 {
		t.Fatalf("fetch errors %v with the journal down, want at least 1", er)
	}
	fj.down.Store(false)
}

// TestBudgetLeaseMetricsLostGrant: a grant left to expire (no renewal
// within its TTL) is found lost at the next call and counted.
func TestBudgetLeaseMetricsLostGrant(t *testing.T) {
	e := newEnv(t, withOptions(func(o *Options) { o.LeaseTTL = 300 * time.Millisecond; o.FlushInterval = time.Hour }))
	ctx := context.Background()
	if resp, b, err := e.do(ctx, "budget", "POST", pathChat, chatBody("mistral-small-latest", 10, false, "hold")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v %s", err, resp, b)
	}
	e.gw.leases.wait()
	lz := e.gw.leases
	lz.mu.Lock()
	h := lz.holds[holdKey{usageSubject("budget-app"), dayWindow(dayOf(time.Now()))}]
	lz.mu.Unlock()
	if h == nil {
		t.Fatal("no holding of the budget client's day")
	}
	h.mu.Lock()
	expires, held := h.expires, h.held
	h.mu.Unlock()
	if held.IsZero() {
		t.Fatal("the budget client holds nothing after its request")
	}
	eventually(t, "the grant to expire", func() bool { return time.Now().After(expires.Add(10 * time.Millisecond)) })
	if err := e.gw.persist(ctx); err != nil {
		t.Fatal(err)
	}
	if l := testutil.ToFloat64(e.gw.lm.lost); l != 1 {
		t.Fatalf("lost grants %v, want 1", l)
	}
}
