package rotate

import (
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/secrets"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	every := 90 * 24 * time.Hour
	tests := []struct {
		name       string
		cur        Current
		force      bool
		wantDue    bool
		wantAction string
		wantReason string
	}{
		{name: "no record: bootstrap", cur: Current{}, force: false, wantDue: true, wantAction: ActionBootstrap, wantReason: "bootstrap"},
		{name: "fresh key", cur: Current{Exists: true, KeyID: "k", CreatedAt: now.Add(-10 * 24 * time.Hour), AgeSource: AgeFromStore}, force: false, wantDue: false, wantAction: ActionNone, wantReason: "not due: age 10.0d"},
		{name: "one second short", cur: Current{Exists: true, KeyID: "k", CreatedAt: now.Add(-every + time.Second), AgeSource: AgeFromStore}, force: false, wantDue: false, wantAction: ActionNone, wantReason: "not due"},
		{name: "exactly rotate_every", cur: Current{Exists: true, KeyID: "k", CreatedAt: now.Add(-every), AgeSource: AgeFromStore}, force: false, wantDue: true, wantAction: ActionRotate, wantReason: "reached rotate_every 90.0d"},
		{name: "old key from platform age", cur: Current{Exists: true, KeyID: "k", CreatedAt: now.Add(-100 * 24 * time.Hour), AgeSource: AgeFromPlatform}, force: false, wantDue: true, wantAction: ActionRotate, wantReason: "from platform created_at"},
		{name: "forced fresh key", cur: Current{Exists: true, KeyID: "k", CreatedAt: now.Add(-time.Hour), AgeSource: AgeFromStore}, force: true, wantDue: true, wantAction: ActionRotate, wantReason: "forced"},
		{name: "unknown age is due", cur: Current{Exists: true, AgeSource: AgeUnknown}, force: false, wantDue: true, wantAction: ActionRotate, wantReason: "age of the current key unknown"},
		{name: "adopted due says so", cur: Current{Exists: true, KeyID: "k", Adopted: true, CreatedAt: now.Add(-every), AgeSource: AgeFromStore}, force: false, wantDue: true, wantAction: ActionRotate, wantReason: "adopting"},
		{name: "created in the future is not due", cur: Current{Exists: true, KeyID: "k", CreatedAt: now.Add(time.Hour), AgeSource: AgeFromStore}, force: false, wantDue: false, wantAction: ActionNone, wantReason: "not due"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(now, Schedule{Every: every, Lead: 36 * time.Hour}, tc.cur, tc.force)
			if d.Due != tc.wantDue || d.Action != tc.wantAction || !strings.Contains(d.Reason, tc.wantReason) {
				t.Fatalf("Decide = %+v, want due=%v action=%s reason containing %q", d, tc.wantDue, tc.wantAction, tc.wantReason)
			}
			if tc.cur.Exists && !tc.cur.CreatedAt.IsZero() && !d.DueAt.Equal(tc.cur.CreatedAt.Add(every)) {
				t.Fatalf("DueAt = %s, want %s", d.DueAt, tc.cur.CreatedAt.Add(every))
			}
		})
	}
}

func TestDecideExpiry(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	every := 90 * 24 * time.Hour
	lead := 24*time.Hour + 2*time.Hour + 5*time.Minute // margin + propagation wait + rotation bound
	created := now.Add(-10 * 24 * time.Hour)
	tests := []struct {
		name       string
		expiresAt  time.Time
		wantDueAt  time.Time
		wantEarly  bool
		wantDue    bool
		wantReason string
	}{
		{name: "no expiry: rotate_every", expiresAt: time.Time{}, wantDueAt: created.Add(every), wantEarly: false, wantDue: false, wantReason: "not due"},
		{name: "expiry after due + lead: rotate_every", expiresAt: created.Add(every + lead + time.Hour), wantDueAt: created.Add(every), wantEarly: false, wantDue: false, wantReason: "not due"},
		{name: "policy of 30 days: due before expiry - lead", expiresAt: created.Add(30 * 24 * time.Hour), wantDueAt: created.Add(30*24*time.Hour - lead), wantEarly: true, wantDue: false, wantReason: "key-expiration policy"},
		{name: "expiry within the lead: due now", expiresAt: now.Add(lead - time.Minute), wantDueAt: now.Add(-time.Minute), wantEarly: true, wantDue: true, wantReason: "key-expiration policy"},
		{name: "expiry just after rotate_every: still early", expiresAt: created.Add(every + time.Hour), wantDueAt: created.Add(every + time.Hour - lead), wantEarly: true, wantDue: false, wantReason: "due 2027-02-14T10:55:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cur := Current{Exists: true, KeyID: "k", CreatedAt: created, AgeSource: AgeFromPlatform, ExpiresAt: tc.expiresAt}
			d := Decide(now, Schedule{Every: every, Lead: lead}, cur, false)
			if !d.DueAt.Equal(tc.wantDueAt) || d.EarlyForExpiry != tc.wantEarly || d.Due != tc.wantDue || !strings.Contains(d.Reason, tc.wantReason) {
				t.Fatalf("Decide = %+v, want due_at %s early %v due %v reason containing %q", d, tc.wantDueAt, tc.wantEarly, tc.wantDue, tc.wantReason)
			}
			if !tc.expiresAt.IsZero() && d.DueAt.After(tc.expiresAt.Add(-ExpiryMargin)) {
				t.Fatalf("due_at %s leaves less than a day before expiry %s", d.DueAt, tc.expiresAt)
			}
		})
	}
}

