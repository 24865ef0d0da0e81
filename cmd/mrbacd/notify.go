package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/notify"
	"github.com/mrbacd/mrbacd/notify/slack"
	"github.com/mrbacd/mrbacd/state"
)

// oneShotFlushTimeout bounds how long a one-shot command (audit, budget)
// tries to deliver its notifications before exiting; what is not delivered
// stays in the journal's outbox for the daemon (or the next run).
const oneShotFlushTimeout = 30 * time.Second

// newNotifier returns the sender notifications go through: Slack (bot token
// or incoming webhook, see slack.FromConfig) when notify.slack is
// configured, else stdout. The token or webhook URL is read from its _env or
// _file source and never logged.
func newNotifier(_ context.Context, cfg *config.Config, env *cmdEnv, logger *slog.Logger) (notify.Sender, error) {
	if cfg.Notify.Slack == nil {
		return notify.NewStdout(env.stdout), nil
	}
	n, err := slack.FromConfig(cfg.Notify.Slack, logger)
	if err != nil {
		return nil, err // a nil *slack.Notifier must not become a non-nil Sender
	}
	return n, nil
}

// newOutbox returns the durable outbox over the journal, delivering through
// sender.
func newOutbox(journal *state.DB, sender notify.Sender, logger *slog.Logger) *notify.Outbox {
	return notify.NewOutbox(journal, sender, notify.OutboxOptions{Logger: logger})
}

// flushNotifications delivers what a one-shot command queued, within
// oneShotFlushTimeout. Undelivered messages stay queued; that is reported on
// stderr, not as a failure of the job.
func flushNotifications(ctx context.Context, env *cmdEnv, name string, outbox *notify.Outbox) {
	fctx, cancel := context.WithTimeout(ctx, oneShotFlushTimeout)
	defer cancel()
	err := outbox.Flush(fctx)
	switch {
	case err == nil:
	case errors.Is(err, notify.ErrUndelivered):
		fmt.Fprintf(env.stderr, "mrbacd %s: some notifications are not delivered yet; they stay queued in the journal and the daemon (or the next run) sends them: %v\n", name, err)
	default:
		fmt.Fprintf(env.stderr, "mrbacd %s: delivering notifications: %v\n", name, err)
	}
}
