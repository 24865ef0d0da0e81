package slack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/notify"
	"github.com/mrbacd/mrbacd/notify/slack"
)

const token = "xoxb-test-token-1234567890"

func newNotifier(t *testing.T, opts slack.Options) *slack.Notifier {
	t.Helper()
	n, err := slack.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return n
}

func note(sev notify.Severity, dedupe string) notify.Notification {
	n := notify.RotationFailureMessage(notify.RotationFailure{KeyName: "dev-team-key", RotationID: dedupe, Step: "verify",
		Error: "GET /v1/models: 401 <unauthorized> & co", OldKeyID: "key-old", NewKeyID: "key-new", NewKeyDeleted: true})
	n.Severity = sev
	n.Dedupe = dedupe
	return n
}

func TestNewValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts slack.Options
		ok   bool
	}{
		{name: "token and channel", opts: slack.Options{Token: token, Channel: "#alerts"}, ok: true},
		{name: "token and all severity channels", opts: slack.Options{Token: token, Channels: slack.Channels{Critical: "a", Warning: "b", Info: "c"}}, ok: true},
		{name: "webhook", opts: slack.Options{WebhookURL: "https://hooks.example/services/T/B/x"}, ok: true},
		{name: "nothing", opts: slack.Options{}, ok: false},
		{name: "both", opts: slack.Options{Token: token, WebhookURL: "https://x/services/a", Channel: "#a"}, ok: false},
		{name: "token without channel", opts: slack.Options{Token: token, Channels: slack.Channels{Critical: "a"}}, ok: false},
		{name: "webhook not a URL", opts: slack.Options{WebhookURL: "hooks.example/services/T/B/x"}, ok: false},
	} {
		_, err := slack.New(tc.opts)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
		if err != nil && strings.Contains(err.Error(), token) {
			t.Errorf("%s: error leaks the token", tc.name)
		}
	}
}

func TestBotTokenBlocksAndRouting(t *testing.T) {
	s := testenv.Slack(t)
	n := newNotifier(t, slack.Options{Token: token, APIURL: s.APIURL, Channel: "C0DEFAULT",
		Channels: slack.Channels{Critical: "C0CRITICAL", Info: "C0INFO"}})
	for i, tc := range []struct {
		sev  notify.Severity
		want string
	}{
		{sev: notify.Critical, want: "C0CRITICAL"},
		{sev: notify.Warning, want: "C0DEFAULT"}, // no warning channel: default
		{sev: notify.Info, want: "C0INFO"},
	} {
		msg := note(tc.sev, "r"+string(rune('0'+i)))
		if err := n.Send(t.Context(), msg); err != nil {
			t.Fatalf("send %s: %v", tc.sev, err)
		}
		got := s.Messages()[i]
		if got.Channel != tc.want {
			t.Errorf("%s went to %s, want %s", tc.sev, got.Channel, tc.want)
		}
		if got.Token != token {
			t.Errorf("token %q", got.Token)
		}
		// Fallback text: the whole message in plain text (Slack-escaped).
		wantText := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(msg.Text)
		if got.Text != wantText {
			t.Errorf("text = %q, want %q", got.Text, wantText)
		}
		var blocks []map[string]any
		if err := json.Unmarshal([]byte(got.Blocks), &blocks); err != nil {
			t.Fatalf("blocks: %v: %s", err, got.Blocks)
		}
		types := []string{}
		for _, b := range blocks {
			types = append(types, b["type"].(string))
		}
		if strings.Join(types, ",") != "header,section,section,section,section,context" {
			t.Errorf("block types = %v", types)
		}
		header := blocks[0]["text"].(map[string]any)
		if header["type"] != "plain_text" || !strings.Contains(header["text"].(string), "Rotation of dev-team-key failed at verify") {
			t.Errorf("header = %v", header)
		}
		fields := blocks[1]["fields"].([]any)
		if len(fields) != 5 || fields[0].(map[string]any)["text"] != "*Key*\ndev-team-key" {
			t.Errorf("fields = %v", fields)
		}
		errText := blocks[2]["text"].(map[string]any)["text"].(string)
		if errText != "*Error*\n• GET /v1/models: 401 &lt;unauthorized&gt; &amp; co" {
			t.Errorf("error section = %q (must be mrkdwn-escaped)", errText)
		}
		ctxText := blocks[5]["elements"].([]any)[0].(map[string]any)["text"].(string)
		if !strings.HasPrefix(ctxText, tc.sev.String()+" · rotation_failed") {
			t.Errorf("context = %q", ctxText)
		}
		var md struct {
			EventType    string         `json:"event_type"`
			EventPayload map[string]any `json:"event_payload"`
		}
		if err := json.Unmarshal([]byte(got.Form.Get("metadata")), &md); err != nil || md.EventType != slack.MetadataEventType || md.EventPayload["dedupe"] != msg.Dedupe {
			t.Errorf("metadata = %s (%v)", got.Form.Get("metadata"), err)
		}
	}
}

