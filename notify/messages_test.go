package notify

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

var at = time.Date(2026, 11, 27, 2, 30, 0, 0, time.UTC)

func finding(id, sev string) journal.Finding {
	kind := strings.SplitN(id, ":", 2)[0]
	return journal.Finding{ID: id, Kind: kind, Severity: sev, Subject: "key " + id, Detail: "detail of " + id, Action: "do something"}
}

func TestBuilders(t *testing.T) {
	delta := journal.FindingsDelta{
		New:        []journal.Finding{finding("unused:k1", "warning"), finding("drift:k2", "critical")},
		Persisting: []journal.Finding{finding("unused:k3", "warning")},
		Resolved:   []journal.Finding{finding("expiring:k4", "info")},
	}
	resolved := finding("expiring:k4", "info")
	resolved.FirstSeen, resolved.ResolvedAt = at.Add(-48*time.Hour), at
	tests := []struct {
		name       string
		n          Notification
		kind       string
		sev        Severity
		dedupe     string // exact, or prefix when ending in "*"
		mustSay    []string
		mustNotSay []string
	}{
		{"audit digest with a critical new finding", AuditDigestMessage(AuditDigest{At: at, Workspaces: 3, Keys: 40, Delta: delta}),
			KindAuditDigest, Critical, "audit_digest:audit:2026-11-27:*",
			[]string{"2 new, 3 open, 1 resolved", "drift: 1", "unused: 2", "[critical] drift: key drift:k2", "Resolved since the last audit", "expiring: key expiring:k4", "Keys scanned: 40"},
			[]string{"unused:k3 —"}}, // persisting findings are counted, not listed
		{"quiet audit digest", AuditDigestMessage(AuditDigest{At: at, Delta: journal.FindingsDelta{Persisting: delta.Persisting}}),
			KindAuditDigest, Info, "audit_digest:audit:2026-11-27:*", []string{"0 new, 1 open, 0 resolved", "unused: 1"}, []string{"New since"}},
		{"audit digest with errors", AuditDigestMessage(AuditDigest{At: at, Errors: []string{"workspace ml: 503"}, Revoked: []string{"old (k9)"}, DryRun: true}),
			KindAuditDigest, Critical, "audit_digest:*", []string{"(dry run)", "Would revoke (dry run)", "old (k9)", "workspace ml: 503"}, nil},
		{"budget 80%", BudgetAlertMessage(BudgetAlert{Workspace: "dev", Month: "2026-11", Threshold: 0.8, SpendUSD: 41.5, BudgetUSD: 50, ForecastUSD: 60, At: at}),
			KindBudgetAlert, Warning, "budget_alert:dev:0.8:2026-11", []string{"dev passed 80%", "$41.50", "$50.00", "Used: 83%", "Forecast: $60.00"}, nil},
		{"budget 100%", BudgetAlertMessage(BudgetAlert{Workspace: "dev", Month: "2026-11", Threshold: 1, SpendUSD: 51, BudgetUSD: 50, OrgSpendLimitUSD: 1000, At: at}),
			KindBudgetAlert, Critical, "budget_alert:dev:1:2026-11", []string{"passed 100%", "Org spend limit: $1000.00"}, nil},
		{"budget 50%", BudgetAlertMessage(BudgetAlert{Workspace: "ml", Month: "2026-11", Threshold: 0.5, SpendUSD: 250, BudgetUSD: 500, At: at}),
			KindBudgetAlert, Info, "budget_alert:ml:0.5:2026-11", []string{"passed 50%"}, nil},
		{"budget forecast", BudgetAlertMessage(BudgetAlert{Workspace: "ml", Month: "2026-11", Forecast: true, SpendUSD: 300, ForecastUSD: 700, BudgetUSD: 500, At: at}),
			KindBudgetForecast, Warning, "budget_forecast:ml:2026-11", []string{"on track for $700.00 of $500.00", "What to do"}, nil},
		{"rotation digest", RotationDigestMessage(RotationDigest{At: at, NotDue: 4, Rotated: []RotationDone{
			{KeyName: "b-key", RotationID: "r2", NewKeyID: "k-b2", NewKeyName: "b-key-20261127-r2"},
			{KeyName: "a-key", RotationID: "r1", OldKeyID: "k-a1", NewKeyID: "k-a2", NewKeyName: "a-key-20261127-r1"}}}),
			KindRotationDigest, Info, "rotation_digest:*", []string{"2 rotated, 0 failed, 4 not due", "a-key: k-a1 → k-a2", "b-key: none (bootstrap) → k-b2"}, nil},
		{"rotation failure before publish", RotationFailureMessage(RotationFailure{KeyName: "dev-team-key", RotationID: "r7", Step: "verify",
			Error: "GET /v1/models: 401", OldKeyID: "k-old", NewKeyID: "k-new", NewKeyDeleted: true, Attempts: 5, At: at}),
			KindRotationFailed, Critical, "rotation_failed:r7", []string{"failed at verify", "old key k-old is untouched", "new key k-new was deleted",
				"model access", "mrbacd rotate --key dev-team-key", "Attempts: 5"}, []string{"NOT revoked"}},
		{"rotation failure, new key left behind", RotationFailureMessage(RotationFailure{KeyName: "k", RotationID: "r8", Step: "publish",
			Error: "vault: cas mismatch", OldKeyID: "k-old", NewKeyID: "k-new", NewKeyName: "k-20261127-r8", At: at}),
			KindRotationFailed, Critical, "rotation_failed:r8", []string{"could NOT be deleted", "store refused the write"}, nil},
		{"rotation failure after publish", RotationFailureMessage(RotationFailure{KeyName: "k", RotationID: "r9", Step: "revoke",
			Error: "DELETE: 503", OldKeyID: "k-old", NewKeyID: "k-new", Published: true, At: at}),
			KindRotationFailed, Critical, "rotation_failed:r9", []string{"store already serves the new key k-new", "k-old is NOT revoked", "Do not restore", "DELETE /v1/admin/api-keys/k-old"}, nil},
		{"job failure", JobFailureMessage(JobFailure{Job: "audit", RunID: 12, Trigger: "cron", Error: "list workspaces: 503", Duration: 1500 * time.Millisecond, At: at}),
			KindJobFailed, Critical, "job_failed:audit:run:12", []string{"Job audit failed", "list workspaces: 503", "Duration: 1.5s", "mrbacd ctl run audit"}, nil},
		{"job panic", JobFailureMessage(JobFailure{Job: "rotate", RunID: 13, Trigger: "uid:0", Error: "runtime error: index out of range", Panic: true, At: at}),
			KindJobPanic, Critical, "job_panic:rotate:run:13", []string{"Job rotate panicked", "uid:0"}, nil},
		{"finding resolved", FindingResolvedMessage("audit", resolved),
			KindFindingResolved, Info, "finding_resolved:audit:expiring:k4:*", []string{"Resolved: expiring key expiring:k4", "First seen: 2026-11-25", "Resolved: 2026-11-27"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.n
			if err := n.Validate(); err != nil {
				t.Fatalf("invalid: %v", err)
			}
			if n.Kind != tc.kind || n.Severity != tc.sev {
				t.Errorf("kind/severity = %s/%s, want %s/%s", n.Kind, n.Severity, tc.kind, tc.sev)
			}
			if p, ok := strings.CutSuffix(tc.dedupe, "*"); ok {
				if !strings.HasPrefix(n.Dedupe, p) || len(n.Dedupe) <= len(p) {
					t.Errorf("dedupe = %q, want prefix %q", n.Dedupe, p)
				}
			} else if n.Dedupe != tc.dedupe {
				t.Errorf("dedupe = %q, want %q", n.Dedupe, tc.dedupe)
			}
			// The fallback text alone carries everything.
			for _, s := range tc.mustSay {
				if !strings.Contains(n.Text, s) {
					t.Errorf("text lacks %q:\n%s", s, n.Text)
				}
			}
			for _, s := range tc.mustNotSay {
				if strings.Contains(n.Text, s) {
					t.Errorf("text has %q:\n%s", s, n.Text)
				}
			}
			// And it round-trips through the outbox encoding.
			b, err := encode(n)
			if err != nil {
				t.Fatal(err)
			}
			back, err := decode(b)
			if err != nil || back.Text != n.Text || back.Severity != n.Severity || len(back.Fields) != len(n.Fields) {
				t.Fatalf("round trip: %+v, %v", back, err)
			}
		})
	}
}

