package rotate

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/secrets"
)

// TestKeyPolicyShortensExpiry: under an organization's key-expiration
// policy of 30 days and rotate_every 90d, the rotation run says the policy
// shortened the new key's expiry (report, log, notification), and the plan
// then puts the key's due_at a day and a rotation's lead before expiry.
// Without a policy nothing changes.
func TestKeyPolicyShortensExpiry(t *testing.T) {
	tests := []struct {
		name      string
		policy    int // max days, 0 for none
		wantEarly bool
	}{
		{name: "policy of 30 days under rotate_every 90d", policy: 30, wantEarly: true},
		{name: "no policy", policy: 0, wantEarly: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.policy > 0 {
				e.sb.SetKeyPolicy(e.sb.AdminActor(), sandbox.KeyPolicy{MaxDays: tc.policy})
			}
			spec := e.spec("svc")
			eng := e.engine(Options{}, spec)
			_, reps := e.run(eng, jobs.Request{Trigger: "test"})
			if len(reps) != 1 || reps[0].Outcome != OutcomeBootstrapped {
				t.Fatalf("reports = %+v, want one bootstrap", reps)
			}
			says := "key-expiration policy shortened the new key's expiration_date"
			notes := e.notes.rotated
			if len(notes) != 1 {
				t.Fatalf("rotation notifications = %d, want 1", len(notes))
			}
			if got := strings.Contains(reps[0].Note, says); got != tc.wantEarly {
				t.Fatalf("report note %q: mentions the policy = %v, want %v", reps[0].Note, got, tc.wantEarly)
			}
			if got := strings.Contains(notes[0].Note, says); got != tc.wantEarly {
				t.Fatalf("notification note %q: mentions the policy = %v, want %v", notes[0].Note, got, tc.wantEarly)
			}
			if got := strings.Contains(e.logs.String(), "key-expiration policy shortened the new key's expiry"); got != tc.wantEarly {
				t.Fatalf("log mentions the policy = %v, want %v:\n%s", got, tc.wantEarly, e.logs.String())
			}

			items, err := eng.Plan(context.Background())
			if err != nil || len(items) != 1 {
				t.Fatalf("Plan = %+v, %v", items, err)
			}
			it := items[0]
			dueAt, err := time.Parse(time.RFC3339, it.DueAt)
			if err != nil {
				t.Fatalf("due_at %q: %v", it.DueAt, err)
			}
			created, _ := time.Parse(time.RFC3339, it.CreatedAt)
			if it.Due || it.EarlyForExpiry != tc.wantEarly {
				t.Fatalf("plan item %+v: want not due, early_for_expiry %v", it, tc.wantEarly)
			}
			if !tc.wantEarly {
				if !dueAt.Equal(created.Add(spec.RotateEvery)) {
					t.Fatalf("due_at %s, want created_at + rotate_every %s", dueAt, created.Add(spec.RotateEvery))
				}
				return
			}
			expires, err := time.Parse(time.RFC3339, it.ExpiresAt)
			if err != nil {
				t.Fatalf("expires_at %q: %v", it.ExpiresAt, err)
			}
			want := mistral.DateOf(time.Now().UTC()).AddDays(tc.policy + 1).In(time.UTC)
			if !expires.Equal(want) {
				t.Fatalf("expires_at %s, want the end of the policy's last day %s", expires, want)
			}
			lead := eng.Schedule(spec).Lead
			if !dueAt.Equal(expires.Add(-lead).Truncate(time.Second)) || !dueAt.Before(expires.Add(-ExpiryMargin-spec.PropagationWait)) {
				t.Fatalf("due_at %s, want expiry %s - lead %s (before expiry - 1 day - propagation_wait)", dueAt, expires, lead)
			}
			if !strings.Contains(it.Reason, "key-expiration policy") {
				t.Fatalf("plan reason %q does not name the policy", it.Reason)
			}
		})
	}
}

// TestAdoptedKeyDueForExpiry: a key mrbacd did not create, whose platform
// expiration_date falls before created + rotate_every, is rotated once its
// expiry is within the rotation's lead, and the run says why.
func TestAdoptedKeyDueForExpiry(t *testing.T) {
	e := newEnv(t)
	spec := e.spec("legacy")
	exp := mistral.DateOf(time.Now().UTC()) // expires at the end of today
	k, err := e.sb.AddKey("legacy-by-hand", "", &exp)
	if err != nil {
		t.Fatal(err)
	}
	e.writeAdopted(spec, k, time.Now().Add(-24*time.Hour))
	eng := e.engine(Options{}, spec)
	items, err := eng.Plan(context.Background())
	if err != nil || len(items) != 1 || !items[0].Due || !items[0].EarlyForExpiry {
		t.Fatalf("Plan = %+v, %v; want due early for expiry", items, err)
	}
	_, reps := e.run(eng, jobs.Request{Trigger: "test"})
	if len(reps) != 1 || reps[0].Outcome != OutcomeRotated || !strings.Contains(reps[0].Reason, "key-expiration policy") {
		t.Fatalf("reports = %+v, want a rotation saying the expiry moved it", reps)
	}
	if n := e.notes.rotated; len(n) != 1 || !strings.Contains(n[0].Note, "rotated early") {
		t.Fatalf("notifications = %+v, want one saying it rotated early", n)
	}
	e.checkSettled("legacy")
}

// writeAdopted stores k as an adopted record of spec (no rotation id).
func (e *env) writeAdopted(spec KeySpec, k sandbox.KeyState, created time.Time) {
	e.t.Helper()
	rec := secrets.Record{APIKey: k.Plaintext, KeyID: k.ID, KeyName: k.Name, CreatedAt: created.UTC()}
	if _, err := e.files.Write(context.Background(), secrets.WriteRequest{Target: spec.Target, Record: rec}); err != nil {
		e.t.Fatal(err)
	}
}
