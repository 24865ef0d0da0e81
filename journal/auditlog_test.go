package journal

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestAuditCursorSeenAdvance(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	c := AuditCursor{}.Advance("1", at).Advance("2", at)
	tests := []struct {
		name string
		id   string
		at   time.Time
		want bool
	}{
		{name: "before the cursor", id: "0", at: at.Add(-time.Microsecond), want: true},
		{name: "at the cursor, read", id: "2", at: at, want: true},
		{name: "at the cursor, not read", id: "3", at: at, want: false},
		{name: "after the cursor", id: "4", at: at.Add(time.Microsecond), want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.Seen(tc.id, tc.at); got != tc.want {
				t.Fatalf("Seen(%s, %s) = %v, want %v", tc.id, tc.at, got, tc.want)
			}
		})
	}
	if back := c.Advance("9", at.Add(-time.Second)); !back.Time.Equal(at) || !slices.Equal(back.IDs, []string{"1", "2"}) {
		t.Fatalf("Advance to an earlier event moved the cursor: %+v", back)
	}
}

// TestAuditCursorPersists: the cursor survives a re-opened journal, only
// moves forward, merges ids at the same time, and settles its findings in
// the same transaction (never reported again, never announced resolved).
func TestAuditCursorPersists(t *testing.T) {
	ctx := context.Background()
	db, _, path := openTest(t)
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if c, err := db.AuditCursor(ctx, "mistral"); err != nil || !c.IsZero() {
		t.Fatalf("fresh cursor = %+v, %v; want zero", c, err)
	}
	f := Finding{ID: "platform_change/7", Kind: "platform_change", Severity: "info", Subject: "s", Detail: "d"}
	d, err := db.SyncFindings(ctx, "audit", []Finding{f}, at)
	if err != nil || len(d.New) != 1 {
		t.Fatalf("sync = %+v, %v", d, err)
	}
	if err := db.MarkFindingsReported(ctx, "audit", d, at); err != nil {
		t.Fatal(err)
	}
	if err := db.AdvanceAuditCursor(ctx, "mistral", AuditCursor{Time: at, IDs: []string{"7"}}, "audit", []string{f.ID}, at); err != nil {
		t.Fatal(err)
	}
	// Same time, another id: merged. Earlier time: ignored.
	if err := db.AdvanceAuditCursor(ctx, "mistral", AuditCursor{Time: at, IDs: []string{"8"}}, "", nil, at); err != nil {
		t.Fatal(err)
	}
	if err := db.AdvanceAuditCursor(ctx, "mistral", AuditCursor{Time: at.Add(-time.Hour), IDs: []string{"1"}}, "", nil, at); err != nil {
		t.Fatal(err)
	}
	if err := db.AdvanceAuditCursor(ctx, "", AuditCursor{Time: at}, "", nil, at); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty source: %v, want ErrInvalid", err)
	}
	db.Close()
	db2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	c, err := db2.AuditCursor(ctx, "mistral")
	if err != nil || !c.Time.Equal(at) || !slices.Equal(c.IDs, []string{"7", "8"}) {
		t.Fatalf("re-opened cursor = %+v, %v; want %s with ids 7, 8", c, err, at)
	}
	// The settled finding: absent from the next sync, and not resolved news.
	d, err = db2.SyncFindings(ctx, "audit", nil, at.Add(time.Hour))
	if err != nil || len(d.New)+len(d.Persisting)+len(d.Resolved) != 0 {
		t.Fatalf("sync after settling = %+v, %v; want nothing", d, err)
	}
}
