package findings

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/audit"
	"github.com/mrbacd/mrbacd/jobs/budget"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
	"github.com/mrbacd/mrbacd/notify"
	slacknotify "github.com/mrbacd/mrbacd/notify/slack"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
)

// seed: healthy managed keys, one key of each finding kind, and usage that
// takes dev-workspace to 84% of its $50 budget.
const seed = `
now: 2026-11-27T02:30:00Z
workspaces:
  - {uuid: f0000000-0000-4000-8000-000000000001, name: dev-workspace, spend_limit: 50}
  - {uuid: f0000000-0000-4000-8000-000000000002, name: ml-workspace, spend_limit: 500}
  - {uuid: f0000000-0000-4000-8000-000000000003, name: shadow-workspace}
keys:
  - {key_id: e0000000-0000-4000-8000-000000000001, name: dev-team-key-20261101-ab12cd34, workspace: dev-workspace, created_at: 2026-11-01T03:00:00Z, last_used: 2026-11-26, expiration_date: 2027-03-01}
  - {key_id: e0000000-0000-4000-8000-000000000002, name: ml-key-20261120-aa00bb11, workspace: ml-workspace, created_at: 2026-11-20T03:00:00Z, last_used: 2026-11-27, expiration_date: 2027-03-20}
  - {key_id: e0000000-0000-4000-8000-000000000003, name: batch-report, workspace: dev-workspace, created_at: 2026-05-01T00:00:00Z, last_used: 2026-09-15}
  - {key_id: e0000000-0000-4000-8000-000000000004, name: billing-key-20260801-deadbeef, workspace: ml-workspace, created_at: 2026-08-01T03:00:00Z, last_used: 2026-11-26}
  - {key_id: e0000000-0000-4000-8000-000000000005, name: ml-batch-key-20261010-feed0001, workspace: ml-workspace, created_at: 2026-10-10T03:00:00Z, last_used: 2026-11-26, expiration_date: 2026-12-03}
  - {key_id: e0000000-0000-4000-8000-000000000006, name: laptop-test, workspace: dev-workspace, created_at: 2026-11-10T00:00:00Z, last_used: 2026-11-25}
  - {key_id: e0000000-0000-4000-8000-000000000007, name: dev-team-key-20261015-0badf00d, workspace: dev-workspace, created_at: 2026-10-15T03:00:00Z, last_used: 2026-11-26}
usage:
  - {workspace: dev-workspace, month: "2026-11", model: mistral-small-latest, prompt_tokens: 20000000, completion_tokens: 65000000}
  - {workspace: ml-workspace, month: "2026-11", model: codestral-latest, prompt_tokens: 1000000, completion_tokens: 1000000}
`

const configTmpl = `
mistral: {base_url: %[2]q, admin_key_env: FINDINGS_TEST_ADMIN_KEY}
state: {path: %[1]s/state.db}
secrets: {file: {dir: %[1]s/secrets}}
notify:
  slack:
    token_env: FINDINGS_TEST_SLACK_TOKEN
    api_url: %[3]q
    channel: "#mistral-alerts"
    channels: {critical: "#mistral-critical", warning: "#mistral-warning", info: "#mistral-info"}
workspaces:
  - {name: dev-workspace, monthly_budget_usd: 50}
  - {name: ml-workspace, monthly_budget_usd: 500}
  - {name: research-workspace, monthly_budget_usd: 10}
keys:
  - {name: dev-team-key, workspace: dev-workspace, owner_user_id: u1, store: {backend: file, path: mistral/dev-team}}
  - {name: ml-key, workspace: ml-workspace, owner_user_id: u1, store: {backend: file, path: mistral/ml}, rotate_every: 30d}
  - {name: billing-key, workspace: ml-workspace, owner_user_id: u1, store: {backend: file, path: mistral/billing}}
  - {name: ml-batch-key, workspace: ml-workspace, owner_user_id: u1, store: {backend: file, path: mistral/ml-batch}}
  - {name: search-key, workspace: dev-workspace, owner_user_id: u1, store: {backend: file, path: mistral/search}}
  - {name: vanished-key, workspace: dev-workspace, owner_user_id: u1, store: {backend: file, path: mistral/vanished}}
jobs:
  budget: {thresholds: [0.5, 0.8, 1.0]}
`

