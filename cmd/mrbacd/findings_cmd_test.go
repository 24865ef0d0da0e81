package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
)

// findingsCmdEnv starts a sandbox (dates relative to now, as the commands
// use the wall clock) and a slacktest server, and writes a config for them.
func findingsCmdEnv(t *testing.T, extra string) (cfgPath string, slack *testenv.SlackServer, sb *sandbox.Server, dir string) {
	t.Helper()
	now := time.Now().UTC()
	day := func(d int) string { return now.AddDate(0, 0, d).Format(time.DateOnly) }
	seedYAML := fmt.Sprintf(`
workspaces:
  - {uuid: c0000000-0000-4000-8000-000000000001, name: dev-workspace}
keys:
  - {key_id: c0000000-0000-4000-8000-0000000000a1, name: stale-script, workspace: dev-workspace, created_at: %s, last_used: %s}
  - {key_id: c0000000-0000-4000-8000-0000000000a2, name: fresh-script, workspace: dev-workspace, created_at: %s, last_used: %s}
usage:
  - {workspace: dev-workspace, month: %q, model: mistral-small-latest, prompt_tokens: 0, completion_tokens: 75000000}
`, day(-200), day(-90), day(-5), day(0), now.Format("2006-01"))
	seed, err := sandbox.ParseSeed([]byte(seedYAML))
	if err != nil {
		t.Fatal(err)
	}
	sb = sandbox.New(sandbox.Options{Seed: seed})
	srv := sandboxtest.Serve(t, sb, true)
	slack = testenv.Slack(t)
	dir = t.TempDir()
	t.Setenv("FINDINGS_CMD_ADMIN_KEY", sb.AdminKey())
	t.Setenv("FINDINGS_CMD_SLACK_TOKEN", "xoxb-cmd-test-token")
	cfg := fmt.Sprintf(`
mistral: {base_url: %q, admin_key_env: FINDINGS_CMD_ADMIN_KEY, max_retries: 0}
state: {path: %s/state.db}
secrets: {file: {dir: %s/secrets}}
notify: {slack: {token_env: FINDINGS_CMD_SLACK_TOKEN, api_url: %q, channel: "#alerts"}}
workspaces:
  - {name: dev-workspace, monthly_budget_usd: 50}
%s`, srv.URL, dir, dir, slack.APIURL, extra)
	cfgPath = filepath.Join(dir, "mrbacd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, slack, sb, dir
}

func TestAuditAndBudgetCommands(t *testing.T) {
	cfgPath, slack, sb, dir := findingsCmdEnv(t, "")
	ctx := context.Background()

	// audit --dry-run --json: the report on stdout, nothing sent or recorded.
	var out, errb bytes.Buffer
	code := run(ctx, &cmdEnv{stdout: &out, stderr: &errb}, []string{"audit", "--config", cfgPath, "--json", "--dry-run"})
	if code != exitOK {
		t.Fatalf("audit --dry-run exit %d: %s", code, errb.String())
	}
	var res struct {
		Failed  bool
		Summary string
		Details struct {
			Findings []struct{ ID string }
		}
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("audit --json output is not JSON: %v\n%s", err, out.String())
	}
	var ids []string
	for _, f := range res.Details.Findings {
		ids = append(ids, f.ID)
	}
	// The platform's dev-workspace has no spend limit, the config a $50
	// budget: a spend-limit drift.
	want := "undeclared/c0000000-0000-4000-8000-0000000000a1 undeclared/c0000000-0000-4000-8000-0000000000a2 unused/c0000000-0000-4000-8000-0000000000a1 workspace_drift/spend_limit/dev-workspace"
	if strings.Join(sortedCopy(ids), " ") != want {
		t.Fatalf("findings %v, want %s", ids, want)
	}
	if n := len(slack.Messages()); n != 0 {
		t.Fatalf("dry run sent %d Slack messages", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.db")); !os.IsNotExist(err) {
		t.Fatalf("audit --dry-run created the journal (stat: %v)", err)
	}

	// audit: the digest reaches Slack before the command exits.
	out.Reset()
	errb.Reset()
	if code := run(ctx, &cmdEnv{stdout: &out, stderr: &errb}, []string{"audit", "--config", cfgPath}); code != exitOK {
		t.Fatalf("audit exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "stale-script (c0000000-0000-4000-8000-0000000000a1)") || !strings.Contains(out.String(), "SEVERITY") {
		t.Errorf("audit table:\n%s", out.String())
	}
	msgs := slack.Messages()
	if len(msgs) != 1 || !strings.Contains(msgs[0].Text, "Key audit") || !strings.Contains(msgs[0].Text, "stale-script") {
		t.Fatalf("slack got %d messages: %+v", len(msgs), msgs)
	}

	// budget: $45 of $50 crosses 80%: one alert.
	out.Reset()
	errb.Reset()
	if code := run(ctx, &cmdEnv{stdout: &out, stderr: &errb}, []string{"budget", "--config", cfgPath}); code != exitOK {
		t.Fatalf("budget exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "dev-workspace  $45.00  $50.00  none") || !strings.Contains(out.String(), "PLATFORM LIMIT") ||
		!strings.Contains(out.String(), "limit drift: config monthly_budget_usd $50.00, platform spend_limit none") {
		t.Errorf("budget table (want the platform limit beside the budget, and the drift):\n%s", out.String())
	}
	// The 80% alert, and (depending on the day of the month the test runs)
	// a forecast alert.
	msgs = slack.Messages()[1:]
	thresholds := 0
	for _, m := range msgs {
		if strings.Contains(m.Text, "passed 80%") {
			thresholds++
		} else if !strings.Contains(m.Text, "Budget forecast") {
			t.Errorf("unexpected budget message %q", m.Text)
		}
	}
	if thresholds != 1 || len(msgs) > 2 {
		t.Fatalf("budget sent %d messages, %d for 80%%", len(msgs), thresholds)
	}
	sent := len(slack.Messages())
	// budget --json --dry-run: the platform limit in the JSON report.
	out.Reset()
	if code := run(ctx, &cmdEnv{stdout: &out, stderr: &errb}, []string{"budget", "--config", cfgPath, "--json", "--dry-run"}); code != exitOK {
		t.Fatalf("budget --json exit %d: %s", code, errb.String())
	}
	var bres struct {
		Details struct {
			Workspaces []struct {
				Workspace     string
				BudgetUSD     float64 `json:"budget_usd"`
				PlatformLimit *struct {
					Value          *float64 `json:"value"`
					Currency       string   `json:"currency"`
					NoMonthlyLimit bool     `json:"no_monthly_limit"`
				} `json:"platform_limit"`
				LimitDrift string `json:"limit_drift"`
			}
		}
	}
	if err := json.Unmarshal(out.Bytes(), &bres); err != nil || len(bres.Details.Workspaces) != 1 {
		t.Fatalf("budget --json: %v\n%s", err, out.String())
	}
	if ws := bres.Details.Workspaces[0]; ws.BudgetUSD != 50 || ws.PlatformLimit == nil || !ws.PlatformLimit.NoMonthlyLimit ||
		ws.PlatformLimit.Currency != "USD" || ws.LimitDrift == "" {
		t.Fatalf("budget --json workspace %+v, want budget 50 beside the platform's limit (none, USD) and a drift", ws)
	}
	// Again: nothing new.
	if code := run(ctx, &cmdEnv{stdout: &out, stderr: &errb}, []string{"budget", "--config", cfgPath}); code != exitOK {
		t.Fatalf("budget exit %d", code)
	}
	if n := len(slack.Messages()); n != sent {
		t.Fatalf("second budget run sent again: %d messages, had %d", n, sent)
	}

	// Runs are journaled as cli runs.
	db, err := journal.Open(ctx, filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, job := range []string{"audit", "budget"} {
		r, ok, err := db.LastRun(ctx, job)
		if err != nil || !ok || r.Trigger != "cli" || r.Status != "ok" {
			t.Errorf("last %s run = %+v, %v, %v", job, r, ok, err)
		}
	}

	// A person shortens the key policy in the console: the next audit tells
	// Slack (a warning, with the actor), and the one after does not repeat it.
	if err := sb.Console(sandbox.ConsoleChange{KeyPolicy: &sandbox.KeyPolicy{MaxDays: 30}}); err != nil {
		t.Fatal(err)
	}
	for i, wantNews := range []bool{true, false} {
		sent = len(slack.Messages())
		if code := run(ctx, &cmdEnv{stdout: &out, stderr: &errb}, []string{"audit", "--config", cfgPath}); code != exitOK {
			t.Fatalf("audit after the policy change: exit %d: %s", code, errb.String())
		}
		news := 0
		for _, m := range slack.Messages()[sent:] {
			if strings.Contains(m.Text, "platform_change") && strings.Contains(m.Text, "api_key_policy.update by HUMAN") &&
				strings.Contains(m.Text, "[warning]") {
				news++
			}
		}
		if (news == 1) != wantNews || news > 1 {
			t.Fatalf("audit #%d after the policy change: %d Slack messages report it, want %v:\n%+v", i+1, news, wantNews, slack.Messages()[sent:])
		}
	}

	// No key plaintext on any output or Slack payload.
	hay := out.String() + errb.String()
	for _, m := range slack.Messages() {
		hay += m.Text + m.Blocks
	}
	for _, k := range sb.Keys() {
		if strings.Contains(hay, k.Plaintext) {
			t.Fatalf("key plaintext of %s leaked", k.Name)
		}
	}
}

func TestFindingsCommandsExitCodes(t *testing.T) {
	cfgPath, _, _, dir := findingsCmdEnv(t, "  - {name: research-workspace, monthly_budget_usd: 10}\n")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("workspaces: [{name: x, monthly_budget_usd: lots}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		errs string
	}{
		{name: "audit without config", args: []string{"audit"}, code: exitUsage, errs: "--config is required"},
		{name: "budget extra argument", args: []string{"budget", "--config", cfgPath, "now"}, code: exitUsage, errs: `unexpected argument "now"`},
		{name: "audit bad config", args: []string{"audit", "--config", bad}, code: exitUsage, errs: "bad.yaml:1:"},
		{name: "budget with a workspace missing on the platform fails", args: []string{"budget", "--config", cfgPath}, code: exitFailed, errs: ""},
		{name: "audit succeeds despite findings", args: []string{"audit", "--config", cfgPath}, code: exitOK, errs: ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), &cmdEnv{stdout: &out, stderr: &errb}, c.args)
			if code != c.code || !strings.Contains(errb.String(), c.errs) {
				t.Fatalf("exit %d, stderr %q; want %d containing %q", code, errb.String(), c.code, c.errs)
			}
		})
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
