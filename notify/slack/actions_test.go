package slack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/notify"
	"github.com/mrbacd/mrbacd/notify/slack"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
)

const (
	operator = "U0OPERATOR1"
	snoozer  = "U0SNOOZER1" // may snooze and acknowledge only
	stranger = "U0STRANGER1"
	channel  = "C0ALERTS1"
)

// actionsEnv is a daemon's worth of real parts: the Mistral sandbox, a
// journal, a file store, the rotate engine, slacktest with Socket Mode, the
// notifier with buttons and the action handler.
type actionsEnv struct {
	t       *testing.T
	sb      *sandbox.Server
	client  *mistral.Client
	db      *journal.DB
	eng     *rotate.Engine
	slack   *testenv.SlackServer
	sm      *testenv.SocketModeServer
	n       *slack.Notifier
	actions *slack.Actions
	logs    *testenv.LogBuffer
	managed sandbox.KeyState // the managed key's current platform key
	stop    func()
}

func newActionsEnv(t *testing.T) *actionsEnv {
	t.Helper()
	ctx := context.Background()
	e := &actionsEnv{t: t, logs: &testenv.LogBuffer{}}
	e.sb = sandbox.New(sandbox.Options{})
	srv := httptest.NewServer(e.sb)
	t.Cleanup(srv.Close)
	var err error
	e.client, err = mistral.New(mistral.Options{BaseURL: srv.URL, AdminKey: mistral.Secret(e.sb.AdminKey()),
		MaxRetries: 2, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e.db, err = journal.Open(ctx, filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.db.Close() })
	fs, err := file.New(filepath.Join(dir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	spec := rotate.KeySpec{Name: "dev-key", Workspace: sandbox.DefaultWorkspaceName, OwnerUserID: e.sb.Users()[0].ID,
		Backend: "file", Target: secrets.Target{Path: "mistral/dev-key"}, RotateEvery: 90 * 24 * time.Hour,
		PropagationWait: 10 * time.Millisecond, ExpirationGrace: 30 * 24 * time.Hour}
	e.eng, err = rotate.New(rotate.Deps{Platform: e.client, Stores: map[string]secrets.Store{"file": fs}, Journal: e.db, Logger: logger},
		rotate.Options{VerifyTimeout: 500 * time.Millisecond, PublishTimeout: 200 * time.Millisecond, MinBackoff: 5 * time.Millisecond}, []rotate.KeySpec{spec})
	if err != nil {
		t.Fatal(err)
	}
	// Bootstrap: mrbacd creates and publishes dev-key's first platform key.
	if res, err := e.eng.Run(ctx, jobs.Request{Trigger: "cli", Key: "dev-key", Force: true}); err != nil || res.Failed {
		t.Fatalf("bootstrap: %+v, %v", res, err)
	}
	e.managed = e.liveManaged()

	e.slack = testenv.Slack(t)
	e.sm = testenv.SocketMode(t, e.slack)
	e.n = newNotifier(t, slack.Options{Token: token, APIURL: e.slack.APIURL, Channel: channel, Buttons: true, Logger: logger})
	access := &config.Slack{Operators: []config.SlackOperator{
		{User: operator, Actions: config.SlackActions},
		{User: snoozer, Actions: []string{config.ActionSnooze, config.ActionAcknowledge}},
	}}
	actor := slack.PlatformActor{
		Platform: e.client,
		Managed:  []func(context.Context, string) (string, bool, error){e.db.ManagedKeyName},
		Rotate: func(ctx context.Context, name, by string) (string, error) {
			res, err := e.eng.Run(ctx, jobs.Request{Trigger: by, Key: name, Force: true})
			if err == nil && res.Failed {
				err = fmt.Errorf("%s", res.Summary)
			}
			return res.Summary, err
		},
	}
	e.actions, err = slack.NewActions(slack.ActionsOptions{BotToken: token, AppToken: e.sm.AppToken, APIURL: e.slack.APIURL,
		Keys: actor, Journal: e.db, Access: access, Logger: logger, MaxBackoff: 50 * time.Millisecond,
		Status: func(context.Context) (string, error) { return "JOB     LAST RUN\nrotate  ok", nil }})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.actions.Run(rctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(e.stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", e.logs.String())
		}
	})
	e.sm.WaitConnected(t, 1)
	return e
}

func (e *actionsEnv) liveManaged() sandbox.KeyState {
	e.t.Helper()
	for _, k := range e.sb.Keys() {
		if !k.Deleted && strings.HasPrefix(k.Name, "dev-key-") {
			return k
		}
	}
	e.t.Fatal("no live managed key")
	return sandbox.KeyState{}
}

// post sends msg through the notifier and returns it as Slack holds it.
func (e *actionsEnv) post(msg notify.Notification) testenv.SlackMessage {
	e.t.Helper()
	before := len(e.slack.Messages())
	if err := e.n.Send(context.Background(), msg); err != nil {
		e.t.Fatal(err)
	}
	return e.slack.Messages()[before]
}

// digest is an audit digest whose new findings are fs.
func digest(fs ...journal.Finding) notify.Notification {
	return notify.AuditDigestMessage(notify.AuditDigest{At: time.Now(), Keys: len(fs), Workspaces: 1,
		Delta: journal.FindingsDelta{New: fs}})
}

func finding(kind, keyID, subject string) journal.Finding {
	return journal.Finding{ID: kind + "/" + keyID, Kind: kind, Severity: "warning", Subject: subject,
		Detail: kind + " " + subject, Action: "look", FirstSeen: time.Now()}
}

// buttons lists each actions block's buttons: action_id and whether it
// carries a confirm dialog.
func buttons(t *testing.T, blocksJSON string) [][]string {
	t.Helper()
	var blocks []struct {
		Type     string `json:"type"`
		Elements []struct {
			ActionID string          `json:"action_id"`
			Confirm  json.RawMessage `json:"confirm"`
		} `json:"elements"`
	}
	if err := json.Unmarshal([]byte(blocksJSON), &blocks); err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, b := range blocks {
		if b.Type != "actions" {
			continue
		}
		var row []string
		for _, el := range b.Elements {
			s := strings.TrimPrefix(el.ActionID, "mrbacd_")
			if len(el.Confirm) > 0 {
				s += "!"
			}
			row = append(row, s)
		}
		out = append(out, row)
	}
	return out
}

// waitRun waits for n journal runs of a Slack action to finish and returns
// the action's runs.
func (e *actionsEnv) waitRun(action string, n int) []journal.Run {
	e.t.Helper()
	var runs []journal.Run
	testenv.WaitFor(e.t, 20*time.Second, fmt.Sprintf("%d finished slack:%s runs", n, action), func() bool {
		var err error
		runs, err = e.db.Runs(context.Background(), journal.RunFilter{Job: "slack:" + action})
		if err != nil {
			e.t.Fatal(err)
		}
		finished := 0
		for _, r := range runs {
			if r.Status != journal.RunRunning {
				finished++
			}
		}
		return finished >= n
	})
	return runs
}

// waitReplies waits for at least n replies in msg's thread (the reply is
// posted after the run is journaled) and returns them.
func (e *actionsEnv) waitReplies(msg testenv.SlackMessage, n int) []string {
	e.t.Helper()
	testenv.WaitFor(e.t, 10*time.Second, fmt.Sprintf("%d replies in the thread", n), func() bool {
		return len(e.threadReplies(msg)) >= n
	})
	return e.threadReplies(msg)
}

// threadReplies returns the replies posted in msg's thread.
func (e *actionsEnv) threadReplies(msg testenv.SlackMessage) []string {
	var out []string
	for _, m := range e.slack.Messages() {
		if m.ThreadTS == msg.TS {
			out = append(out, m.Text)
		}
	}
	return out
}

func TestButtonsPerFindingKind(t *testing.T) {
	cases := []struct {
		name string
		msg  notify.Notification
		want string // rows of buttons; ! marks a confirm dialog
	}{
		{name: "unused key", msg: digest(finding("unused", "key-a", "old (key-a)")), want: "[[revoke! snooze acknowledge]]"},
		{name: "undeclared key", msg: digest(finding("undeclared", "key-b", "stray (key-b)")), want: "[[revoke! snooze acknowledge]]"},
		{name: "overdue key", msg: digest(finding("overdue", "key-c", "dev-key (key-c)")), want: "[[rotate! snooze acknowledge]]"},
		{name: "expiring key", msg: digest(finding("expiring", "key-d", "dev-key (key-d)")), want: "[[snooze acknowledge]]"},
		{name: "drift", msg: digest(finding("drift", "key-e", "dev-key (key-e)")), want: "[[snooze acknowledge]]"},
		{name: "workspace drift", msg: digest(journal.Finding{ID: "workspace_drift/missing/prod", Kind: "workspace_drift", Severity: "critical", Subject: "prod"}), want: "[[snooze acknowledge]]"},
		{name: "failed rotation", msg: notify.RotationFailureMessage(notify.RotationFailure{KeyName: "dev-key", RotationID: "r-1", Step: "verify", Error: "401", OldKeyID: "key-f"}), want: "[[rotate! snooze acknowledge]]"},
		{name: "two findings", msg: digest(finding("unused", "key-g", "a"), finding("overdue", "key-h", "b")), want: "[[rotate! snooze acknowledge] [revoke! snooze acknowledge]]"},
		{name: "budget alert: nothing to click", msg: notify.BudgetAlertMessage(notify.BudgetAlert{Workspace: "dev", Month: "2026-12", Threshold: 0.8, SpendUSD: 41, BudgetUSD: 50, At: time.Now()}), want: "[]"},
	}
	s := testenv.Slack(t)
	n := newNotifier(t, slack.Options{Token: token, APIURL: s.APIURL, Channel: channel, Buttons: true})
	plain := newNotifier(t, slack.Options{Token: token, APIURL: s.APIURL, Channel: channel})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := n.Send(context.Background(), c.msg); err != nil {
				t.Fatal(err)
			}
			msgs := s.Messages()
			if got := fmt.Sprint(buttons(t, msgs[len(msgs)-1].Blocks)); got != c.want {
				t.Errorf("buttons = %s, want %s", got, c.want)
			}
			// Without Socket Mode nobody would receive the clicks: no buttons.
			if err := plain.Send(context.Background(), c.msg); err != nil {
				t.Fatal(err)
			}
			msgs = s.Messages()
			if got := buttons(t, msgs[len(msgs)-1].Blocks); len(got) != 0 {
				t.Errorf("buttons without Socket Mode: %v", got)
			}
		})
	}
}

