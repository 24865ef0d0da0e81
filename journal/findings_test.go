package journal

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"
)

func ids(fs []Finding) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.ID)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func TestSyncFindings(t *testing.T) {
	ctx := context.Background()
	db, _, _ := openTest(t)
	f := func(id string) Finding {
		return Finding{ID: id, Kind: strings.SplitN(id, ":", 2)[0], Severity: "warning", Subject: "key " + id, Detail: "d", Action: "a"}
	}
	// Each night: the audit's findings, whether the report reached the outbox
	// (MarkFindingsReported called), and the expected delta.
	nights := []struct {
		name                       string
		current                    []Finding
		report                     bool
		wantNew, wantPers, wantRes string
	}{
		{name: "first night", current: []Finding{f("unused:k1"), f("expiring:k2")}, report: true, wantNew: "expiring:k2,unused:k1", wantPers: "", wantRes: ""},
		{name: "same findings persist", current: []Finding{f("unused:k1"), f("expiring:k2")}, report: true, wantNew: "", wantPers: "expiring:k2,unused:k1", wantRes: ""},
		{name: "k2 fixed, k3 appears", current: []Finding{f("unused:k1"), f("drift:k3")}, report: true, wantNew: "drift:k3", wantPers: "unused:k1", wantRes: "expiring:k2"},
		{name: "resolution reported once", current: []Finding{f("unused:k1"), f("drift:k3")}, report: true, wantNew: "", wantPers: "drift:k3,unused:k1", wantRes: ""},
		{name: "crash before report: new k4", current: []Finding{f("unused:k1"), f("drift:k3"), f("undeclared:k4")}, report: false, wantNew: "undeclared:k4", wantPers: "drift:k3,unused:k1", wantRes: ""},
		{name: "k4 still new after crash", current: []Finding{f("unused:k1"), f("drift:k3"), f("undeclared:k4")}, report: true, wantNew: "undeclared:k4", wantPers: "drift:k3,unused:k1", wantRes: ""},
		{name: "k1 resolved, crash before report", current: []Finding{f("drift:k3"), f("undeclared:k4")}, report: false, wantNew: "", wantPers: "drift:k3,undeclared:k4", wantRes: "unused:k1"},
		{name: "k1 resolution still pending", current: []Finding{f("drift:k3"), f("undeclared:k4")}, report: true, wantNew: "", wantPers: "drift:k3,undeclared:k4", wantRes: "unused:k1"},
		{name: "k2 comes back: new again", current: []Finding{f("drift:k3"), f("undeclared:k4"), f("expiring:k2")}, report: true, wantNew: "expiring:k2", wantPers: "drift:k3,undeclared:k4", wantRes: ""},
		{name: "k5 appears unreported", current: []Finding{f("drift:k3"), f("undeclared:k4"), f("expiring:k2"), f("unused:k5")}, report: false, wantNew: "unused:k5", wantPers: "drift:k3,expiring:k2,undeclared:k4", wantRes: ""},
		{name: "never-reported k5 resolves silently", current: nil, report: true, wantNew: "", wantPers: "", wantRes: "drift:k3,expiring:k2,undeclared:k4"},
		{name: "nothing left", current: nil, report: true, wantNew: "", wantPers: "", wantRes: ""},
	}
	now := t0
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

func TestSyncFindingsDetails(t *testing.T) {
	ctx := context.Background()
	db, _, _ := openTest(t)
	day1, day2 := t0, t0.Add(24*time.Hour)
	if _, err := db.SyncFindings(ctx, "audit", []Finding{{ID: "unused:k1", Kind: "unused", Severity: "info", Subject: "k1", Detail: "unused 31d"}}, day1); err != nil {
		t.Fatal(err)
	}
	d, err := db.SyncFindings(ctx, "audit", []Finding{{ID: "unused:k1", Kind: "unused", Severity: "warning", Subject: "k1", Detail: "unused 32d", Action: "revoke"}}, day2)
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
		cur   []Finding
	}{
		{name: "empty scope", scope: "", cur: nil},
		{name: "empty id", scope: "audit", cur: []Finding{{Kind: "x"}}},
		{name: "empty kind", scope: "audit", cur: []Finding{{ID: "x"}}},
		{name: "duplicate id", scope: "audit", cur: []Finding{{ID: "x", Kind: "x"}, {ID: "x", Kind: "x"}}},
	} {
		if _, err := db.SyncFindings(ctx, tc.scope, tc.cur, day2); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tc.name, err)
		}
	}
	// A refused sync left nothing behind.
	if open, _ := db.OpenFindings(ctx, "audit"); len(open) != 1 {
		t.Fatalf("open after refused syncs = %+v", open)
	}
}
