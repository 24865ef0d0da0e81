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
		{name: "audit digest with a critical new finding", n: AuditDigestMessage(AuditDigest{At: at, Workspaces: 3, Keys: 40, Delta: delta}),
			kind: KindAuditDigest, sev: Critical, dedupe: "audit_digest:audit:2026-11-27:*",
			mustSay:    []string{"2 new, 3 open, 1 resolved", "drift: 1", "unused: 2", "[critical] drift: key drift:k2", "Resolved since the last audit", "expiring: key expiring:k4", "Keys scanned: 40"},
			mustNotSay: []string{"unused:k3 —"}}, // persisting findings are counted, not listed
		{name: "quiet audit digest", n: AuditDigestMessage(AuditDigest{At: at, Delta: journal.FindingsDelta{Persisting: delta.Persisting}}),
			kind: KindAuditDigest, sev: Info, dedupe: "audit_digest:audit:2026-11-27:*", mustSay: []string{"0 new, 1 open, 0 resolved", "unused: 1"}, mustNotSay: []string{"New since"}},
		{name: "audit digest with errors", n: AuditDigestMessage(AuditDigest{At: at, Errors: []string{"workspace ml: 503"}, Revoked: []string{"old (k9)"}, DryRun: true}),
			kind: KindAuditDigest, sev: Critical, dedupe: "audit_digest:*", mustSay: []string{"(dry run)", "Would revoke (dry run)", "old (k9)", "workspace ml: 503"}, mustNotSay: nil},
		{name: "budget 80%", n: BudgetAlertMessage(BudgetAlert{Workspace: "dev", Month: "2026-11", Threshold: 0.8, SpendUSD: 41.5, BudgetUSD: 50, ForecastUSD: 60, At: at}),
			kind: KindBudgetAlert, sev: Warning, dedupe: "budget_alert:dev:0.8:2026-11", mustSay: []string{"dev passed 80%", "$41.50", "$50.00", "Used: 83%", "Forecast: $60.00"}, mustNotSay: nil},
		{name: "budget 100%", n: BudgetAlertMessage(BudgetAlert{Workspace: "dev", Month: "2026-11", Threshold: 1, SpendUSD: 51, BudgetUSD: 50, OrgSpendLimitUSD: 1000, At: at}),
			kind: KindBudgetAlert, sev: Critical, dedupe: "budget_alert:dev:1:2026-11", mustSay: []string{"passed 100%", "Org spend limit: $1000.00"}, mustNotSay: nil},
		{name: "budget 50%", n: BudgetAlertMessage(BudgetAlert{Workspace: "ml", Month: "2026-11", Threshold: 0.5, SpendUSD: 250, BudgetUSD: 500, At: at}),
			kind: KindBudgetAlert, sev: Info, dedupe: "budget_alert:ml:0.5:2026-11", mustSay: []string{"passed 50%"}, mustNotSay: nil},
		{name: "budget forecast", n: BudgetAlertMessage(BudgetAlert{Workspace: "ml", Month: "2026-11", Forecast: true, SpendUSD: 300, ForecastUSD: 700, BudgetUSD: 500, At: at}),
			kind: KindBudgetForecast, sev: Warning, dedupe: "budget_forecast:ml:2026-11", mustSay: []string{"on track for $700.00 of $500.00", "What to do"}, mustNotSay: nil},
		{name: "rotation digest", n: RotationDigestMessage(RotationDigest{At: at, NotDue: 4, Rotated: []RotationDone{
			{KeyName: "b-key", RotationID: "r2", NewKeyID: "k-b2", NewKeyName: "b-key-20261127-r2"},
			{KeyName: "a-key", RotationID: "r1", OldKeyID: "k-a1", NewKeyID: "k-a2", NewKeyName: "a-key-20261127-r1"}}}),
			kind: KindRotationDigest, sev: Info, dedupe: "rotation_digest:*", mustSay: []string{"2 rotated, 0 failed, 4 not due", "a-key: k-a1 → k-a2", "b-key: none (bootstrap) → k-b2"}, mustNotSay: nil},
		{name: "rotation failure before publish", n: RotationFailureMessage(RotationFailure{KeyName: "dev-team-key", RotationID: "r7", Step: "verify",
			Error: "GET /v1/models: 401", OldKeyID: "k-old", NewKeyID: "k-new", NewKeyDeleted: true, Attempts: 5, At: at}),
			kind: KindRotationFailed, sev: Critical, dedupe: "rotation_failed:r7", mustSay: []string{"failed at verify", "old key k-old is untouched", "new key k-new was deleted",
				"model access", "mrbacd rotate --key dev-team-key", "Attempts: 5"}, mustNotSay: []string{"NOT revoked"}},
		{name: "rotation failure, new key left behind", n: RotationFailureMessage(RotationFailure{KeyName: "k", RotationID: "r8", Step: "publish",
			Error: "vault: cas mismatch", OldKeyID: "k-old", NewKeyID: "k-new", NewKeyName: "k-20261127-r8", At: at}),
			kind: KindRotationFailed, sev: Critical, dedupe: "rotation_failed:r8", mustSay: []string{"could NOT be deleted", "store refused the write"}, mustNotSay: nil},
		{name: "rotation failure after publish", n: RotationFailureMessage(RotationFailure{KeyName: "k", RotationID: "r9", Step: "revoke",
			Error: "DELETE: 503", OldKeyID: "k-old", NewKeyID: "k-new", Published: true, At: at}),
			kind: KindRotationFailed, sev: Critical, dedupe: "rotation_failed:r9", mustSay: []string{"store already serves the new key k-new", "k-old is NOT revoked", "Do not restore", "DELETE /v1/admin/api-keys/k-old"}, mustNotSay: nil},
		{name: "job failure", n: JobFailureMessage(JobFailure{Job: "audit", RunID: 12, Trigger: "cron", Error: "list workspaces: 503", Duration: 1500 * time.Millisecond, At: at}),
			kind: KindJobFailed, sev: Critical, dedupe: "job_failed:audit:run:12", mustSay: []string{"Job audit failed", "list workspaces: 503", "Duration: 1.5s", "mrbacd ctl run audit"}, mustNotSay: nil},
		{name: "job panic", n: JobFailureMessage(JobFailure{Job: "rotate", RunID: 13, Trigger: "uid:0", Error: "runtime error: index out of range", Panic: true, At: at}),
			kind: KindJobPanic, sev: Critical, dedupe: "job_panic:rotate:run:13", mustSay: []string{"Job rotate panicked", "uid:0"}, mustNotSay: nil},
		{name: "finding resolved", n: FindingResolvedMessage("audit", resolved),
			kind: KindFindingResolved, sev: Info, dedupe: "finding_resolved:audit:expiring:k4:*", mustSay: []string{"Resolved: expiring key expiring:k4", "First seen: 2026-11-25", "Resolved: 2026-11-27"}, mustNotSay: nil},
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
		{name: "same audit, same day, any order", a: AuditDigestMessage(d1), b: AuditDigestMessage(d1b), same: true},
		{name: "different findings", a: AuditDigestMessage(d1), b: AuditDigestMessage(d2), same: false},
		{name: "next day", a: AuditDigestMessage(d1), b: AuditDigestMessage(d3), same: false},
		{name: "same rotations", a: RotationDigestMessage(r1), b: RotationDigestMessage(r1b), same: true},
		{name: "other rotations", a: RotationDigestMessage(r1), b: RotationDigestMessage(r2), same: false},
		{name: "budget threshold differs", a: BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-11", Threshold: 0.5}),
			b: BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-11", Threshold: 0.8}), same: false},
		{name: "budget month differs", a: BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-11", Threshold: 0.8}),
			b: BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-12", Threshold: 0.8}), same: false},
		{name: "budget same event, new spend", a: BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-11", Threshold: 0.8, SpendUSD: 40}),
			b: BudgetAlertMessage(BudgetAlert{Workspace: "w", Month: "2026-11", Threshold: 0.8, SpendUSD: 45}), same: true},
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
	}{{in: "info", want: Info, ok: true}, {in: "WARNING", want: Warning, ok: true}, {in: " critical ", want: Critical, ok: true}, {in: "crit", want: Critical, ok: true}, {in: "loud", want: Info, ok: false}} {
		got, err := ParseSeverity(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseSeverity(%q) = %v, %v", tc.in, got, err)
		}
	}
	for _, tc := range []struct {
		n  Notification
		ok bool
	}{
		{n: Notification{Kind: "k", Title: "t"}, ok: true},
		{n: Notification{Kind: "k", Text: "t"}, ok: true},
		{n: Notification{Title: "t"}, ok: false},
		{n: Notification{Kind: "k"}, ok: false},
		{n: Notification{Kind: "k", Title: "t", Severity: 7}, ok: false},
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
