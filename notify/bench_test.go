package notify_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/notify"
	"github.com/mrbacd/mrbacd/notify/slack"
)

// BenchmarkDirectSend is one chat.postMessage to slacktest, no journal.
func BenchmarkDirectSend(b *testing.B) {
	s := testenv.Slack(b)
	n, _ := slack.New(slack.Options{Token: token, APIURL: s.APIURL, Channel: "C0ALERTS1"})
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		if err := n.Send(ctx, msg(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOutboxSend is the same message through the durable outbox:
// Enqueue, Claim, Send, MarkSent.
func BenchmarkOutboxSend(b *testing.B) {
	s := testenv.Slack(b)
	db, _ := openJournal(b)
	n, _ := slack.New(slack.Options{Token: token, APIURL: s.APIURL, Channel: "C0ALERTS1"})
	ob := notify.NewOutbox(db, n, notify.OutboxOptions{})
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		m := msg(i)
		m.Dedupe = fmt.Sprint("bench-", i)
		if err := ob.Enqueue(ctx, m); err != nil {
			b.Fatal(err)
		}
		if err := ob.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