// wantFindings are exactly the findings the seed raises, each with a token
// its digest line must show.
var wantFindings = map[string]string{
	"drift/entry/search-key":                                          "search-key",
	"drift/e0000000-0000-4000-8000-000000000007":                      "e0000000-0000-4000-8000-000000000007",
	"drift/e0000000-0000-4000-8000-000000000009":                      "e0000000-0000-4000-8000-000000000009",
	"expiring/e0000000-0000-4000-8000-000000000005":                   "e0000000-0000-4000-8000-000000000005",
	"overdue/e0000000-0000-4000-8000-000000000004":                    "e0000000-0000-4000-8000-000000000004",
	"undeclared/e0000000-0000-4000-8000-000000000008":                 "e0000000-0000-4000-8000-000000000008",
	"undeclared/e0000000-0000-4000-8000-000000000006":                 "e0000000-0000-4000-8000-000000000006",
	"undeclared/e0000000-0000-4000-8000-000000000003":                 "e0000000-0000-4000-8000-000000000003",
	"unused/e0000000-0000-4000-8000-000000000003":                     "e0000000-0000-4000-8000-000000000003",
	"workspace_drift/missing/research-workspace":                      "research-workspace",
	"workspace_drift/undeclared/f0000000-0000-4000-8000-000000000003": "shadow-workspace",
}

const slackToken = "xoxb-findings-test-token-0123456789"

type env struct {
	sb      *sandbox.Server
	client  *mistral.Client
	slack   *testenv.SlackServer
	cfg     *config.Config
	store   *file.Store
	journal *journal.DB
	outbox  *notify.Outbox
	logs    *testenv.LogBuffer
	log     *slog.Logger
	now     time.Time
	sent    int // Slack messages seen so far
}

func newEnv(t *testing.T) *env {
	t.Helper()
	sd, err := sandbox.ParseSeed([]byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	// shadow-workspace holds a key no config declares.
	sd.Keys = append(sd.Keys, sandbox.SeedKey{KeyID: "e0000000-0000-4000-8000-000000000008", Name: "shadow-app", Workspace: "shadow-workspace",
		CreatedAt: "2026-11-01T00:00:00Z", LastUsed: "2026-11-26"})
	e := &env{logs: &testenv.LogBuffer{}, now: time.Date(2026, 11, 27, 2, 30, 0, 0, time.UTC)}
	e.log = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.sb = sandbox.New(sandbox.Options{Seed: sd, Logger: e.log})
	srv := sandboxtest.Serve(t, e.sb, true)
	e.slack = testenv.Slack(t)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "mrbacd.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(configTmpl, dir, srv.URL, e.slack.APIURL)), 0o600); err != nil {
		t.Fatal(err)
	}
	if e.cfg, err = config.Load(cfgPath); err != nil {
		t.Fatalf("config: %v", err)
	}
	t.Setenv("FINDINGS_TEST_ADMIN_KEY", e.sb.AdminKey())
	t.Setenv("FINDINGS_TEST_SLACK_TOKEN", slackToken)
	admin, err := config.ResolveSecret(e.cfg.Mistral.AdminKeyEnv, e.cfg.Mistral.AdminKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if e.client, err = mistral.New(mistral.Options{BaseURL: e.cfg.Mistral.BaseURL, AdminKey: mistral.Secret(admin), Logger: e.log, MaxRetries: -1}); err != nil {
		t.Fatal(err)
	}
	if e.store, err = file.New(e.cfg.Secrets.File.Dir); err != nil {
		t.Fatal(err)
	}
	if e.journal, err = journal.Open(context.Background(), e.cfg.State.Path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.journal.Close() })
	sc := e.cfg.Notify.Slack
	token, err := config.ResolveSecret(sc.TokenEnv, sc.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	sender, err := slacknotify.New(slacknotify.Options{Token: token, APIURL: sc.APIURL, Channel: sc.Channel,
		Channels: slacknotify.Channels{Critical: sc.Channels.Critical, Warning: sc.Channels.Warning, Info: sc.Channels.Info},
		Logger:   e.log})
	if err != nil {
		t.Fatal(err)
	}
	e.outbox = notify.NewOutbox(e.journal, sender, notify.OutboxOptions{Logger: e.log, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})

	for path, name := range map[string]string{
		"mistral/dev-team": "dev-team-key-20261101-ab12cd34", "mistral/ml": "ml-key-20261120-aa00bb11",
		"mistral/billing": "billing-key-20260801-deadbeef", "mistral/ml-batch": "ml-batch-key-20261010-feed0001",
	} {
		e.publish(t, path, name)
	}
	_, err = e.store.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: "mistral/vanished"},
		Record: secrets.Record{APIKey: "sk-vanished-plaintext-abcdef", KeyID: "e0000000-0000-4000-8000-000000000009", KeyName: "vanished-key-20260901-11112222"}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) publish(t *testing.T, path, keyName string) {
	t.Helper()
	for _, k := range e.sb.Keys() {
		if k.Name == keyName {
			_, err := e.store.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: path},
				Record: secrets.Record{APIKey: k.Plaintext, KeyID: k.ID, KeyName: k.Name, CreatedAt: k.CreatedAt, RotationID: "seed"}})
			if err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no sandbox key %s", keyName)
}