func TestReadCurrent(t *testing.T) {
	created := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	plat := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	keys := []mistral.Key{
		{KeyID: "id-a", HiddenKey: "AAAA...zzz1", CreatedAt: plat, WorkspaceID: "ws1"},
		{KeyID: "id-b", HiddenKey: "BBBB...yyy2", CreatedAt: plat, WorkspaceID: "ws1"},
		{KeyID: "id-b2", HiddenKey: "BBBB...yyy2", CreatedAt: plat, WorkspaceID: "ws1"},
		{KeyID: "id-c", HiddenKey: "CCCC...xxx3", CreatedAt: plat, WorkspaceID: "ws2"},
	}
	rec := func(key, id string, at time.Time, rot string) secrets.Versioned {
		return secrets.Versioned{Record: secrets.Record{APIKey: key, KeyID: id, CreatedAt: at, RotationID: rot}, Version: "3"}
	}
	tests := []struct {
		name                  string
		v                     secrets.Versioned
		found                 bool
		wantNeed              bool
		wantID, wantSource    string
		wantAdopted, wantNote bool
	}{
		{name: "no record", v: secrets.Versioned{}, found: false, wantNeed: false, wantID: "", wantSource: AgeUnknown, wantAdopted: false, wantNote: false},
		{name: "complete mrbacd record", v: rec("AAAAmiddlezzz1", "id-a", created, "r1"), found: true, wantNeed: false, wantID: "id-a", wantSource: AgeFromStore, wantAdopted: false, wantNote: false},
		{name: "record without created_at: platform age", v: rec("AAAAmiddlezzz1", "id-a", time.Time{}, "r1"), found: true, wantNeed: true, wantID: "id-a", wantSource: AgeFromPlatform, wantAdopted: false, wantNote: false},
		{name: "adopted without key_id: hidden match", v: rec("AAAAmiddlezzz1", "", created, ""), found: true, wantNeed: true, wantID: "id-a", wantSource: AgeFromStore, wantAdopted: true, wantNote: false},
		{name: "adopted without key_id or created_at", v: rec("AAAAmiddlezzz1", "", time.Time{}, ""), found: true, wantNeed: true, wantID: "id-a", wantSource: AgeFromPlatform, wantAdopted: true, wantNote: false},
		{name: "ambiguous hidden match", v: rec("BBBBmiddleyyy2", "", created, ""), found: true, wantNeed: true, wantID: "", wantSource: AgeFromStore, wantAdopted: true, wantNote: true},
		{name: "no match in this workspace", v: rec("CCCCmiddlexxx3", "", created, ""), found: true, wantNeed: true, wantID: "", wantSource: AgeFromStore, wantAdopted: true, wantNote: true},
		{name: "nothing known at all", v: rec("DDDDmiddlewww4", "", time.Time{}, ""), found: true, wantNeed: true, wantID: "", wantSource: AgeUnknown, wantAdopted: true, wantNote: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, need := ReadCurrent(tc.v, tc.found, KeySpec{}, "ws1", nil)
			if need != tc.wantNeed {
				t.Fatalf("needKeys = %v, want %v", need, tc.wantNeed)
			}
			cur, _ := ReadCurrent(tc.v, tc.found, KeySpec{}, "ws1", keys)
			if cur.Exists != tc.found || cur.KeyID != tc.wantID || cur.AgeSource != tc.wantSource ||
				cur.Adopted != tc.wantAdopted || (cur.Note != "") != tc.wantNote {
				t.Fatalf("ReadCurrent = %+v, want id %q source %s adopted %v note %v", cur, tc.wantID, tc.wantSource, tc.wantAdopted, tc.wantNote)
			}
			if tc.wantSource == AgeFromPlatform && !cur.CreatedAt.Equal(plat) {
				t.Fatalf("CreatedAt = %s, want the platform's %s", cur.CreatedAt, plat)
			}
		})
	}
}

func TestHiddenMatches(t *testing.T) {
	tests := []struct {
		hidden, plain string
		want          bool
	}{
		{hidden: "HQSx...Ug6Y", plain: "HQSxabcdefUg6Y", want: true},
		{hidden: "HQSx...Ug6Y", plain: "HQSxabcdefUg6Z", want: false},
		{hidden: "HQSx…Ug6Y", plain: "HQSxabcdefUg6Y", want: true},
		{hidden: "HQSx****Ug6Y", plain: "HQSxabcdefUg6Y", want: true},
		{hidden: "...Ug6Y", plain: "HQSxabcdefUg6Y", want: false},
		{hidden: "HQSx...Ug6Y", plain: "HQSxUg6", want: false},
		{hidden: "", plain: "x", want: false},
		{hidden: "nohidden", plain: "nohidden", want: false},
	}
	for _, tc := range tests {
		if got := hiddenMatches(tc.hidden, tc.plain); got != tc.want {
			t.Errorf("hiddenMatches(%q, %q) = %v, want %v", tc.hidden, tc.plain, got, tc.want)
		}
	}
}
