package slack

import (
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
		Logger: logger,
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