// night runs the audit and the budget poll at e.now, drains the outbox and
// returns the Slack messages this night sent.
func (e *env) night(t *testing.T) (*audit.Report, *budget.Report, []testenv.SlackMessage) {
	t.Helper()
	a, b := e.runJobs(t)
	dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.outbox.Drain(dctx); err != nil {
		t.Fatalf("drain outbox: %v", err)
	}
	all := e.slack.Messages()
	msgs := all[e.sent:]
	e.sent = len(all)
	return a, b, msgs
}

// runJobs runs the audit and the budget poll at e.now; their notifications
// are queued in the outbox.
func (e *env) runJobs(t *testing.T) (*audit.Report, *budget.Report) {
	t.Helper()
	ctx := context.Background()
	e.sb.SetNow(e.now)
	clock := func() time.Time { return e.now }
	aj := &audit.Job{Config: e.cfg, Platform: e.client,
		Records: audit.StoreRecords{Stores: map[string]secrets.Store{"file": e.store}},
		Journal: e.journal, Notifier: audit.OutboxNotifier{Outbox: e.outbox, Top: 20}, Logger: e.log, Now: clock}
	ares, err := aj.Run(ctx, jobs.Request{RunID: 1, Trigger: "cron"})
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	bj := &budget.Job{Config: e.cfg, Platform: e.client, Journal: e.journal,
		Notifier: budget.OutboxNotifier{Outbox: e.outbox, Now: clock}, Logger: e.log, Now: clock}
	bres, err := bj.Run(ctx, jobs.Request{RunID: 2, Trigger: "cron"})
	if err != nil {
		t.Fatalf("budget: %v", err)
	}
	return ares.Details.(*audit.Report), bres.Details.(*budget.Report)
}

// byKind splits messages by the notification kind in their metadata.
func byKind(t *testing.T, msgs []testenv.SlackMessage) map[string][]testenv.SlackMessage {
	t.Helper()
	out := map[string][]testenv.SlackMessage{}
	for _, m := range msgs {
		kind := ""
		for _, k := range []string{notify.KindAuditDigest, notify.KindBudgetForecast, notify.KindBudgetAlert, notify.KindFindingResolved} {
			if strings.Contains(m.Form.Get("metadata"), `"`+k+`"`) {
				kind = k
				break
			}
		}
		if kind == "" {
			t.Fatalf("message without a known kind in its metadata: %q / %q", m.Text, m.Form.Get("metadata"))
		}
		out[kind] = append(out[kind], m)
	}
	return out
}

