package notify

import (
	"strings"
	"testing"
	"time"
)

// TestRotationFailureGuidance checks the State and What-to-do texts of each
// kind of rotation failure: what consumers see, what the operator does, and
// that the guidance reads in order (no dangling "Then ..." first line).
func TestRotationFailureGuidance(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	base := RotationFailure{KeyName: "dev", RotationID: "r1", OldKeyID: "k-old", NewKeyID: "k-new", NewKeyName: "dev-20261127-r1", At: at}
	with := func(mod func(f *RotationFailure)) RotationFailure {
		f := base
		mod(&f)
		return f
	}
	tests := []struct {
		name      string
		f         RotationFailure
		stateSays []string
		todoSays  []string
		neverSays []string
	}{
		{name: "create refused, nothing created", f: with(func(f *RotationFailure) { f.Step, f.NewKeyID, f.Error = "create", "", "POST: 403" }),
			stateSays: []string{"old key k-old is untouched", "No new key was created"},
			todoSays:  []string{"admin key's permissions", "mrbacd rotate --key dev", "--force"},
			neverSays: []string{"NOT revoked", "in flight", "could NOT be deleted"}},
		{name: "verify failed before publish, new key deleted", f: with(func(f *RotationFailure) { f.Step, f.NewKeyDeleted, f.Error = "verify", true, "401" }),
			stateSays: []string{"old key k-old is untouched", "new key k-new was deleted"},
			todoSays:  []string{"model access", "next scheduled run retries", "mrbacd rotate --key dev"},
			neverSays: []string{"NOT revoked", "in flight", "Do not restore"}},
		{name: "publish refused (CAS), new key deleted", f: with(func(f *RotationFailure) { f.Step, f.NewKeyDeleted, f.Error = "publish", true, "cas mismatch" }),
			stateSays: []string{"old key k-old is untouched", "new key k-new was deleted"},
			todoSays:  []string{"store refused the write", "CAS conflict"},
			neverSays: []string{"unreachable", "in flight"}},
		{name: "store unavailable at publish, new key deleted", f: with(func(f *RotationFailure) {
			f.Step, f.NewKeyDeleted, f.StoreUnavailable, f.Error = "publish", true, true, "store unavailable"
		}),
			stateSays: []string{"old key k-old is untouched", "new key k-new was deleted"},
			todoSays:  []string{"store was unreachable", "mrbacd rotate --key dev"},
			neverSays: []string{"store refused the write", "in flight"}},
		{name: "store unreadable after a failed publish: outcome unknown", f: with(func(f *RotationFailure) {
			f.Step, f.InFlight, f.StoreUnavailable, f.Error = "publish", true, true, "publish: store unavailable; reading the store back failed too"
		}),
			stateSays: []string{"may or may not serve the new key k-new", "k-old is NOT revoked", "stays in flight", "either finishes the rotation or deletes the new key"},
			todoSays:  []string{"store was unreachable", "Do not edit the store record", "next scheduled run settles it"},
			neverSays: []string{"Nothing changed for consumers", "--force"}},
		{name: "abort could not delete the new key", f: with(func(f *RotationFailure) {
			f.Step, f.InFlight, f.Error = "verify", true, "abort: delete new key: 500 (after: verify: 401)"
		}),
			stateSays: []string{"old key k-old is untouched", "k-new (dev-20261127-r1) could NOT be deleted", "stays in flight", "deletes the new key"},
			todoSays:  []string{"model access", "harmless", "DELETE /v1/admin/api-keys/k-new", "mrbacd rotate --key dev"},
			neverSays: []string{"NOT revoked", "Do not restore"}},
		{name: "failed at an unnamed step before publish", f: with(func(f *RotationFailure) { f.Step, f.NewKeyID, f.Error = "begin", "", "journal: disk full" }),
			stateSays: []string{"old key k-old is untouched"},
			todoSays:  []string{"Find the cause in the error above", "mrbacd rotate --key dev"},
			neverSays: []string{"NOT revoked"}},
		{name: "reverify failed after publish", f: with(func(f *RotationFailure) {
			f.Step, f.Published, f.InFlight, f.Error = "reverify", true, true, "reverify: 401"
		}),
			stateSays: []string{"store already serves the new key k-new", "k-old is NOT revoked", "resumes it"},
			todoSays:  []string{"Do not restore", "failed verification after publish", "re-verifies the new key and revokes the old one", "mrbacd rotate --key dev"},
			neverSays: []string{"--force", "untouched", "was deleted"}},
		{name: "revoke failed after publish", f: with(func(f *RotationFailure) {
			f.Step, f.Published, f.InFlight, f.Error = "revoke", true, true, "revoke old key: 503"
		}),
			stateSays: []string{"store already serves the new key k-new", "k-old is NOT revoked"},
			todoSays:  []string{"Do not restore", "could not be revoked", "DELETE /v1/admin/api-keys/k-old", "next scheduled run revokes k-old"},
			neverSays: []string{"--force", "untouched"}},
		{name: "store unavailable after publish", f: with(func(f *RotationFailure) {
			f.Step, f.Published, f.InFlight, f.StoreUnavailable, f.Error = "reverify", true, true, true, "reverify: store unavailable"
		}),
			stateSays: []string{"store already serves the new key k-new", "resumes it"},
			todoSays:  []string{"store was unreachable", "revokes the old one"},
			neverSays: []string{"--force"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := RotationFailureMessage(tc.f)
			if err := n.Validate(); err != nil {
				t.Fatalf("invalid: %v", err)
			}
			sec := map[string][]string{}
			for _, s := range n.Sections {
				sec[s.Title] = s.Lines
			}
			state, todo := strings.Join(sec["State"], "\n"), strings.Join(sec["What to do"], "\n")
			if len(sec["What to do"]) == 0 {
				t.Fatal("no guidance")
			}
			if first := sec["What to do"][0]; strings.HasPrefix(first, "Then") || strings.HasPrefix(first, "Once") {
				t.Errorf("guidance starts mid-sentence: %q", first)
			}
			for _, s := range tc.stateSays {
				if !strings.Contains(state, s) {
					t.Errorf("State lacks %q:\n%s", s, state)
				}
			}
			for _, s := range tc.todoSays {
				if !strings.Contains(todo, s) {
					t.Errorf("What to do lacks %q:\n%s", s, todo)
				}
			}
			for _, s := range tc.neverSays {
				if strings.Contains(n.Text, s) {
					t.Errorf("text says %q:\n%s", s, n.Text)
				}
			}
			if !strings.Contains(n.Text, tc.f.Error) {
				t.Errorf("text lacks the error %q", tc.f.Error)
			}
		})
	}
}
