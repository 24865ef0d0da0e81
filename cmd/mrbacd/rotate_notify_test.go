package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/app"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// TestRotateCommandNotifies runs the one-shot `mrbacd rotate` against the
// sandbox with notify.slack pointed at a slacktest server: each pass that
// rotates sends one digest before the command exits, each failed rotation
// one critical message, a dry run nothing; no payload carries key material.
func TestRotateCommandNotifies(t *testing.T) {
	slack := testenv.Slack(t)
	t.Setenv("ROTATE_CMD_SLACK_TOKEN", "xoxb-rotate-cmd-test-token")
	w := newRotateWorldWith(t, fmt.Sprintf(
		"notify: {slack: {token_env: ROTATE_CMD_SLACK_TOKEN, api_url: %q, channel: \"#keys\"}}\n", slack.APIURL))

	steps := []struct {
		name     string
		fault    *sandbox.Fault
		args     []string
		wantCode int
		// want lists a substring per new Slack message, in order.
		want []string
	}{
		{name: "bootstrap: one digest", fault: nil, args: []string{"rotate", "--config", w.cfgPath}, wantCode: exitOK,
			want: []string{"Key rotation: 2 rotated, 0 failed, 0 not due"}},
		{name: "not due: nothing to say", fault: nil, args: []string{"rotate", "--config", w.cfgPath}, wantCode: exitOK, want: nil},
		{name: "dry run: nothing sent", fault: nil, args: []string{"rotate", "--config", w.cfgPath, "--force", "--dry-run"}, wantCode: exitOK, want: nil},
		{name: "forced: one digest", fault: nil, args: []string{"rotate", "--config", w.cfgPath, "--force", "--json"}, wantCode: exitOK,
			want: []string{"Key rotation: 2 rotated, 0 failed, 0 not due"}},
		{name: "verify fails: one loud message per key", fault: &sandbox.Fault{Route: "GET /v1/models", Status: 401},
			args: []string{"rotate", "--config", w.cfgPath, "--force"}, wantCode: exitFailed,
			want: []string{"Rotation of one failed at verify", "Rotation of two failed at verify"}},
	}
	seen := 0
	for _, s := range steps {
		if s.fault != nil {
			w.sb.InjectFault(*s.fault)
		}
		code, out, errOut := w.run(s.args...)
		w.sb.ClearFaults()
		if code != s.wantCode {
			t.Fatalf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", s.name, code, s.wantCode, out, errOut)
		}
		// The command flushes before exiting: the messages are there now.
		msgs := slack.Messages()
		if got := len(msgs) - seen; got != len(s.want) {
			t.Fatalf("%s: %d new Slack messages, want %d: %+v\nstderr:\n%s", s.name, got, len(s.want), msgs[seen:], errOut)
		}
		for i, want := range s.want {
			if m := msgs[seen+i]; !strings.Contains(m.Text, want) || m.Channel != "#keys" {
				t.Errorf("%s: message %d to %s = %q, want %q", s.name, i, m.Channel, m.Text, want)
			}
		}
		seen = len(msgs)
		if strings.Contains(out+errOut, "notifications are not delivered") {
			t.Errorf("%s: undelivered notifications:\n%s", s.name, errOut)
		}
	}

	// The digest names the keys and the new key ids; failures their step.
	msgs := slack.Messages()
	if !strings.Contains(msgs[0].Text, "one:") || !strings.Contains(msgs[0].Text, "two:") {
		t.Errorf("digest lacks the keys: %q", msgs[0].Text)
	}
	for _, m := range msgs {
		payload := m.Text + m.Blocks + m.Attachments + url.Values(m.Form).Encode()
		for _, k := range w.sb.Keys() {
			if k.Plaintext != "" && strings.Contains(payload, k.Plaintext) {
				t.Fatalf("key %s's plaintext in a Slack message: %q", k.ID, m.Text)
			}
		}
		if strings.Contains(payload, w.sb.AdminKey()) {
			t.Fatal("the admin key in a Slack message")
		}
	}
}

// TestRotateCommandQueuesWhenSlackIsDown: a rotation's digest that cannot
// be delivered is not lost nor a failure of the rotation: it stays queued
// in the journal and the next run delivers it.
func TestRotateCommandQueuesWhenSlackIsDown(t *testing.T) {
	slack := testenv.Slack(t)
	t.Setenv("ROTATE_CMD_SLACK_TOKEN", "xoxb-rotate-cmd-test-token")
	w := newRotateWorldWith(t, fmt.Sprintf(
		"notify: {slack: {token_env: ROTATE_CMD_SLACK_TOKEN, api_url: %q, channel: \"#keys\"}}\n", slack.APIURL))
	// Slack refuses (a permanent-looking error is not retried for long).
	slack.SetDown(true)
	done := make(chan struct{})
	var code int
	var errOut string
	go func() {
		defer close(done)
		code, _, errOut = w.run("rotate", "--config", w.cfgPath)
	}()
	select {
	case <-done:
	case <-time.After(app.FlushTimeout + 30*time.Second):
		t.Fatal("rotate did not end")
	}
	if code != exitOK {
		t.Fatalf("exit %d with Slack down, want %d (notifications are not the job):\n%s", code, exitOK, errOut)
	}
	if !strings.Contains(errOut, "not delivered yet") {
		t.Fatalf("stderr does not say the notifications stay queued:\n%s", errOut)
	}
	slack.SetDown(false)
	// The next pass (nothing due) delivers the queued digest once its retry
	// is due (the outbox's first backoff is 1s to 1.2s).
	db, err := journal.OpenReadOnly(context.Background(), w.state)
	if err != nil {
		t.Fatal(err)
	}
	due, queued, err := db.NextDue(context.Background())
	db.Close()
	if err != nil || !queued {
		t.Fatalf("no digest queued in the journal (%v)", err)
	}
	testenv.WaitFor(t, 10*time.Second, "the digest's retry to come due", func() bool { return !time.Now().Before(due) })
	if code, _, errOut := w.run("rotate", "--config", w.cfgPath); code != exitOK {
		t.Fatalf("second rotate exit %d:\n%s", code, errOut)
	}
	msgs := slack.Messages()
	if len(msgs) != 1 || !strings.Contains(msgs[0].Text, "Key rotation: 2 rotated") {
		t.Fatalf("after Slack came back: %+v", msgs)
	}
}