func TestDedupeIdentity(t *testing.T) {
	d1 := AuditDigest{At: at, Delta: journal.FindingsDelta{New: []journal.Finding{finding("unused:k1", "warning"), finding("drift:k2", "warning")}}}
	d1b := AuditDigest{At: at.Add(time.Hour), Delta: journal.FindingsDelta{New: []journal.Finding{finding("drift:k2", "warning"), finding("unused:k1", "warning")}}}
	d2 := AuditDigest{At: at, Delta: journal.FindingsDelta{New: []journal.Finding{finding("unused:k1", "warning")}}}
	d3 := AuditDigest{At: at.Add(24 * time.Hour), Delta: d1.Delta}
	r1 := RotationDigest{At: at, Rotated: []RotationDone{{KeyName: "a", RotationID: "r1"}, {KeyName: "b", RotationID: "r2"}}}
	r1b := RotationDigest{At: at.Add(time.Minute), Rotated: []RotationDone{{KeyName: "b", RotationID: "r2"}, {KeyName: "a", RotationID: "r1"}}}
	r2 := RotationDigest{At: at, Rotated: []RotationDone{{KeyName: "a", RotationID: "r3"}}}
	for _, tc := range []struct {
		name string
		a, b Notification
		same bool
	}{
		{"same audit, same day, any order", AuditDigestMessage(d1), AuditDigestMessage(d1b), true},
		{"different findings", AuditDigestMessage(d1), AuditDigestMessage(d2), false},
		{"next day", AuditDigestMessage(d1), AuditDigestMessage(d3), false},
		{"same rotations", RotationDigestMessage(r1), RotationDigestMessage(r1b), true},
		{"other rotations", RotationDigestMessage(r1), RotationDigestMessage(r2), false},
		{"budget threshold differs", BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-11", Threshold: 0.5}),
			BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-11", Threshold: 0.8}), false},
		{"budget month differs", BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-11", Threshold: 0.8}),
			BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-12", Threshold: 0.8}), false},
		{"budget same event, new spend", BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-11", Threshold: 0.8, SpendUSD: 40}),
			BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-11", Threshold: 0.8, SpendUSD: 45}), true},
	} {
		if (tc.a.Dedupe == tc.b.Dedupe) != tc.same {
			t.Errorf("%s: %q vs %q, same=%v wanted", tc.name, tc.a.Dedupe, tc.b.Dedupe, tc.same)
		}
	}
}

func TestSeverityAndValidate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Severity
		ok   bool
	}{{"info", Info, true}, {"WARNING", Warning, true}, {" critical ", Critical, true}, {"crit", Critical, true}, {"loud", Info, false}} {
		got, err := ParseSeverity(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseSeverity(%q) = %v, %v", tc.in, got, err)
		}
	}
	for _, tc := range []struct {
		n  Notification
		ok bool
	}{
		{Notification{Kind: "k", Title: "t"}, true},
		{Notification{Kind: "k", Text: "t"}, true},
		{Notification{Title: "t"}, false},
		{Notification{Kind: "k"}, false},
		{Notification{Kind: "k", Title: "t", Severity: 7}, false},
	} {
		if err := tc.n.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v", tc.n, err)
		}
	}
}

func TestStdout(t *testing.T) {
	var buf bytes.Buffer
	s := NewStdout(&buf)
	n := RotationFailureMessage(RotationFailure{KeyName: "dev", RotationID: "r1", Step: "verify", Error: "401", OldKeyID: "k1", At: at})
	if err := s.Send(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(t.Context(), Notification{Kind: "note", Title: "hello", Text: "line one\nline two"}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"[CRITICAL] rotation_failed: Rotation of dev failed at verify\n", "  Failed step: verify\n",
		"  What to do\n    - ", "[INFO] note: hello\n  line one\n  line two\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
}