func TestBlocksLimits(t *testing.T) {
	long := strings.Repeat("é", 5000)
	n := notify.Notification{Kind: "k", Severity: notify.Warning, Title: long, Text: "t"}
	for i := 0; i < 23; i++ {
		n.Fields = append(n.Fields, notify.Field{Label: "l", Value: long})
	}
	for i := 0; i < 80; i++ {
		n.Sections = append(n.Sections, notify.Section{Title: "s", Lines: []string{long}})
	}
	blocks := slack.Blocks(n)
	if len(blocks) > 50 {
		t.Fatalf("%d blocks, Slack allows 50", len(blocks))
	}
	raw, _ := json.Marshal(blocks)
	var bs []map[string]any
	json.Unmarshal(raw, &bs)
	if l := len(bs[0]["text"].(map[string]any)["text"].(string)); l > 150 {
		t.Errorf("header %d bytes", l)
	}
	if f := bs[1]["fields"].([]any); len(f) != 10 || len(f[0].(map[string]any)["text"].(string)) > 2000 {
		t.Errorf("fields: %d, first %d bytes", len(f), len(f[0].(map[string]any)["text"].(string)))
	}
	if bs[len(bs)-1]["type"] != "context" {
		t.Errorf("last block %v, want context", bs[len(bs)-1]["type"])
	}
	for _, b := range bs {
		if b["type"] == "section" {
			if txt, ok := b["text"].(map[string]any); ok && len(txt["text"].(string)) > 3000 {
				t.Errorf("section text %d bytes", len(txt["text"].(string)))
			}
		}
	}
}

