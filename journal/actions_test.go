package journal

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestClaimActionOnce(t *testing.T) {
	ctx := context.Background()
	db, _, _ := openTest(t)
	// Two handles racing on one click: exactly one wins.
	other, err := Open(ctx, db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var wg sync.WaitGroup
	firsts := make(chan bool, 8)
	for i := range 8 {
		h := db
		if i%2 == 1 {
			h = other
		}
		wg.Go(func() {
			_, first, err := h.ClaimAction(ctx, "C1/1.000001/unused/k1/revoke", "revoke", "k1", "U0OPERATOR")
			if err != nil {
				t.Error(err)
			}
			firsts <- first
		})
	}
	wg.Wait()
	close(firsts)
	n := 0
	for f := range firsts {
		if f {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d first claims, want 1", n)
	}
	steps := []struct {
		name      string
		finish    string
		wantFirst bool
	}{
		{name: "running: not again", finish: "", wantFirst: false},
		{name: "failed: may retry", finish: ActionFailed, wantFirst: true},
		{name: "done: never again", finish: ActionDone, wantFirst: false},
	}
	for _, s := range steps {
		if s.finish != "" {
			if err := db.FinishAction(ctx, "C1/1.000001/unused/k1/revoke", s.finish, "outcome "+s.finish); err != nil {
				t.Fatal(err)
			}
		}
		a, first, err := db.ClaimAction(ctx, "C1/1.000001/unused/k1/revoke", "revoke", "k1", "U0SECOND")
		if err != nil {
			t.Fatal(err)
		}
		if first != s.wantFirst {
			t.Fatalf("%s: first = %v", s.name, first)
		}
		if !first && a.Status == ActionRunning && a.User != "U0OPERATOR" {
			t.Fatalf("%s: earlier claim's user lost: %+v", s.name, a)
		}
	}
	a, err := db.Action(ctx, "C1/1.000001/unused/k1/revoke")
	if err != nil || a.Status != ActionDone || a.User != "U0SECOND" || a.Outcome != "outcome done" {
		t.Fatalf("action = %+v, %v", a, err)
	}
	if err := db.FinishAction(ctx, "nope", ActionDone, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("finish unknown: %v", err)
	}
	if _, _, err := db.ClaimAction(ctx, "", "revoke", "", "U1"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty key: %v", err)
	}
}

func TestSuppressions(t *testing.T) {
	ctx := context.Background()
	db, clk, _ := openTest(t)
	f := func(id string) Finding {
		return Finding{ID: id, Kind: "unused", Severity: "warning", Subject: id}
	}
	now := clk.Now()
	d, err := db.SyncFindings(ctx, "audit", []Finding{f("unused/k1"), f("unused/k2"), f("unused/k3")}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Snooze(ctx, "audit", "unused/k1", now.Add(7*24*time.Hour), "U0OPERATOR"); err != nil {
		t.Fatal(err)
	}
	if err := db.Acknowledge(ctx, "audit", "unused/k2", "U0OPERATOR"); err != nil {
		t.Fatal(err)
	}
	// A reopened journal still holds them.
	again, err := Open(ctx, db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	got, quiet, err := again.WithoutSuppressed(ctx, "audit", d, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if ids(got.New) != "unused/k3" || ids(quiet) != "unused/k1,unused/k2" {
		t.Fatalf("new %s, quiet %s", ids(got.New), ids(quiet))
	}
	cases := []struct {
		name    string
		at      time.Time
		current []Finding
		want    string // suppressed finding ids
	}{
		{name: "within the snooze", at: now.Add(6 * 24 * time.Hour), current: []Finding{f("unused/k1"), f("unused/k2")}, want: "unused/k1,unused/k2"},
		{name: "snooze over, ack holds", at: now.Add(8 * 24 * time.Hour), current: []Finding{f("unused/k1"), f("unused/k2")}, want: "unused/k2"},
		{name: "k2 resolved", at: now.Add(9 * 24 * time.Hour), current: []Finding{f("unused/k1")}, want: ""},
		{name: "k2 back: news again", at: now.Add(10 * 24 * time.Hour), current: []Finding{f("unused/k1"), f("unused/k2")}, want: ""},
	}
	for _, c := range cases {
		if _, err := db.SyncFindings(ctx, "audit", c.current, c.at); err != nil {
			t.Fatal(err)
		}
		sup, err := db.Suppressions(ctx, "audit", c.at)
		if err != nil {
			t.Fatal(err)
		}
		var s []Finding
		for id := range sup {
			s = append(s, Finding{ID: id})
		}
		if ids(s) != c.want {
			t.Errorf("%s: suppressed %q, want %q", c.name, ids(s), c.want)
		}
	}
}

// ids lists findings' ids, sorted and comma-joined.
func ids(fs []Finding) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.ID)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}
