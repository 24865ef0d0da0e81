package daemon_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
)

const (
	slackBotToken = "xoxb-daemon-actions-test-token"
	slackOperator = "U0OPERATOR1"
)

// actionsBlockFor returns the index, among msg's actions blocks, of the one
// with an actionID button acting on keyID (-1: none).
func actionsBlockFor(t *testing.T, blocksJSON, keyID, actionID string) int {
	t.Helper()
	var blocks []struct {
		Type     string `json:"type"`
		Elements []struct {
			ActionID string `json:"action_id"`
			Value    string `json:"value"`
		} `json:"elements"`
	}
	if err := json.Unmarshal([]byte(blocksJSON), &blocks); err != nil {
		return -1
	}
	i := 0
	for _, b := range blocks {
		if b.Type != "actions" {
			continue
		}
		for _, e := range b.Elements {
			if e.ActionID == actionID && strings.Contains(e.Value, keyID) {
				return i
			}
		}
		i++
	}
	return -1
}

// TestDaemonSlackActions: the daemon opens Socket Mode itself; the audit
// digest it posts carries buttons; an operator's confirmed Revoke of an
// undeclared key deletes it on the platform and shows in `ctl history`
// with the Slack user; the state gauges are exported; no token leaks.
func TestDaemonSlackActions(t *testing.T) {
	sb := startSandbox(t)
	slack := testenv.Slack(t)
	sm := testenv.SocketMode(t, slack)
	e := newEnv(t, sb)
	e.writeConfig(cfgOpts{propagationWait: "10ms", extra: fmt.Sprintf(`notify:
  slack:
    token_env: SLACK_BOT_TOKEN
    app_token_env: SLACK_APP_TOKEN
    api_url: %q
    channel: C0ALERTS1
    operators:
      - {user: %s, actions: [rotate, revoke, snooze, acknowledge]}
`, slack.APIURL, slackOperator)})
	p := e.start("SLACK_BOT_TOKEN="+slackBotToken, "SLACK_APP_TOKEN="+sm.AppToken)
	sm.WaitConnected(t, 1)

	if r := e.ctl("run", "rotate", "--wait"); r.code != 0 {
		t.Fatalf("bootstrap: %+v", r)
	}
	stray, err := sb.AddKey("stray-laptop-key", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.ctl("run", "audit", "--wait"); r.code != 0 {
		t.Fatalf("audit: %+v", r)
	}
	var digest testenv.SlackMessage
	block := -1
	testenv.WaitFor(t, 10*time.Second, "the audit digest with buttons", func() bool {
		for _, m := range slack.Messages() {
			if b := actionsBlockFor(t, m.Blocks, stray.ID, "mrbacd_revoke"); b >= 0 {
				digest, block = m, b
				return true
			}
		}
		return false
	})
	env := sm.Click(t, digest, testenv.Click{User: slackOperator, ActionID: "mrbacd_revoke", Block: block, Confirmed: true})
	sm.WaitAck(t, env, 1)
	testenv.WaitFor(t, 10*time.Second, "the key revoked on the platform", func() bool {
		k, _ := sb.Key(stray.ID)
		return k.Deleted
	})
	testenv.WaitFor(t, 10*time.Second, "the action in ctl history", func() bool {
		r := e.ctl("history")
		return strings.Contains(r.stdout, "slack:revoke") && strings.Contains(r.stdout, "slack:"+slackOperator)
	})
	sm.WaitUpdates(t, 1)

	_, body := httpGet(t, "http://"+p.metricsAddr(t)+"/metrics")
	for _, want := range []string{`mrbacd_managed_key_age_seconds{key="key-00",workspace="dev-workspace"}`,
		`mrbacd_job_last_success_timestamp_seconds{job="audit"}`, "mrbacd_leader 1", `mrbacd_findings_open{kind="undeclared"`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	logs := p.stderr.String() + p.stdout.String()
	e.noLeak("daemon logs", logs)
	for _, tok := range []string{slackBotToken, sm.AppToken} {
		if strings.Contains(logs, tok) || strings.Contains(body, tok) {
			t.Errorf("a Slack token leaked into the logs or metrics")
		}
	}
	if code, _ := p.stop(t, syscall.SIGTERM, 6*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}