// An operator confirms Revoke on an undeclared key: the sandbox deletes it,
// the journal holds a run with the operator's id, the thread says so and the
// message's buttons give way to the outcome.
func TestRevokeUndeclaredKeyOnSandbox(t *testing.T) {
	e := newActionsEnv(t)
	stray, err := e.sb.AddKey("stray-laptop-key", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := e.post(digest(finding("undeclared", stray.ID, "stray-laptop-key ("+stray.ID+")")))
	env := e.sm.Click(t, msg, testenv.Click{User: operator, ActionID: "mrbacd_revoke", Confirmed: true})
	if ack := e.sm.WaitAck(t, env, 1); ack != nil && string(ack) != "null" {
		t.Errorf("ack payload %s", ack)
	}
	runs := e.waitRun("revoke", 1)
	if r := runs[0]; r.Status != journal.RunOK || r.Trigger != "slack:"+operator || !strings.Contains(r.Args, stray.ID) {
		t.Fatalf("run = %+v", r)
	}
	if k, _ := e.sb.Key(stray.ID); !k.Deleted {
		t.Fatal("the undeclared key is still live on the platform")
	}
	ups := e.sm.WaitUpdates(t, 1)
	if got := buttons(t, ups[0].Blocks); len(got) != 0 {
		t.Errorf("buttons still on the updated message: %v", got)
	}
	if !strings.Contains(ups[0].Blocks, "revoked") || !strings.Contains(ups[0].Blocks, `\u003c@`+operator+`\u003e`) {
		t.Errorf("updated message does not say what happened: %s", ups[0].Blocks)
	}
	replies := e.waitReplies(msg, 1)
	if len(replies) != 1 || !strings.Contains(replies[0], "revoked") || !strings.Contains(replies[0], fmt.Sprintf("run #%d", runs[0].ID)) {
		t.Errorf("thread replies = %q", replies)
	}
	a, err := e.db.Action(context.Background(), strings.Join([]string{channel, msg.TS, "undeclared/" + stray.ID, "revoke"}, "/"))
	if err != nil || a.Status != journal.ActionDone || a.User != operator || a.RunID != runs[0].ID {
		t.Errorf("journal action = %+v, %v", a, err)
	}
}

// Revoke on an unused managed key is refused and the answer says why; the
// key stays live; Rotate now on the overdue finding rotates it instead.
func TestManagedKeyIsRotatedNeverRevoked(t *testing.T) {
	e := newActionsEnv(t)
	old := e.managed
	msg := e.post(digest(finding("unused", old.ID, "dev-key ("+old.ID+")"), finding("overdue", old.ID, "dev-key ("+old.ID+")")))
	// Rows: overdue (rotate) first, then unused (revoke): critical/kind order.
	rows := buttons(t, msg.Blocks)
	revokeRow, rotateRow := 1, 0
	if rows[0][0] == "revoke!" {
		revokeRow, rotateRow = 0, 1
	}
	e.sm.Click(t, msg, testenv.Click{User: operator, ActionID: "mrbacd_revoke", Block: revokeRow, Confirmed: true})
	runs := e.waitRun("revoke", 1)
	if r := runs[0]; r.Status != journal.RunCanceled || !strings.Contains(r.Error, "managed by mrbacd") {
		t.Fatalf("revoke run = %+v", r)
	}
	if k, _ := e.sb.Key(old.ID); k.Deleted {
		t.Fatal("a managed key was revoked from a button")
	}
	if r := e.waitReplies(msg, 1); len(r) != 1 || !strings.Contains(r[0], "never revoked from Slack") || !strings.Contains(r[0], "Rotate now") {
		t.Fatalf("thread = %q", r)
	}

	e.sm.Click(t, msg, testenv.Click{User: operator, ActionID: "mrbacd_rotate", Block: rotateRow, Confirmed: true})
	runs = e.waitRun("rotate", 1)
	if r := runs[0]; r.Status != journal.RunOK || r.Trigger != "slack:"+operator {
		t.Fatalf("rotate run = %+v", r)
	}
	if cur := e.liveManaged(); cur.ID == old.ID {
		t.Fatal("rotation from Slack did not replace the key")
	}
	rot, ok, err := e.db.LastDoneRotation(context.Background(), "dev-key")
	if err != nil || !ok || rot.Trigger != "slack:"+operator || rot.OldKeyID != old.ID {
		t.Fatalf("last rotation = %+v %v %v", rot, ok, err)
	}
	// The refusal left the unused finding's buttons (snooze and acknowledge
	// still apply); the rotation replaced the overdue finding's.
	ups := e.sm.WaitUpdates(t, 1)
	if got := fmt.Sprint(buttons(t, ups[len(ups)-1].Blocks)); len(ups) != 1 || got != "[[revoke! snooze acknowledge]]" {
		t.Errorf("%d updates, buttons left: %v", len(ups), got)
	}
}

// A stranger's click is acknowledged, answered privately, and changes
// nothing; an operator lacking the action likewise.
func TestStrangerMayNotAct(t *testing.T) {
	e := newActionsEnv(t)
	stray, _ := e.sb.AddKey("stray", "", nil)
	msg := e.post(digest(finding("undeclared", stray.ID, "stray ("+stray.ID+")")))
	cases := []struct {
		name, user, action string
	}{
		{name: "stranger revokes", user: stranger, action: "mrbacd_revoke"},
		{name: "stranger snoozes", user: stranger, action: "mrbacd_snooze"},
		{name: "snooze-only operator revokes", user: snoozer, action: "mrbacd_revoke"},
	}
	for i, c := range cases {
		env := e.sm.Click(t, msg, testenv.Click{User: c.user, ActionID: c.action, Confirmed: true})
		e.sm.WaitAck(t, env, 1)
		eph := e.sm.WaitEphemerals(t, i+1)[i]
		if eph.Form.Get("user") != c.user || !strings.Contains(eph.Text, "may not") || !strings.Contains(eph.Text, "Nothing was changed") {
			t.Errorf("%s: ephemeral = %+v", c.name, eph)
		}
	}
	if k, _ := e.sb.Key(stray.ID); k.Deleted {
		t.Fatal("a stranger revoked a key")
	}
	runs, _ := e.db.Runs(context.Background(), journal.RunFilter{})
	for _, r := range runs {
		if strings.HasPrefix(r.Job, "slack:") {
			t.Errorf("a refused click left a run: %+v", r)
		}
	}
	sup, _ := e.db.Suppressions(context.Background(), "audit", time.Now())
	if len(sup) != 0 || len(e.sm.Updates()) != 0 || len(e.threadReplies(msg)) != 0 {
		t.Errorf("a refused click changed something: %v, %d updates", sup, len(e.sm.Updates()))
	}
}

// A redelivered envelope and a double click run the action once; the later
// clicks are told it was already done.
func TestActionRunsOnce(t *testing.T) {
	e := newActionsEnv(t)
	stray, _ := e.sb.AddKey("stray", "", nil)
	msg := e.post(digest(finding("undeclared", stray.ID, "stray ("+stray.ID+")")))
	env := e.sm.Click(t, msg, testenv.Click{User: operator, ActionID: "mrbacd_revoke", Confirmed: true})
	e.waitRun("revoke", 1)
	e.sm.Redeliver(t, env)
	e.sm.WaitAck(t, env, 2)
	eph := e.sm.WaitEphemerals(t, 1)
	if !strings.Contains(eph[0].Text, "Already done") || !strings.Contains(eph[0].Text, "<@"+operator+">") {
		t.Errorf("redelivery answer = %q", eph[0].Text)
	}
	// A double click: the button of the message not yet updated.
	e.sm.Click(t, msg, testenv.Click{User: operator, ActionID: "mrbacd_revoke", Confirmed: true, Stale: true})
	e.sm.WaitEphemerals(t, 2)
	runs, _ := e.db.Runs(context.Background(), journal.RunFilter{Job: "slack:revoke"})
	deletes := 0
	for _, ev := range e.sb.Events() {
		if ev.Kind == sandbox.EventDelete && ev.KeyID == stray.ID {
			deletes++
		}
	}
	if len(runs) != 1 || deletes != 1 || len(e.waitReplies(msg, 1)) != 1 {
		t.Fatalf("%d runs, %d deletes, %d replies; want 1 each", len(runs), deletes, len(e.threadReplies(msg)))
	}
}

// The connection drops, Slack asks for a reconnect, apps.connections.open
// fails once: the handler reconnects on its own and clicks still work.
func TestReconnects(t *testing.T) {
	e := newActionsEnv(t)
	e.sm.Drop()
	n := e.sm.WaitConnected(t, 2)
	e.sm.Disconnect(t)
	e.sm.RefuseOpens(1)
	e.sm.WaitConnected(t, n+1)
	msg := e.post(digest(finding("expiring", "key-x", "vendor (key-x)")))
	env := e.sm.Click(t, msg, testenv.Click{User: snoozer, ActionID: "mrbacd_snooze"})
	e.sm.WaitAck(t, env, 1)
	e.waitRun("snooze", 1)
	if e.sm.Opens() < 3 {
		t.Errorf("%d apps.connections.open calls, want at least 3", e.sm.Opens())
	}
}

// Snooze and Acknowledge are journaled, hold across a restart (a reopened
// journal) and keep the finding out of the next digest; /mrbacd status
// answers operators only. No token appears in any log or message.
func TestSnoozeAcknowledgeStatusNoLeak(t *testing.T) {
	e := newActionsEnv(t)
	ctx := context.Background()
	fs := []journal.Finding{finding("unused", "key-s", "snoozed (key-s)"), finding("drift", "key-k", "acked (key-k)"), finding("unused", "key-o", "open (key-o)")}
	delta, err := e.db.SyncFindings(ctx, "audit", fs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	msg := e.post(notify.AuditDigestMessage(notify.AuditDigest{At: time.Now(), Scope: "audit", Delta: delta}))
	rows := buttons(t, msg.Blocks)
	if len(rows) != 3 {
		t.Fatalf("rows = %v", rows)
	}
	// Digest order: drift, then unused key-o, then unused key-s.
	e.sm.Click(t, msg, testenv.Click{User: snoozer, ActionID: "mrbacd_acknowledge", Block: 0})
	e.sm.Click(t, msg, testenv.Click{User: snoozer, ActionID: "mrbacd_snooze", Block: 2})
	e.waitRun("acknowledge", 1)
	e.waitRun("snooze", 1)
	e.stop()

	again, err := journal.Open(ctx, e.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	next, _ := again.SyncFindings(ctx, "audit", fs, time.Now()) // never marked reported: all three are new again
	kept, quiet, err := again.WithoutSuppressed(ctx, "audit", next, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var keptIDs, quietIDs []string
	for _, f := range kept.New {
		keptIDs = append(keptIDs, f.ID)
	}
	for _, f := range quiet {
		quietIDs = append(quietIDs, f.ID)
	}
	if strings.Join(keptIDs, ",") != "unused/key-o" || len(quietIDs) != 2 {
		t.Errorf("kept %v, quiet %v", keptIDs, quietIDs)
	}
	sup, _ := again.Suppressions(ctx, "audit", time.Now().Add(8*24*time.Hour))
	if _, ok := sup["unused/key-s"]; ok {
		t.Error("the snooze outlived its 7 days")
	}
	if s, ok := sup["drift/key-k"]; !ok || s.By != "slack:"+snoozer {
		t.Errorf("acknowledgement = %+v", s)
	}
	for _, tok := range []string{token, e.sm.AppToken} {
		if strings.Contains(e.logs.String(), tok) {
			t.Errorf("a token is in the logs")
		}
		for _, m := range append(append(e.slack.Messages(), e.sm.Updates()...), e.sm.Ephemerals()...) {
			f := m.Form
			f.Del("token")
			if strings.Contains(f.Encode(), tok) {
				t.Errorf("a token is in a Slack message")
			}
		}
	}
}

func TestSlashStatus(t *testing.T) {
	e := newActionsEnv(t)
	cases := []struct {
		name, user, want string
	}{
		{name: "operator", user: operator, want: "rotate  ok"},
		{name: "stranger", user: stranger, want: "not an mrbacd operator"},
	}
	for _, c := range cases {
		env := e.sm.SlashCommand(t, c.user, channel, "/mrbacd", "status")
		var ack struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(e.sm.WaitAck(t, env, 1), &ack); err != nil || !strings.Contains(ack.Text, c.want) {
			t.Errorf("%s: ack = %+v (%v)", c.name, ack, err)
		}
	}
}

// Rotate now on a failed rotation's message rotates the key it names; a
// failing rotation leaves the buttons for another try and says why.
func TestRotateNowOnFailedRotation(t *testing.T) {
	e := newActionsEnv(t)
	old := e.managed
	msg := e.post(notify.RotationFailureMessage(notify.RotationFailure{KeyName: "dev-key", RotationID: "r-failed-1",
		Step: "verify", Error: "GET /v1/models: 401", OldKeyID: old.ID, At: time.Now()}))

	e.sb.InjectFault(sandbox.Fault{Route: "GET /v1/models", Status: 401})
	e.sm.Click(t, msg, testenv.Click{User: operator, ActionID: "mrbacd_rotate", Confirmed: true})
	runs := e.waitRun("rotate", 1)
	e.sb.ClearFaults()
	if r := runs[0]; r.Status != journal.RunFailed || !strings.Contains(r.Error, "rotation of dev-key failed") {
		t.Fatalf("failed rotate run = %+v", r)
	}
	if got := buttons(t, msg.Blocks); len(got) != 1 || len(e.sm.Updates()) != 0 {
		t.Fatalf("a failed action changed the buttons: %d updates", len(e.sm.Updates()))
	}
	e.sm.Click(t, msg, testenv.Click{User: operator, ActionID: "mrbacd_rotate", Confirmed: true})
	runs = e.waitRun("rotate", 2)
	if r := runs[0]; r.Status != journal.RunOK {
		t.Fatalf("retried rotate run = %+v", r)
	}
	if cur := e.liveManaged(); cur.ID == old.ID {
		t.Fatal("the key was not rotated")
	}
	replies := e.waitReplies(msg, 2)
	if len(replies) != 2 || !strings.Contains(replies[0], "it failed") || !strings.Contains(replies[1], "rotated") {
		t.Errorf("thread = %q", replies)
	}
	e.sm.WaitUpdates(t, 1)
}
