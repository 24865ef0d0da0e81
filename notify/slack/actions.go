package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	slackapi "github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/mrbacd/mrbacd/journal"
)

// KeyActor performs the key actions a button asks for. by is who asked
// ("slack:U0123ABCD"). The answers are short human sentences, no key
// material.
type KeyActor interface {
	// ManagedKey names the keys: entry whose current (or in-flight) key is
	// keyID; ok is false for a key no entry manages.
	ManagedKey(ctx context.Context, keyID string) (name string, ok bool, err error)
	// RotateKey rotates the managed key now (as `mrbacd rotate --key name --force`).
	RotateKey(ctx context.Context, name, by string) (string, error)
	// RevokeKey deletes an unmanaged platform key.
	RevokeKey(ctx context.Context, keyID, by string) (string, error)
}

// ActionJournal records actions (once per message and action), their runs
// and the snoozes and acknowledgements. *journal.DB implements it.
type ActionJournal interface {
	ClaimAction(ctx context.Context, key, action, target, user string) (journal.OperatorAction, bool, error)
	SetActionRun(ctx context.Context, key string, runID int64) error
	FinishAction(ctx context.Context, key, status, outcome string) error
	StartRun(ctx context.Context, job, trigger, args string) (int64, error)
	FinishRun(ctx context.Context, id int64, status, errMsg, summary string) error
	Snooze(ctx context.Context, scope, findingID string, until time.Time, by string) error
	Acknowledge(ctx context.Context, scope, findingID, by string) error
}

// Access says whether a Slack user id may take an action (*config.Slack).
type Access interface {
	Allows(user, action string) bool
}

// ActionsOptions configures the Socket Mode action handler.
type ActionsOptions struct {
	// BotToken (xoxb-) posts and updates messages; AppToken (xapp-) opens
	// the Socket Mode connection.
	BotToken, AppToken string
	// APIURL overrides Slack's Web API base (tests).
	APIURL  string
	Keys    KeyActor
	Journal ActionJournal
	Access  Access
	// Status answers `/mrbacd status` (the `ctl status` table); nil: the
	// command says it is not available.
	Status func(ctx context.Context) (string, error)
	Logger *slog.Logger
	// Now is the clock (snooze ends); default time.Now.
	Now func() time.Time
	// MaxBackoff bounds the wait between reconnection attempts (default 1m).
	MaxBackoff time.Duration
}

// Actions receives button clicks and slash commands over Socket Mode (no
// public endpoint) and carries them out: checks who clicked against the
// operators, runs each action once per message (journal), records it as a
// run, answers in the message's thread and updates the message.
type Actions struct {
	opts ActionsOptions
	api  *slackapi.Client
	sm   *socketmode.Client
	log  *slog.Logger
	wg   sync.WaitGroup
	sem  chan struct{}
}

// NewActions checks opts and builds the handler; Run connects.
func NewActions(opts ActionsOptions) (*Actions, error) {
	switch {
	case opts.BotToken == "" || opts.AppToken == "":
		return nil, errors.New("slack actions: a bot token and an app token are required")
	case !strings.HasPrefix(opts.AppToken, "xapp-"):
		return nil, errors.New("slack actions: the app token must be an app-level token (xapp-...)")
	case opts.Keys == nil || opts.Journal == nil || opts.Access == nil:
		return nil, errors.New("slack actions: key actor, journal and access are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Minute
	}
	copts := []slackapi.Option{slackapi.OptionAppLevelToken(opts.AppToken)}
	if opts.APIURL != "" {
		u := opts.APIURL
		if !strings.HasSuffix(u, "/") {
			u += "/"
		}
		copts = append(copts, slackapi.OptionAPIURL(u))
	}
	a := &Actions{opts: opts, log: opts.Logger, sem: make(chan struct{}, 4)}
	a.api = slackapi.New(opts.BotToken, copts...)
	a.sm = socketmode.New(a.api, socketmode.OptionLog(slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug)))
	return a, nil
}

// SetAccess replaces who may act (before Run; e.g. operators that follow
// config reloads).
func (a *Actions) SetAccess(acc Access) { a.opts.Access = acc }

// String describes the handler without its tokens.
func (a *Actions) String() string { return fmt.Sprintf("slack.Actions{api_url=%s}", a.opts.APIURL) }

