package journaltest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

func ids(fs []journal.Finding) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.ID)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func testSyncFindings(t *testing.T, h *harness) {
	ctx := context.Background()
	db := h.journal(t)
	f := func(id string) journal.Finding {
		return journal.Finding{ID: id, Kind: strings.SplitN(id, ":", 2)[0], Severity: "warning", Subject: "key " + id, Detail: "d", Action: "a"}
	}
	// Each night: the audit's findings, whether the report reached the outbox
	// (MarkFindingsReported called), and the expected delta.
	nights := []struct {
		name                       string
		current                    []journal.Finding
		report                     bool
		wantNew, wantPers, wantRes string
	}{
		{"first night", []journal.Finding{f("unused:k1"), f("expiring:k2")}, true, "expiring:k2,unused:k1", "", ""},
		{"same findings persist", []journal.Finding{f("unused:k1"), f("expiring:k2")}, true, "", "expiring:k2,unused:k1", ""},
		{"k2 fixed, k3 appears", []journal.Finding{f("unused:k1"), f("drift:k3")}, true, "drift:k3", "unused:k1", "expiring:k2"},
		{"resolution reported once", []journal.Finding{f("unused:k1"), f("drift:k3")}, true, "", "drift:k3,unused:k1", ""},
		{"crash before report: new k4", []journal.Finding{f("unused:k1"), f("drift:k3"), f("undeclared:k4")}, false, "undeclared:k4", "drift:k3,unused:k1", ""},
		{"k4 still new after crash", []journal.Finding{f("unused:k1"), f("drift:k3"), f("undeclared:k4")}, true, "undeclared:k4", "drift:k3,unused:k1", ""},
		{"k1 resolved, crash before report", []journal.Finding{f("drift:k3"), f("undeclared:k4")}, false, "", "drift:k3,undeclared:k4", "unused:k1"},
		{"k1 resolution still pending", []journal.Finding{f("drift:k3"), f("undeclared:k4")}, true, "", "drift:k3,undeclared:k4", "unused:k1"},
		{"k2 comes back: new again", []journal.Finding{f("drift:k3"), f("undeclared:k4"), f("expiring:k2")}, true, "expiring:k2", "drift:k3,undeclared:k4", ""},
		{"k5 appears unreported", []journal.Finding{f("drift:k3"), f("undeclared:k4"), f("expiring:k2"), f("unused:k5")}, false, "unused:k5", "drift:k3,expiring:k2,undeclared:k4", ""},
		{"never-reported k5 resolves silently", nil, true, "", "", "drift:k3,expiring:k2,undeclared:k4"},
		{"nothing left", nil, true, "", "", ""},
	}
	now := T0
	for _, n := range nights {
		now = now.Add(24 * time.Hour)
		d, err := db.SyncFindings(ctx, "audit", n.current, now)
		if err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
		if ids(d.New) != n.wantNew || ids(d.Persisting) != n.wantPers || ids(d.Resolved) != n.wantRes {
			t.Fatalf("%s: new=%q persisting=%q resolved=%q; want %q %q %q", n.name,
				ids(d.New), ids(d.Persisting), ids(d.Resolved), n.wantNew, n.wantPers, n.wantRes)
		}
		for _, r := range d.Resolved {
			if r.ResolvedAt.IsZero() {
				t.Fatalf("%s: resolved %s without ResolvedAt", n.name, r.ID)
			}
		}
		if n.report {
			if err := db.MarkFindingsReported(ctx, "audit", d, now); err != nil {
				t.Fatal(err)
			}
		}
		open, err := db.OpenFindings(ctx, "audit")
		if err != nil {
			t.Fatal(err)
		}
		if ids(open) != ids(n.current) {
			t.Fatalf("%s: open = %q, want %q", n.name, ids(open), ids(n.current))
		}
	}
}

func testSyncFindingsDetails(t *testing.T, h *harness) {
	ctx := context.Background()
	db := h.journal(t)
	day1, day2 := T0, T0.Add(24*time.Hour)
	if _, err := db.SyncFindings(ctx, "audit", []journal.Finding{{ID: "unused:k1", Kind: "unused", Severity: "info", Subject: "k1", Detail: "unused 31d"}}, day1); err != nil {
		t.Fatal(err)
	}
	d, err := db.SyncFindings(ctx, "audit", []journal.Finding{{ID: "unused:k1", Kind: "unused", Severity: "warning", Subject: "k1", Detail: "unused 32d", Action: "revoke"}}, day2)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.New) != 1 || !d.New[0].FirstSeen.Equal(day1) || !d.New[0].LastSeen.Equal(day2) {
		t.Fatalf("unreported finding: %+v", d.New)
	}
	open, _ := db.OpenFindings(ctx, "audit")
	if len(open) != 1 || open[0].Detail != "unused 32d" || open[0].Severity != "warning" || open[0].Action != "revoke" || !open[0].FirstSeen.Equal(day1) {
		t.Fatalf("open = %+v", open)
	}
	// Scopes are independent.
	if d, err := db.SyncFindings(ctx, "other", nil, day2); err != nil || len(d.Resolved) != 0 {
		t.Fatalf("other scope = %+v %v", d, err)
	}
	for _, tc := range []struct {
		name  string
		scope string
		cur   []journal.Finding
	}{
		{"empty scope", "", nil},
		{"empty id", "audit", []journal.Finding{{Kind: "x"}}},
		{"empty kind", "audit", []journal.Finding{{ID: "x"}}},
		{"duplicate id", "audit", []journal.Finding{{ID: "x", Kind: "x"}, {ID: "x", Kind: "x"}}},
	} {
		if _, err := db.SyncFindings(ctx, tc.scope, tc.cur, day2); !errors.Is(err, journal.ErrInvalid) {
			t.Errorf("%s: err = %v, want journal.ErrInvalid", tc.name, err)
		}
	}
	// A refused sync left nothing behind.
	if open, _ := db.OpenFindings(ctx, "audit"); len(open) != 1 {
		t.Fatalf("open after refused syncs = %+v", open)
	}
}

// Two handles syncing the same scope at once (two audits, two processes):
// no sync fails, each finding is reported New at least once (a repeat is
// what the outbox's dedupe absorbs) and the open set is the last one synced.
func testSyncFindingsRace(t *testing.T, h *harness) {
	ctx := context.Background()
	dbs := []journal.Journal{h.realTime(t), h.realTime(t)}
	for round := 0; round < 5; round++ {
		cur := []journal.Finding{{ID: fmt.Sprint("a", round), Kind: "k"}, {ID: fmt.Sprint("b", round), Kind: "k"}}
		var wg sync.WaitGroup
		var mu sync.Mutex
		news := map[string]int{}
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				db := dbs[i%2]
				d, err := db.SyncFindings(ctx, "audit", cur, time.Now())
				if err != nil {
					t.Errorf("sync: %v", err)
					return
				}
				if err := db.MarkFindingsReported(ctx, "audit", d, time.Now()); err != nil {
					t.Errorf("mark: %v", err)
					return
				}
				mu.Lock()
				for _, f := range d.New {
					news[f.ID]++
				}
				mu.Unlock()
			}(i)
		}
		wg.Wait()
		for _, f := range cur {
			if news[f.ID] == 0 {
				t.Fatalf("round %d: %s never reported new (%v)", round, f.ID, news)
			}
		}
		open, err := dbs[0].OpenFindings(ctx, "audit")
		if err != nil || ids(open) != ids(cur) {
			t.Fatalf("round %d: open findings %q, %v; want %q", round, ids(open), err, ids(cur))
		}
	}
}
