// Package journaltest is the contract every journal backend meets, written
// once and run against each engine (SQLite in a temporary directory, the
// machine's PostgreSQL) by that backend's tests:
//
//	journaltest.Run(t, journaltest.Backend{Name: "sqlite", New: ...})
//
// It covers rotations, leases and fenced leases, runs and last fires,
// once-marks, usage counters, the outbox, findings, retention and the
// races between handles that several processes sharing a journal create.
package journaltest

import (
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// Backend is one engine under test.
type Backend struct {
	// Name names the engine in failures.
	Name string
	// New creates an empty journal store (a file, a database) for t and
	// returns how to open a handle on it; each handle, opened as a separate
	// process would, with the given options (a clock), applies pending
	// migrations and is closed by the opener when t ends.
	New func(t testing.TB) (open func(t testing.TB, opts ...journal.Option) (journal.Journal, error))
}

// Clock is a settable clock for journals opened WithClock(c.Now).
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// T0 is the suite clocks' start.
var T0 = time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)

// Run runs the contract against b, each case on a new empty store.
func Run(t *testing.T, b Backend) {
	cases := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"Migrations", testMigrations},
		{"ConcurrentOpen", testConcurrentOpen},
		{"Rotations", testRotations},
		{"BeginRotationRace", testBeginRotationRace},
		{"Leases", testLeases},
		{"LeaseRace", testLeaseRace},
		{"Fenced", testFenced},
		{"FencedRace", testFencedRace},
		{"FencedWrites", testFencedWrites},
		{"Runs", testRuns},
		{"RunRequests", testRunRequests},
		{"AbandonLeaderRuns", testAbandonLeaderRuns},
		{"LastFire", testLastFire},
		{"MarkOnce", testMarkOnce},
		{"Usage", testUsage},
		{"BudgetLeases", testBudgetLeases},
		{"BudgetLeaseRace", testBudgetLeaseRace},
		{"Outbox", testOutbox},
		{"OutboxClaimRace", testOutboxClaimRace},
		{"Prune", testPrune},
		{"SyncFindings", testSyncFindings},
		{"SyncFindingsDetails", testSyncFindingsDetails},
		{"SyncFindingsRace", testSyncFindingsRace},
		{"ConcurrentUse", testConcurrentUse},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &harness{b: b, open: b.New(t), clk: NewClock(T0)}
			c.fn(t, h)
		})
	}
}

// harness is one case's store.
type harness struct {
	b    Backend
	open func(t testing.TB, opts ...journal.Option) (journal.Journal, error)
	clk  *Clock
}

// journal opens a handle on the case's store with the case's clock.
func (h *harness) journal(t *testing.T) journal.Journal {
	t.Helper()
	j, err := h.open(t, journal.WithClock(h.clk.Now))
	if err != nil {
		t.Fatalf("%s: open: %v", h.b.Name, err)
	}
	return j
}

// realTime opens a handle reading the real time.
func (h *harness) realTime(t *testing.T) journal.Journal {
	t.Helper()
	j, err := h.open(t)
	if err != nil {
		t.Fatalf("%s: open: %v", h.b.Name, err)
	}
	return j
}
