package slack

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/mrbacd/mrbacd/config"
)

// FromConfig builds a Notifier from the config's notify.slack section,
// reading the bot token or the webhook URL from its _env or _file source.
// Errors name the source, never the secret.
func FromConfig(c *config.Slack, logger *slog.Logger) (*Notifier, error) {
	if c == nil {
		return nil, fmt.Errorf("slack notifier: no notify.slack section")
	}
	opts := Options{
		APIURL:  c.APIURL,
		Channel: c.Channel,
		Channels: Channels{
			Critical: c.Channels.Critical, Warning: c.Channels.Warning, Info: c.Channels.Info,
		},
		Logger:  logger,
		Buttons: SocketModeEnabled(c),
	}
	switch {
	case c.TokenEnv != "" || c.TokenFile != "":
		tok, err := config.ResolveSecret(c.TokenEnv, c.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("slack notifier: bot token: %w", err)
		}
		opts.Token = tok
		if c.WebhookURLEnv != "" || c.WebhookURLFile != "" {
			return nil, fmt.Errorf("slack notifier: set a bot token or a webhook URL, not both")
		}
	case c.WebhookURLEnv != "" || c.WebhookURLFile != "":
		u, err := config.ResolveSecret(c.WebhookURLEnv, c.WebhookURLFile)
		if err != nil {
			return nil, fmt.Errorf("slack notifier: webhook URL: %w", err)
		}
		opts.WebhookURL = u
	}
	return New(opts)
}

// SocketModeEnabled reports whether notify.slack asks for Socket Mode (an
// app token beside the bot token): buttons are then rendered and clicked.
func SocketModeEnabled(c *config.Slack) bool {
	return c != nil && (c.AppTokenEnv != "" || c.AppTokenFile != "") && (c.TokenEnv != "" || c.TokenFile != "")
}

// ActionsFromConfig builds the Socket Mode action handler from notify.slack,
// reading both tokens from their _env or _file source; nil (and no error)
// when Socket Mode is not configured. Operators come from c.
func ActionsFromConfig(c *config.Slack, keys KeyActor, journal ActionJournal, status func(context.Context) (string, error), logger *slog.Logger) (*Actions, error) {
	if !SocketModeEnabled(c) {
		return nil, nil
	}
	bot, err := config.ResolveSecret(c.TokenEnv, c.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("slack actions: bot token: %w", err)
	}
	app, err := config.ResolveSecret(c.AppTokenEnv, c.AppTokenFile)
	if err != nil {
		return nil, fmt.Errorf("slack actions: app token: %w", err)
	}
	return NewActions(ActionsOptions{BotToken: bot, AppToken: app, APIURL: c.APIURL, Keys: keys, Journal: journal,
		Access: c, Status: status, Logger: logger})
}