func TestWebhook(t *testing.T) {
	s := testenv.Slack(t)
	n := newNotifier(t, slack.Options{WebhookURL: s.WebhookURL})
	msg := note(notify.Critical, "r1")
	if err := n.Send(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	hooks := s.WebhookMessages()
	if len(hooks) != 1 {
		t.Fatalf("%d webhook messages", len(hooks))
	}
	var got struct {
		Text   string           `json:"text"`
		Blocks []map[string]any `json:"blocks"`
	}
	if err := json.Unmarshal(hooks[0], &got); err != nil {
		t.Fatal(err)
	}
	if got.Text != msg.Text || len(got.Blocks) != 6 || got.Blocks[0]["type"] != "header" || got.Blocks[5]["type"] != "context" {
		t.Errorf("webhook payload = %s", hooks[0])
	}
	if _, err := n.Delivered(t.Context(), msg, time.Now()); !errors.Is(err, slack.ErrCannotConfirm) {
		t.Errorf("Delivered in webhook mode = %v, want ErrCannotConfirm", err)
	}
}

func TestErrorClassification(t *testing.T) {
	type want struct {
		ok, permanent, uncertain bool
		retryAfter               time.Duration
	}
	tests := []struct {
		name    string
		webhook bool
		setup   func(s *testenv.SlackServer)
		want    want
	}{
		{name: "accepted", webhook: false, setup: func(*testenv.SlackServer) {}, want: want{ok: true}},
		{name: "429 with Retry-After", webhook: false, setup: func(s *testenv.SlackServer) { s.RateLimit(1, "3") }, want: want{retryAfter: 3 * time.Second}},
		{name: "429 without Retry-After", webhook: false, setup: func(s *testenv.SlackServer) { s.RateLimit(1, "") }, want: want{}},
		{name: "500", webhook: false, setup: func(s *testenv.SlackServer) { s.FailNext(1, 500) }, want: want{}},
		{name: "503", webhook: false, setup: func(s *testenv.SlackServer) { s.FailNext(1, 503) }, want: want{}},
		{name: "invalid_auth", webhook: false, setup: func(s *testenv.SlackServer) { s.InjectFaults(testenv.SlackFault{SlackError: "invalid_auth"}) }, want: want{permanent: true}},
		{name: "invalid_blocks", webhook: false, setup: func(s *testenv.SlackServer) { s.InjectFaults(testenv.SlackFault{SlackError: "invalid_blocks"}) }, want: want{permanent: true}},
		{name: "ratelimited code", webhook: false, setup: func(s *testenv.SlackServer) { s.InjectFaults(testenv.SlackFault{SlackError: "ratelimited"}) }, want: want{}},
		{name: "internal_error", webhook: false, setup: func(s *testenv.SlackServer) { s.InjectFaults(testenv.SlackFault{SlackError: "internal_error"}) }, want: want{}},
		{name: "routed channel missing: default channel used", webhook: false, setup: func(s *testenv.SlackServer) {
			s.InjectFaults(testenv.SlackFault{SlackError: "channel_not_found"})
		}, want: want{ok: true}},
		{name: "both channels missing", webhook: false, setup: func(s *testenv.SlackServer) {
			s.InjectFaults(testenv.SlackFault{SlackError: "channel_not_found"}, testenv.SlackFault{SlackError: "channel_not_found"})
		}, want: want{permanent: true}},
		{name: "connection dropped after request", webhook: false, setup: func(s *testenv.SlackServer) { s.InjectFaults(testenv.SlackFault{Drop: true}) }, want: want{uncertain: true}},
		{name: "server gone", webhook: false, setup: func(s *testenv.SlackServer) { s.Stop() }, want: want{}},
		{name: "webhook accepted", webhook: true, setup: func(*testenv.SlackServer) {}, want: want{ok: true}},
		{name: "webhook 429", webhook: true, setup: func(s *testenv.SlackServer) { s.RateLimit(1, "2") }, want: want{retryAfter: 2 * time.Second}},
		{name: "webhook 500", webhook: true, setup: func(s *testenv.SlackServer) { s.FailNext(1, 500) }, want: want{}},
		{name: "webhook 404 (revoked)", webhook: true, setup: func(s *testenv.SlackServer) { s.FailNext(1, 404) }, want: want{permanent: true}},
		{name: "webhook 403", webhook: true, setup: func(s *testenv.SlackServer) { s.FailNext(1, 403) }, want: want{permanent: true}},
		{name: "webhook server gone", webhook: true, setup: func(s *testenv.SlackServer) { s.Stop() }, want: want{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testenv.Slack(t)
			var logs bytes.Buffer
			opts := slack.Options{Token: token, APIURL: s.APIURL, Channel: "C0DEFAULT", Channels: slack.Channels{Critical: "C0CRITICAL"},
				Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
			if tc.webhook {
				opts = slack.Options{WebhookURL: s.WebhookURL, Logger: opts.Logger}
			}
			n := newNotifier(t, opts)
			tc.setup(s)
			err := n.Send(context.Background(), note(notify.Critical, "r1"))
			if tc.want.ok {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if !tc.webhook && s.Messages()[0].Channel == "C0DEFAULT" && !strings.Contains(logs.String(), "posting to the default channel") {
					t.Errorf("fallback not logged: %s", logs.String())
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			perm, unc, ra := notify.Classify(err)
			if perm != tc.want.permanent || unc != tc.want.uncertain || ra != tc.want.retryAfter {
				t.Errorf("Classify(%v) = permanent %v uncertain %v retryAfter %v; want %+v", err, perm, unc, ra, tc.want)
			}
			secretPath := s.WebhookURL[strings.Index(s.WebhookURL, "/services/"):]
			for _, leak := range []string{token, secretPath, "testenvwebhooksecret"} {
				if strings.Contains(err.Error(), leak) || strings.Contains(logs.String(), leak) {
					t.Errorf("error or log leaks %q: %v", leak, err)
				}
			}
		})
	}
}

func TestDelivered(t *testing.T) {
	s := testenv.Slack(t)
	s.ServeHistory(map[string]string{"C0ALERTS1": "alerts", "C0CRIT001": "crit"})
	n := newNotifier(t, slack.Options{Token: token, APIURL: s.APIURL, Channel: "#alerts", Channels: slack.Channels{Critical: "C0CRIT001"}})
	start := time.Now()
	sentWarn, sentCrit := note(notify.Warning, "sent-warning"), note(notify.Critical, "sent-critical")
	for _, m := range []notify.Notification{sentWarn, sentCrit} {
		if err := n.Send(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		msg     notify.Notification
		want    bool
		wantErr error
	}{
		{name: "sent to a channel configured by name", msg: sentWarn, want: true, wantErr: nil},
		{name: "sent to a channel configured by id", msg: sentCrit, want: true, wantErr: nil},
		{name: "never sent", msg: note(notify.Warning, "never-sent"), want: false, wantErr: nil},
		{name: "never sent, critical (checks both channels)", msg: note(notify.Critical, "never-sent-2"), want: false, wantErr: nil},
		{name: "no dedupe id", msg: note(notify.Warning, ""), want: false, wantErr: slack.ErrCannotConfirm},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := n.Delivered(t.Context(), tc.msg, start)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Delivered = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	// A bot without the history scope: an error, so the outbox resends.
	s2 := testenv.Slack(t)
	s2.Server.Handle("/conversations.history", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "missing_scope"})
	})
	n2 := newNotifier(t, slack.Options{Token: token, APIURL: s2.APIURL, Channel: "C0ALERTS1"})
	if _, err := n2.Delivered(t.Context(), sentWarn, start); err == nil || !strings.Contains(err.Error(), "missing_scope") {
		t.Fatalf("Delivered without scope = %v", err)
	}
}

func TestFromConfig(t *testing.T) {
	s := testenv.Slack(t)
	dir := t.TempDir()
	tokenFile := dir + "/token"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_SLACK_WEBHOOK", s.WebhookURL)
	t.Setenv("TEST_SLACK_EMPTY", "")
	for _, tc := range []struct {
		name    string
		cfg     *config.Slack
		wantErr string
		check   func(t *testing.T, n *slack.Notifier)
	}{
		{name: "token file, routed", cfg: &config.Slack{TokenFile: tokenFile, APIURL: s.APIURL, Channel: "C0DEF", Channels: config.SlackChannels{Critical: "C0CRIT"}}, wantErr: "",
			check: func(t *testing.T, n *slack.Notifier) {
				if err := n.Send(t.Context(), note(notify.Critical, "c1")); err != nil {
					t.Fatal(err)
				}
				if m := s.Messages(); len(m) != 1 || m[0].Channel != "C0CRIT" || m[0].Token != token {
					t.Fatalf("messages = %+v", m)
				}
			}},
		{name: "webhook env", cfg: &config.Slack{WebhookURLEnv: "TEST_SLACK_WEBHOOK"}, wantErr: "",
			check: func(t *testing.T, n *slack.Notifier) {
				if err := n.Send(t.Context(), note(notify.Info, "c2")); err != nil {
					t.Fatal(err)
				}
				if len(s.WebhookMessages()) != 1 {
					t.Fatal("webhook not used")
				}
			}},
		{name: "nil", cfg: nil, wantErr: "no notify.slack section", check: nil},
		{name: "empty env", cfg: &config.Slack{TokenEnv: "TEST_SLACK_EMPTY", Channel: "C0"}, wantErr: "TEST_SLACK_EMPTY", check: nil},
		{name: "missing file", cfg: &config.Slack{TokenFile: dir + "/nope", Channel: "C0"}, wantErr: "nope", check: nil},
		{name: "both", cfg: &config.Slack{TokenFile: tokenFile, WebhookURLEnv: "TEST_SLACK_WEBHOOK", Channel: "C0"}, wantErr: "not both", check: nil},
		{name: "nothing", cfg: &config.Slack{Channel: "C0"}, wantErr: "bot token or a webhook URL", check: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := slack.FromConfig(tc.cfg, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), token) {
					t.Fatal("error leaks the token")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, n)
		})
	}
}

// Formatting or logging the options or the notifier never shows the token
// or the webhook URL.
func TestNoCredentialsInTextForms(t *testing.T) {
	const hook = "https://hooks.example/services/T0/B0/webhooksecret123"
	for _, opts := range []slack.Options{
		{Token: token, Channel: "C0ALERTS1"},
		{WebhookURL: hook},
	} {
		n, err := slack.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		for _, h := range []slog.Handler{slog.NewJSONHandler(&logs, nil), slog.NewTextHandler(&logs, nil)} {
			slog.New(h).Info("notifier", "options", opts, "notifier", n)
		}
		text := fmt.Sprintf("%v %+v %#v %s %v %+v %#v", opts, opts, opts, opts, n, n, n) + logs.String()
		if !strings.Contains(text, "mode=") {
			t.Fatalf("text forms lack the description: %s", text)
		}
		for _, secret := range []string{token, hook, "webhooksecret123"} {
			if strings.Contains(text, secret) {
				t.Errorf("a text form shows a credential: %s", text)
			}
		}
	}
}
