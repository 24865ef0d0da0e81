// Package slack delivers mrbacd notifications to Slack with
// github.com/slack-go/slack: through a bot token (chat.postMessage, routed to
// a channel per severity) or an incoming webhook. Messages are Block Kit
// (header, fields, sections, context) with a plain-text fallback.
//
// Notifier implements notify.Sender, classifying failures for the outbox:
// HTTP 429 (with Retry-After), 5xx, Slack's transient errors and connection
// failures are retryable; a timeout or a connection lost after the request
// was sent is uncertain (it may have been delivered); invalid_auth,
// channel_not_found, invalid_blocks and other configuration or payload errors
// are permanent. A message routed to a per-severity channel that does not
// exist (or the bot is not in) is posted to the default channel instead.
//
// In bot-token mode Notifier also implements notify.Confirmer: every message
// carries Slack message metadata {event_type: "mrbacd_notification",
// event_payload: {dedupe, kind}}, and Delivered looks for it in the channel's
// history (conversations.history, which needs the channels:history or
// groups:history scope, and conversations.list with channels:read /
// groups:read when the channel is configured by name rather than id). That
// closes the outbox's crash window (Slack accepted a message, mrbacd died
// before recording it): the message is recognised instead of posted twice.
// Webhooks cannot read history, so in webhook mode that window stays
// at-least-once.
//
// Neither the token nor the webhook URL (whose path is a secret) ever appears
// in an error or a log line.
package slack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	slackapi "github.com/slack-go/slack"

	"github.com/mrbacd/mrbacd/notify"
)

// MetadataEventType is the event_type of the metadata mrbacd attaches to
// every message it posts with a bot token.
const MetadataEventType = "mrbacd_notification"

// Channels routes notifications by severity; empty entries use Options.Channel.
type Channels struct {
	Critical, Warning, Info string
}

// Options configures a Notifier. Exactly one of Token and WebhookURL is set.
type Options struct {
	// Token is a bot token (xoxb-...) for chat.postMessage.
	Token string
	// WebhookURL is an incoming-webhook URL (its channel is fixed by Slack).
	WebhookURL string
	// APIURL overrides Slack's Web API base ("https://slack.com/api/"), for tests.
	APIURL string
	// Channel is the default channel (name or id); required with Token
	// unless every severity has a channel.
	Channel  string
	Channels Channels
	// HTTPClient is used for every request (default: 30s timeout).
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Buttons renders action buttons for the message's targets (set when
	// Socket Mode receives their clicks).
	Buttons bool
	// HistoryPages bounds how many pages of 200 messages Delivered reads per
	// channel (default 5).
	HistoryPages int
}

// String describes the options without the token or the webhook URL.
func (o Options) String() string {
	mode := "unset"
	switch {
	case o.Token != "" && o.WebhookURL != "":
		mode = "token and webhook"
	case o.Token != "":
		mode = "bot token"
	case o.WebhookURL != "":
		mode = "webhook"
	}
	return fmt.Sprintf("{mode=%s api_url=%s channel=%s channels=%+v}", mode, o.APIURL, o.Channel, o.Channels)
}

// GoString is String, for %#v.
func (o Options) GoString() string { return "slack.Options" + o.String() }

// LogValue keeps the token and the webhook URL out of slog records.
func (o Options) LogValue() slog.Value { return slog.StringValue(o.String()) }

// Notifier sends notifications to Slack.
type Notifier struct {
	api     *slackapi.Client // nil in webhook mode
	webhook string
	http    *http.Client
	opts    Options
	log     *slog.Logger

	mu  sync.Mutex
	ids map[string]string // channel name -> id
}

var (
	_ notify.Sender    = (*Notifier)(nil)
	_ notify.Confirmer = (*Notifier)(nil)
)

// ErrCannotConfirm is returned by Delivered when the notifier cannot check
// whether a message was delivered (webhook mode, no dedupe id).
var ErrCannotConfirm = errors.New("slack: cannot check delivery")