func TestFindingsToOnCall(t *testing.T) {
	e := newEnv(t)

	// Night 1: every finding is new; dev-workspace is past 80%.
	arep, brep, msgs := e.night(t)
	if len(arep.Findings) != len(wantFindings) {
		var got []string
		for _, f := range arep.Findings {
			got = append(got, f.ID)
		}
		t.Fatalf("audit findings = %v\nwant %d: %v", got, len(wantFindings), wantFindings)
	}
	for _, f := range arep.Findings {
		if _, ok := wantFindings[f.ID]; !ok {
			t.Errorf("unexpected finding %s: %s", f.ID, f.Detail)
		}
	}
	if len(brep.Alerts) != 1 || brep.Alerts[0].Dedupe != "budget/dev-workspace/2026-11/0.8" {
		t.Fatalf("budget alerts = %+v", brep.Alerts)
	}
	kinds := byKind(t, msgs)
	if len(msgs) != 2 || len(kinds[notify.KindAuditDigest]) != 1 || len(kinds[notify.KindBudgetAlert]) != 1 {
		t.Fatalf("night 1 sent %d messages: %v", len(msgs), texts(msgs))
	}
	digest := kinds[notify.KindAuditDigest][0]
	if digest.Channel != "#mistral-critical" {
		t.Errorf("digest with critical findings went to %s", digest.Channel)
	}
	for id, token := range wantFindings {
		kind := id[:strings.Index(id, "/")]
		if !strings.Contains(digest.Text, kind+": ") || !strings.Contains(digest.Text, token) {
			t.Errorf("digest does not report %s (%s):\n%s", id, token, digest.Text)
		}
	}
	// No finding is about a healthy key (e0000000-0000-4000-8000-000000000001 may be named as the key an
	// orphan's record points at, never as a finding's subject).
	for _, healthy := range []string{"(e0000000-0000-4000-8000-000000000001)", "(e0000000-0000-4000-8000-000000000002)", "dev-team-key-20261101-ab12cd34", "ml-key-20261120-aa00bb11"} {
		for _, m := range msgs {
			if strings.Contains(m.Text, healthy) || strings.Contains(m.Blocks, healthy) {
				t.Errorf("healthy key %s appears in a message:\n%s", healthy, m.Text)
			}
		}
	}
	if digest.Blocks == "" || !strings.Contains(digest.Blocks, "New since the last audit") {
		t.Errorf("digest has no Block Kit sections: %q", digest.Blocks)
	}
	alert := kinds[notify.KindBudgetAlert][0]
	if alert.Channel != "#mistral-warning" || !strings.Contains(alert.Text, "dev-workspace") || !strings.Contains(alert.Text, "80%") ||
		!strings.Contains(alert.Text, "$42.00") {
		t.Errorf("budget alert in %s: %s", alert.Channel, alert.Text)
	}

	// Night 2: nothing changed: a digest of counts, no finding re-sent in
	// full, no budget alert again.
	e.now = e.now.Add(24 * time.Hour)
	_, brep, msgs = e.night(t)
	kinds = byKind(t, msgs)
	if len(msgs) != 1 || len(kinds[notify.KindAuditDigest]) != 1 {
		t.Fatalf("night 2 sent %v", texts(msgs))
	}
	digest = kinds[notify.KindAuditDigest][0]
	if strings.Contains(digest.Text, "New since the last audit") || strings.Contains(digest.Text, "Action:") {
		t.Errorf("night 2 re-sent findings in full:\n%s", digest.Text)
	}
	if !strings.Contains(digest.Text, fmt.Sprintf("0 new, %d open", len(wantFindings))) {
		t.Errorf("night 2 digest does not count the open findings:\n%s", digest.Text)
	}
	if digest.Channel != "#mistral-info" {
		t.Errorf("quiet digest went to %s", digest.Channel)
	}
	for _, a := range brep.Alerts {
		if a.First {
			t.Errorf("budget alert %s raised again", a.Dedupe)
		}
	}

	// The undeclared key is revoked by hand: night 3 announces it resolved.
	if err := e.client.DeleteKey(context.Background(), "e0000000-0000-4000-8000-000000000006"); err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(24 * time.Hour)
	_, _, msgs = e.night(t)
	if len(msgs) != 1 || !strings.Contains(msgs[0].Text, "Resolved since the last audit") ||
		strings.Count(msgs[0].Text, "laptop-test") != 1 || !strings.Contains(msgs[0].Text, "1 resolved") {
		t.Fatalf("night 3 sent %v", texts(msgs))
	}

	// Night 4: the resolution is not repeated.
	e.now = e.now.Add(24 * time.Hour)
	_, _, msgs = e.night(t)
	for _, m := range msgs {
		if strings.Contains(m.Text, "laptop-test") || strings.Contains(m.Text, "Resolved since") {
			t.Fatalf("night 4 repeated the resolution:\n%s", m.Text)
		}
	}

	// Running the same night again (a crash and rerun) sends nothing new.
	_, _, msgs = e.night(t)
	if len(msgs) != 0 {
		t.Fatalf("rerun of night 4 sent %v", texts(msgs))
	}

	assertNoSecrets(t, e)
}

