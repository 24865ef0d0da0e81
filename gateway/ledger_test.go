package gateway

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLedgerConcurrentBudget races 200 goroutines against a daily budget:
// the admitted total never exceeds it, and settling frees what was unused.
func TestLedgerConcurrentBudget(t *testing.T) {
	r := compileRole("r", Role{Models: []string{"*"}, DailyTokens: 10_000})
	l := &ledger{}
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var admitted, inFlight, maxInFlight atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 200; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				res, hit := l.reserve(now, r, nil, 137, 0)
				if hit != nil {
					continue
				}
				cur := inFlight.Add(res.tokens)
				for {
					m := maxInFlight.Load()
					if cur <= m || maxInFlight.CompareAndSwap(m, cur) {
						break
					}
				}
				// Settle to the whole reservation for some, release others.
				if i%3 == 0 {
					l.release(res)
				} else {
					admitted.Add(res.tokens)
					l.settle(res, res.tokens, 0, nil)
				}
				inFlight.Add(-res.tokens)
			}
		}()
	}
	wg.Wait()
	settled, reserved, _, _ := l.snapshot()
	if reserved != 0 {
		t.Fatalf("reserved after all settled = %d, want 0", reserved)
	}
	if settled != admitted.Load() {
		t.Fatalf("settled %d != admitted %d", settled, admitted.Load())
	}
	if settled > 10_000 || maxInFlight.Load() > 10_000 {
		t.Fatalf("budget overrun: settled %d, max in flight %d, budget 10000", settled, maxInFlight.Load())
	}
	if settled < 10_000-137 {
		t.Fatalf("budget under-used: settled %d; releases must free room", settled)
	}
}

func TestLedgerLimits(t *testing.T) {
	base := time.Date(2026, 11, 27, 23, 59, 30, 0, time.UTC)
	tests := []struct {
		name      string
		role      Role
		steps     []float64 // usd per request (tokens 100 each)
		at        []time.Duration
		wantHit   string
		wantRetry time.Duration
	}{
		{name: "daily tokens until midnight", role: Role{DailyTokens: 250}, steps: []float64{0, 0, 0}, at: []time.Duration{0, 0, 0}, wantHit: "daily_tokens", wantRetry: 30 * time.Second},
		{name: "window rolls at midnight", role: Role{DailyTokens: 250}, steps: []float64{0, 0, 0}, at: []time.Duration{0, 0, 31 * time.Second}, wantHit: "", wantRetry: 0},
		{name: "hourly usd until the hour", role: Role{HourlyUSD: 1}, steps: []float64{0.6, 0.6}, at: []time.Duration{0, 0}, wantHit: "hourly_usd", wantRetry: 30 * time.Second},
		{name: "daily usd", role: Role{DailyUSD: 1}, steps: []float64{0.5, 0.5, 0.1}, at: []time.Duration{0, 0, 0}, wantHit: "daily_usd", wantRetry: 30 * time.Second},
		{name: "rpm sliding minute", role: Role{RPM: 2}, steps: []float64{0, 0, 0}, at: []time.Duration{0, 10 * time.Second, 20 * time.Second}, wantHit: "rpm", wantRetry: 40 * time.Second},
		{name: "request alone over daily tokens", role: Role{DailyTokens: 99}, steps: []float64{0}, at: []time.Duration{0}, wantHit: "daily_tokens", wantRetry: 0},
		{name: "request alone over hourly usd", role: Role{HourlyUSD: 0.5}, steps: []float64{0.6}, at: []time.Duration{0}, wantHit: "hourly_usd", wantRetry: 0},
		{name: "daily window outlasts rpm", role: Role{RPM: 2, DailyTokens: 350}, steps: []float64{0, 0, 0, 0}, at: []time.Duration{-120 * time.Second, -40 * time.Second, -35 * time.Second, -30 * time.Second}, wantHit: "daily_tokens", wantRetry: 60 * time.Second},
		{name: "rpm outlasts the daily window", role: Role{RPM: 1, DailyTokens: 150}, steps: []float64{0, 0}, at: []time.Duration{0, 0}, wantHit: "rpm", wantRetry: time.Minute},
		{name: "request alone over a limit beats rpm", role: Role{RPM: 1, HourlyUSD: 0.5}, steps: []float64{0, 0.6}, at: []time.Duration{0, 0}, wantHit: "hourly_usd", wantRetry: 0},
		{name: "rpm frees after a minute", role: Role{RPM: 2}, steps: []float64{0, 0, 0}, at: []time.Duration{0, 10 * time.Second, 61 * time.Second}, wantHit: "", wantRetry: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.role.Models = []string{"*"}
			r := compileRole("r", tc.role)
			l := &ledger{}
			var last *limitHit
			for i, usd := range tc.steps {
				res, hit := l.reserve(base.Add(tc.at[i]), r, nil, 100, usd)
				last = hit
				if hit == nil {
					l.settle(res, 100, usd, nil)
				} else if i != len(tc.steps)-1 {
					t.Fatalf("step %d refused early by %s", i, hit.name)
				}
			}
			if tc.wantHit == "" {
				if last != nil {
					t.Fatalf("refused by %s, want admitted", last.name)
				}
				return
			}
			if last == nil || last.name != tc.wantHit {
				t.Fatalf("hit = %+v, want %s", last, tc.wantHit)
			}
			if last.retry != tc.wantRetry {
				t.Fatalf("retry = %v, want %v", last.retry, tc.wantRetry)
			}
		})
	}
}

func TestLedgerInFlightRetry(t *testing.T) {
	r := compileRole("r", Role{Models: []string{"*"}, DailyTokens: 150})
	l := &ledger{}
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	res, hit := l.reserve(now, r, nil, 100, 0)
	if hit != nil {
		t.Fatal(hit.name)
	}
	_, hit = l.reserve(now, r, nil, 100, 0)
	if hit == nil || hit.retry != retryAfterInFlight {
		t.Fatalf("hit = %+v, want a short retry while a request is in flight", hit)
	}
	l.settle(res, 10, 0, nil)
	if _, hit = l.reserve(now, r, nil, 100, 0); hit != nil {
		t.Fatalf("refused after settle freed room: %+v", hit)
	}
}

func TestWindowNames(t *testing.T) {
	now := time.Date(2026, 11, 27, 13, 5, 0, 0, time.UTC)
	if got := dayWindow(dayOf(now)); got != "day:2026-11-27" {
		t.Fatal(got)
	}
	if got := hourWindow(hourOf(now)); got != "hour:2026-11-27T13" {
		t.Fatal(got)
	}
	if got := untilDay(now); got != 10*time.Hour+55*time.Minute {
		t.Fatal(got)
	}
	if got := untilHour(now); got != 55*time.Minute {
		t.Fatal(got)
	}
}
