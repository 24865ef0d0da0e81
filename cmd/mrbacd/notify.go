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
// or incoming webhook) when notify.slack is configured, else stdout. The
// token or webhook URL is read from its _env or _file source and never
// logged.
func newNotifier(_ context.Context, cfg *config.Config, env *cmdEnv, logger *slog.Logger) (notify.Sender, error) {
	sc := cfg.Notify.Slack
	if sc == nil {
		return notify.NewStdout(env.stdout), nil
	}
	opts := slack.Options{APIURL: sc.APIURL, Channel: sc.Channel, Logger: logger,
		Channels: slack.Channels{Critical: sc.Channels.Critical, Warning: sc.Channels.Warning, Info: sc.Channels.Info}}
	var err error
	switch {
	case sc.TokenEnv != "" || sc.TokenFile != "":
		if opts.Token, err = config.ResolveSecret(sc.TokenEnv, sc.TokenFile); err != nil {
			return nil, fmt.Errorf("notify.slack token: %w", err)
		}
	case sc.WebhookURLEnv != "" || sc.WebhookURLFile != "":
		if opts.WebhookURL, err = config.ResolveSecret(sc.WebhookURLEnv, sc.WebhookURLFile); err != nil {
			return nil, fmt.Errorf("notify.slack webhook URL: %w", err)
		}
	default:
		return nil, errors.New("notify.slack: set token_env/token_file or webhook_url_env/webhook_url_file")
	}
	n, err := slack.New(opts)
	if err != nil {
		return nil, err
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