func TestRevokeUnusedSaysSo(t *testing.T) {
	e := newEnv(t)
	e.cfg.Jobs.Audit.RevokeUnused = true
	arep, _, msgs := e.night(t)
	if len(arep.Revoked) != 1 || arep.Revoked[0].KeyID != "e0000000-0000-4000-8000-000000000003" {
		t.Fatalf("revoked %+v", arep.Revoked)
	}
	if ks, _ := e.sb.Key("e0000000-0000-4000-8000-000000000003"); !ks.Deleted {
		t.Fatal("e0000000-0000-4000-8000-000000000003 is still live")
	}
	digest := byKind(t, msgs)[notify.KindAuditDigest]
	if len(digest) != 1 || !strings.Contains(digest[0].Text, "Revoked (unused, undeclared)") ||
		!strings.Contains(digest[0].Text, "batch-report (e0000000-0000-4000-8000-000000000003)") {
		t.Fatalf("digest does not say what was revoked: %v", texts(msgs))
	}
	// The next night the key is gone and nothing about it is resolved or re-sent.
	e.now = e.now.Add(24 * time.Hour)
	_, _, msgs = e.night(t)
	for _, m := range msgs {
		if strings.Contains(m.Text, "batch-report") {
			t.Fatalf("night 2 mentions the revoked key again:\n%s", m.Text)
		}
	}
	assertNoSecrets(t, e)
}

func TestFindingsSurviveSlackOutage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// Slack rate-limits, then fails: the one-shot flush delivers nothing.
	e.slack.RateLimit(1, "1")
	e.slack.FailNext(3, 500)
	e.runJobs(t)
	if err := e.outbox.Flush(ctx); !errors.Is(err, notify.ErrUndelivered) {
		t.Fatalf("flush during the outage = %v, want ErrUndelivered", err)
	}
	if n := len(e.slack.Messages()); n != 0 {
		t.Fatalf("%d messages accepted during the outage", n)
	}
	// The process restarts: a new outbox over the same journal delivers
	// everything once Slack recovers, exactly once.
	sender, err := slacknotify.New(slacknotify.Options{Token: slackToken, APIURL: e.slack.APIURL, Channel: "#mistral-alerts"})
	if err != nil {
		t.Fatal(err)
	}
	e.outbox = notify.NewOutbox(e.journal, sender, notify.OutboxOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	// The same night re-run after the restart queues nothing new.
	e.runJobs(t)
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.outbox.Drain(dctx); err != nil {
		t.Fatalf("drain after recovery: %v", err)
	}
	kinds := byKind(t, e.slack.Messages())
	if len(e.slack.Messages()) != 2 || len(kinds[notify.KindAuditDigest]) != 1 || len(kinds[notify.KindBudgetAlert]) != 1 {
		t.Fatalf("after recovery Slack got %v", texts(e.slack.Messages()))
	}
	if e.slack.Attempts() < 6 {
		t.Fatalf("only %d attempts: the outage was not exercised", e.slack.Attempts())
	}
	assertNoSecrets(t, e)
}

// assertNoSecrets scans every Slack payload and log line for key plaintext,
// the admin key and the Slack token.
func assertNoSecrets(t *testing.T, e *env) {
	t.Helper()
	secretsIssued := []string{e.sb.AdminKey(), slackToken, "sk-vanished-plaintext-abcdef"}
	for _, k := range e.sb.Keys() {
		secretsIssued = append(secretsIssued, k.Plaintext)
	}
	var hay strings.Builder
	for _, m := range e.slack.Messages() {
		for k, vs := range m.Form {
			if k == "token" {
				continue
			}
			hay.WriteString(strings.Join(vs, "\n"))
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "audit done") || !strings.Contains(logs, "budget workspace") {
		t.Fatal("job logs not captured")
	}
	hay.WriteString(logs)
	// The journal (outbox payloads, findings) too, WAL included.
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(e.cfg.State.Path + suffix)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		hay.Write(b)
	}
	for _, s := range secretsIssued {
		if s == "" {
			continue
		}
		if strings.Contains(hay.String(), s) {
			t.Errorf("secret %.8s... found in a Slack payload, a log line or the journal", s)
		}
	}
	if len(secretsIssued) < 9 {
		t.Fatalf("only %d secrets to look for", len(secretsIssued))
	}
}

func texts(msgs []testenv.SlackMessage) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Channel+": "+m.Text)
	}
	return out
}
