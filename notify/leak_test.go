package notify_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/notify"
	"github.com/mrbacd/mrbacd/notify/slack"
)

// Every builder's message goes through the outbox to Slack (bot token and
// webhook) while Slack fails in every way; the key plaintext the test holds,
// the bot token and the webhook URL's secret path appear in no Slack payload,
// log line, journal file or error.
func TestNoSecretsLeak(t *testing.T) {
	buf := make([]byte, 16)
	rand.Read(buf)
	plaintext := "sk-" + hex.EncodeToString(buf)
	hidden := plaintext[:4] + "****" + plaintext[len(plaintext)-4:]
	now := time.Now()
	f := journal.Finding{ID: "unused:key-1", Kind: "unused", Severity: "warning", Subject: "old-key (key-1, " + hidden + ")",
		Detail: "last used 45d ago", Action: "revoke it", FirstSeen: now.Add(-48 * time.Hour), ResolvedAt: now}
	msgs := []notify.Notification{
		notify.AuditDigestMessage(notify.AuditDigest{At: now, Keys: 3, Delta: journal.FindingsDelta{New: []journal.Finding{f}}}),
		notify.FindingResolvedMessage("audit", f),
		notify.BudgetAlertMessage(notify.BudgetAlert{Workspace: "dev", Month: "2026-11", Threshold: 0.8, SpendUSD: 41, BudgetUSD: 50, At: now}),
		notify.RotationDigestMessage(notify.RotationDigest{At: now, Rotated: []notify.RotationDone{{KeyName: "dev", RotationID: "r1", OldKeyID: "key-1", NewKeyID: "key-2"}}}),
		notify.RotationFailureMessage(notify.RotationFailure{KeyName: "dev", RotationID: "r2", Step: "verify", Error: "401", OldKeyID: "key-2", NewKeyID: "key-3", At: now}),
		notify.JobFailureMessage(notify.JobFailure{Job: "audit", RunID: 3, Error: "boom", At: now}),
	}
	for _, mode := range []string{"token", "webhook"} {
		t.Run(mode, func(t *testing.T) {
			s := testenv.Slack(t)
			db, path := openJournal(t)
			var logs bytes.Buffer
			opts := slack.Options{Token: token, APIURL: s.APIURL, Channel: "C0ALERTS1"}
			if mode == "webhook" {
				opts = slack.Options{WebhookURL: s.WebhookURL}
			}
			logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			opts.Logger = logger
			n, err := slack.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			ob := notify.NewOutbox(db, n, notify.OutboxOptions{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Logger: logger})
			ctx := context.Background()
			for _, m := range msgs {
				if err := ob.Enqueue(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			s.RateLimit(1, "")
			s.FailNext(1, 500)
			s.InjectFaults(testenv.SlackFault{Drop: true}, testenv.SlackFault{SlackError: "internal_error"})
			var errs []string
			for i := 0; i < 50; i++ {
				err := ob.Flush(ctx)
				if err == nil {
					break
				}
				errs = append(errs, err.Error())
				time.Sleep(3 * time.Millisecond)
			}
			if p, _ := db.PendingCount(ctx); p != 0 {
				t.Fatalf("%d pending", p)
			}
			// Now with Slack gone: errors naming the URL are recorded.
			ob.Enqueue(ctx, notify.JobFailureMessage(notify.JobFailure{Job: "budget", RunID: 4, Error: "x", At: now}))
			s.Stop()
			if err := ob.Flush(ctx); err != nil {
				errs = append(errs, err.Error())
			}
			all, _ := db.Messages(ctx, "", 0)
			for _, m := range all {
				errs = append(errs, m.LastError)
			}
			if !strings.Contains(strings.Join(errs, "\n"), "webhook") && mode == "webhook" {
				t.Fatalf("expected recorded webhook errors, got %q", errs)
			}

			haystacks := map[string]string{"logs": logs.String(), "errors": strings.Join(errs, "\n")}
			for i, m := range s.Messages() {
				form := m.Form
				form.Del("token") // the transport of the token to Slack itself
				haystacks["slack message "+string(rune('0'+i))] = form.Encode()
			}
			for i, w := range s.WebhookMessages() {
				haystacks["webhook payload "+string(rune('0'+i))] = string(w)
			}
			// (a webhook answered 200 with an error body counts as accepted: one fewer)
			if len(haystacks) < 2+len(msgs)-1 {
				t.Fatalf("only %d things to scan", len(haystacks))
			}
			db.Vacuum(ctx)
			for _, suffix := range []string{"", "-wal"} {
				b, err := os.ReadFile(path + suffix)
				if err == nil {
					haystacks["journal"+suffix] = string(b)
				}
			}
			secrets := map[string]string{"key plaintext": plaintext, "bot token": token, "webhook secret": "testenvwebhooksecret"}
			for where, h := range haystacks {
				for what, secret := range secrets {
					if strings.Contains(h, secret) {
						t.Errorf("%s contains the %s", where, what)
					}
				}
			}
			// Sanity: what is allowed to show does show.
			if !strings.Contains(haystacks["journal"], hidden) {
				t.Error("scan sanity: hidden_key not found in the journal")
			}
		})
	}
}