// New validates opts and returns a Notifier.
func New(opts Options) (*Notifier, error) {
	switch {
	case opts.Token == "" && opts.WebhookURL == "":
		return nil, errors.New("slack notifier: a bot token or a webhook URL is required")
	case opts.Token != "" && opts.WebhookURL != "":
		return nil, errors.New("slack notifier: set a bot token or a webhook URL, not both")
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.HistoryPages <= 0 {
		opts.HistoryPages = 5
	}
	n := &Notifier{http: opts.HTTPClient, opts: opts, log: opts.Logger, ids: map[string]string{}}
	if opts.WebhookURL != "" {
		if !strings.HasPrefix(opts.WebhookURL, "https://") && !strings.HasPrefix(opts.WebhookURL, "http://") {
			return nil, errors.New("slack notifier: the webhook URL must start with https://")
		}
		n.webhook = opts.WebhookURL
		return n, nil
	}
	if opts.Channel == "" && (opts.Channels.Critical == "" || opts.Channels.Warning == "" || opts.Channels.Info == "") {
		return nil, errors.New("slack notifier: channel is required (or a channel for each of critical, warning and info)")
	}
	copts := []slackapi.Option{slackapi.OptionHTTPClient(opts.HTTPClient)}
	if opts.APIURL != "" {
		u := opts.APIURL
		if !strings.HasSuffix(u, "/") {
			u += "/"
		}
		copts = append(copts, slackapi.OptionAPIURL(u))
	}
	n.api = slackapi.New(opts.Token, copts...)
	return n, nil
}

// String describes the notifier without its credentials (fmt would print
// the unexported fields, token and webhook URL included).
func (n *Notifier) String() string { return "slack.Notifier" + n.opts.String() }

// GoString is String, for %#v.
func (n *Notifier) GoString() string { return n.String() }

// Route returns the channel a severity goes to (bot-token mode).
func (n *Notifier) Route(s notify.Severity) string {
	c := ""
	switch s {
	case notify.Critical:
		c = n.opts.Channels.Critical
	case notify.Warning:
		c = n.opts.Channels.Warning
	default:
		c = n.opts.Channels.Info
	}
	if c == "" {
		c = n.opts.Channel
	}
	return c
}

// Send posts one notification: one attempt, errors classified for the outbox.
func (n *Notifier) Send(ctx context.Context, msg notify.Notification) error {
	blocks := Blocks(msg)
	if n.opts.Buttons && n.api != nil {
		blocks = BlocksWithActions(msg)
	}
	text := truncate(msg.FallbackText(), 39000)
	if n.api == nil {
		err := slackapi.PostWebhookCustomHTTPContext(ctx, n.webhook, n.http, &slackapi.WebhookMessage{
			Text: text, Blocks: &slackapi.Blocks{BlockSet: blocks},
		})
		if err != nil {
			return n.classify("webhook", err)
		}
		return nil
	}
	channel := n.Route(msg.Severity)
	err := n.post(ctx, channel, msg, text, blocks)
	if err != nil && channel != n.opts.Channel && n.opts.Channel != "" && isChannelError(err) {
		n.log.Warn("slack: routed channel unavailable; posting to the default channel",
			"channel", channel, "fallback_channel", n.opts.Channel, "kind", msg.Kind, "err", err)
		fb := append(blocks, slackapi.NewContextBlock("", slackapi.NewTextBlockObject(slackapi.MarkdownType,
			escape(fmt.Sprintf("routed to %s, which is unavailable (%v)", channel, err)), false, false)))
		err = n.post(ctx, n.opts.Channel, msg, text, fb)
		channel = n.opts.Channel
	}
	if err != nil {
		return n.classify("chat.postMessage to "+channel, err)
	}
	return nil
}

func (n *Notifier) post(ctx context.Context, channel string, msg notify.Notification, text string, blocks []slackapi.Block) error {
	opts := []slackapi.MsgOption{
		slackapi.MsgOptionText(text, true),
		slackapi.MsgOptionBlocks(blocks...),
		slackapi.MsgOptionDisableLinkUnfurl(),
	}
	if msg.Dedupe != "" {
		opts = append(opts, slackapi.MsgOptionMetadata(slackapi.SlackMetadata{
			EventType:    MetadataEventType,
			EventPayload: map[string]any{"dedupe": msg.Dedupe, "kind": msg.Kind},
		}))
	}
	id, _, err := n.api.PostMessageContext(ctx, channel, opts...)
	if err == nil && id != "" && id != channel {
		n.mu.Lock()
		n.ids[strings.TrimPrefix(channel, "#")] = id
		n.mu.Unlock()
	}
	return err
}

// Delivered reports whether msg is already in its channel (or the default
// channel), posted since `since` (minus five minutes of clock skew), by
// looking for its metadata in the channel history. Bot-token mode only.
func (n *Notifier) Delivered(ctx context.Context, msg notify.Notification, since time.Time) (bool, error) {
	if n.api == nil {
		return false, fmt.Errorf("%w: webhooks cannot read channel history", ErrCannotConfirm)
	}
	if msg.Dedupe == "" {
		return false, fmt.Errorf("%w: message has no dedupe id", ErrCannotConfirm)
	}
	chans := []string{n.Route(msg.Severity)}
	if n.opts.Channel != "" && n.opts.Channel != chans[0] {
		chans = append(chans, n.opts.Channel)
	}
	oldest := fmt.Sprintf("%d.000000", since.Add(-5*time.Minute).Unix())
	for _, c := range chans {
		id, err := n.channelID(ctx, c)
		if err != nil {
			return false, err
		}
		cursor := ""
		for page := 0; page < n.opts.HistoryPages; page++ {
			resp, err := n.api.GetConversationHistoryContext(ctx, &slackapi.GetConversationHistoryParameters{
				ChannelID: id, Oldest: oldest, Limit: 200, Cursor: cursor, IncludeAllMetadata: true,
			})
			if err != nil {
				return false, fmt.Errorf("slack: conversations.history of %s: %w", c, err)
			}
			for _, m := range resp.Messages {
				if m.Metadata.EventType == MetadataEventType && fmt.Sprint(m.Metadata.EventPayload["dedupe"]) == msg.Dedupe {
					return true, nil
				}
			}
			cursor = resp.ResponseMetaData.NextCursor
			if !resp.HasMore || cursor == "" {
				break
			}
		}
	}
	return false, nil
}

var channelIDPattern = regexp.MustCompile(`^[CGD][A-Z0-9]{6,}$`)

// channelID resolves a channel name to its id (conversations.list), cached.
func (n *Notifier) channelID(ctx context.Context, channel string) (string, error) {
	if channelIDPattern.MatchString(channel) {
		return channel, nil
	}
	name := strings.TrimPrefix(channel, "#")
	n.mu.Lock()
	id, ok := n.ids[name]
	n.mu.Unlock()
	if ok {
		return id, nil
	}
	cursor := ""
	for {
		chs, next, err := n.api.GetConversationsContext(ctx, &slackapi.GetConversationsParameters{
			Cursor: cursor, Limit: 200, Types: []string{"public_channel", "private_channel"}, ExcludeArchived: true,
		})
		if err != nil {
			return "", fmt.Errorf("slack: resolving channel %s: %w", channel, err)
		}
		for _, c := range chs {
			if c.Name == name {
				n.mu.Lock()
				n.ids[name] = c.ID
				n.mu.Unlock()
				return c.ID, nil
			}
		}
		if next == "" {
			return "", fmt.Errorf("slack: channel %s not found", channel)
		}
		cursor = next
	}
}

// Slack error codes that retrying cannot fix.
var permanentCodes = map[string]bool{
	"invalid_auth": true, "not_authed": true, "account_inactive": true, "token_revoked": true,
	"token_expired": true, "no_permission": true, "missing_scope": true, "not_allowed_token_type": true,
	"channel_not_found": true, "not_in_channel": true, "is_archived": true, "restricted_action": true,
	"msg_too_long": true, "no_text": true, "invalid_blocks": true, "invalid_blocks_format": true,
	"invalid_arguments": true, "invalid_arg_name": true, "invalid_metadata_format": true,
	"invalid_metadata_schema": true, "metadata_too_large": true, "team_access_not_granted": true,
	"ekm_access_denied": true, "invalid_payload": true, "no_service": true, "no_service_id": true,
	"no_team": true, "team_disabled": true, "invalid_token": true, "action_prohibited": true,
	"posting_to_general_channel_denied": true, "channel_is_archived": true, "user_not_found": true,
}

func isChannelError(err error) bool {
	var se slackapi.SlackErrorResponse
	if errors.As(err, &se) {
		return se.Err == "channel_not_found" || se.Err == "not_in_channel" || se.Err == "is_archived"
	}
	return false
}

// classify wraps err for the outbox (see the package doc), with the webhook
// URL scrubbed out of it.
func (n *Notifier) classify(what string, err error) error {
	wrapped := fmt.Errorf("slack %s: %s", what, n.scrub(err.Error()))
	var rl *slackapi.RateLimitedError
	if errors.As(err, &rl) {
		return notify.Retry(wrapped, rl.RetryAfter)
	}
	var sc slackapi.StatusCodeError
	if errors.As(err, &sc) {
		switch {
		case sc.Code == http.StatusTooManyRequests || sc.Code == http.StatusRequestTimeout || sc.Code >= 500:
			return notify.Retry(wrapped, 0)
		case sc.Code >= 400:
			return notify.Permanent(wrapped)
		}
		return notify.Retry(wrapped, 0)
	}
	var se slackapi.SlackErrorResponse
	if errors.As(err, &se) {
		if permanentCodes[se.Err] {
			return notify.Permanent(wrapped)
		}
		return notify.Retry(wrapped, 0) // ratelimited, internal_error, fatal_error, unknown codes
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return notify.Uncertain(wrapped)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return notify.Uncertain(wrapped)
	}
	if errors.Is(err, syscall.ECONNREFUSED) || isDialError(err) {
		return notify.Retry(wrapped, 0) // never reached Slack
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		return notify.Uncertain(wrapped) // the request may have been processed
	}
	return notify.Retry(wrapped, 0)
}

func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// scrub removes the webhook URL (whose path is a secret) from s.
func (n *Notifier) scrub(s string) string {
	if n.webhook == "" {
		return s
	}
	s = strings.ReplaceAll(s, n.webhook, "<webhook-url>")
	if i := strings.Index(n.webhook, "/services/"); i >= 0 {
		s = strings.ReplaceAll(s, n.webhook[i:], "/<webhook-path>")
	}
	return s
}