// Run keeps a Socket Mode connection open until ctx ends, reconnecting on
// its own (Slack's disconnect requests, dropped connections, refused
// connects, with backoff), and handles what arrives. It returns after the
// actions in progress finished.
func (a *Actions) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); a.wg.Wait() }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.consume(ctx)
	}()
	backoff := time.Second
	for {
		err := a.sm.RunContext(ctx)
		if ctx.Err() != nil {
			<-done
			return nil
		}
		a.log.Warn("slack socket mode: connection ended; reconnecting", "err", a.scrub(err), "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			<-done
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, a.opts.MaxBackoff)
	}
}

func (a *Actions) consume(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case evt := <-a.sm.Events:
			a.event(ctx, evt)
		}
	}
}

func (a *Actions) event(ctx context.Context, evt socketmode.Event) {
	switch evt.Type {
	case socketmode.EventTypeConnected:
		a.log.Info("slack socket mode: connected")
	case socketmode.EventTypeConnectionError, socketmode.EventTypeInvalidAuth:
		a.log.Warn("slack socket mode: cannot connect", "event", string(evt.Type), "err", a.scrub(fmt.Errorf("%v", evt.Data)))
	case socketmode.EventTypeInteractive:
		cb, ok := evt.Data.(slackapi.InteractionCallback)
		if !ok || evt.Request == nil {
			return
		}
		a.ack(*evt.Request, nil) // Slack wants the ack within 3 s; the work follows.
		if cb.Type != slackapi.InteractionTypeBlockActions {
			return
		}
		for _, ba := range cb.ActionCallback.BlockActions {
			a.spawn(ctx, func(ctx context.Context) { a.click(ctx, cb, *ba) })
		}
	case socketmode.EventTypeSlashCommand:
		cmd, ok := evt.Data.(slackapi.SlashCommand)
		if !ok || evt.Request == nil {
			return
		}
		a.ack(*evt.Request, map[string]any{"response_type": "ephemeral", "text": a.slash(ctx, cmd)})
	case socketmode.EventTypeEventsAPI:
		if evt.Request != nil {
			a.ack(*evt.Request, nil)
		}
	}
}

func (a *Actions) ack(req socketmode.Request, payload any) {
	var err error
	if payload != nil {
		err = a.sm.Ack(req, payload)
	} else {
		err = a.sm.Ack(req)
	}
	if err != nil {
		a.log.Warn("slack socket mode: ack failed", "envelope_id", req.EnvelopeID, "err", a.scrub(err))
	}
}

// spawn runs fn in the background, at most four at once.
func (a *Actions) spawn(ctx context.Context, fn func(context.Context)) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		select {
		case a.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-a.sem }()
		// The action outlives a shutdown request briefly: a rotation half
		// done is resumed by the journal anyway.
		fn(context.WithoutCancel(ctx))
	}()
}

// slash answers /mrbacd [status].
func (a *Actions) slash(ctx context.Context, cmd slackapi.SlashCommand) string {
	if !a.allowedAny(cmd.UserID) {
		a.log.Info("slack: slash command refused", "slack_user", cmd.UserID)
		return "You are not an mrbacd operator (notify.slack.operators), so mrbacd tells you nothing here."
	}
	switch strings.TrimSpace(cmd.Text) {
	case "status", "":
		if a.opts.Status == nil {
			return "status is not available from this daemon"
		}
		out, err := a.opts.Status(ctx)
		if err != nil {
			return "status failed: " + a.scrub(err)
		}
		return "```\n" + truncate(out, 2900) + "\n```"
	}
	return "usage: " + cmd.Command + " status"
}

func (a *Actions) allowedAny(user string) bool {
	for _, act := range []string{"rotate", "revoke", "snooze", "acknowledge"} {
		if a.opts.Access.Allows(user, act) {
			return true
		}
	}
	return false
}

// scrub keeps the tokens out of a message.
func (a *Actions) scrub(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	for _, tok := range []string{a.opts.BotToken, a.opts.AppToken} {
		if tok != "" {
			s = strings.ReplaceAll(s, tok, "<token>")
		}
	}
	return s
}

// clickArgs is the run's args: what was clicked, where.
func clickArgs(channel, ts string, t target) string {
	b, _ := json.Marshal(map[string]string{"channel": channel, "message_ts": ts, "finding": t.ID, "kind": t.Kind,
		"key_id": t.KeyID, "key_name": t.KeyName})
	return string(b)
}
