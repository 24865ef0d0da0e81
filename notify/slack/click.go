package slack

import (
	"context"
	"fmt"
	"strings"
	"time"

	slackapi "github.com/slack-go/slack"

	"github.com/mrbacd/mrbacd/journal"
)

// verbs: what the message says after each action.
var verbs = map[string]struct{ done, icon string }{
	"rotate":      {"rotated", ":arrows_counterclockwise:"},
	"revoke":      {"revoked", ":no_entry:"},
	"snooze":      {"snoozed", ":zzz:"},
	"acknowledge": {"acknowledged", ":eyes:"},
}

// click carries out one button click.
func (a *Actions) click(ctx context.Context, cb slackapi.InteractionCallback, ba slackapi.BlockAction) {
	action, ok := strings.CutPrefix(ba.ActionID, actionPrefix)
	if _, known := verbs[action]; !ok || !known {
		return // not one of ours
	}
	user, channel := cb.User.ID, cb.Channel.ID
	ts := cb.Container.MessageTs
	if ts == "" {
		ts = cb.Message.Timestamp
	}
	t, err := parseTarget(ba.Value)
	if err != nil {
		a.ephemeral(ctx, channel, user, "mrbacd could not read this button; nothing was done.")
		return
	}
	log := a.log.With("slack_user", user, "action", action, "finding", t.ID)
	if user == "" || !a.opts.Access.Allows(user, action) {
		log.Warn("slack: action refused: not an operator for it")
		a.ephemeral(ctx, channel, user, fmt.Sprintf("You may not %s from Slack: only the operators listed in notify.slack.operators with %q may. Nothing was changed.", action, action))
		return
	}
	key := strings.Join([]string{channel, ts, t.ID, action}, "/")
	prev, first, err := a.opts.Journal.ClaimAction(ctx, key, action, t.ID, user)
	if err != nil {
		log.Error("slack: action not recorded; not run", "err", err)
		a.ephemeral(ctx, channel, user, "mrbacd could not record the action in its journal, so it did not run it: "+a.scrub(err))
		return
	}
	if !first {
		a.ephemeral(ctx, channel, user, alreadyText(action, prev))
		return
	}
	by := "slack:" + user
	runID, err := a.opts.Journal.StartRun(ctx, "slack:"+action, by, clickArgs(channel, ts, t))
	if err != nil {
		log.Error("slack: run not recorded", "err", err)
		_ = a.opts.Journal.FinishAction(ctx, key, journal.ActionFailed, "run not recorded")
		a.ephemeral(ctx, channel, user, "mrbacd could not record the run, so it did not act: "+a.scrub(err))
		return
	}
	_ = a.opts.Journal.SetActionRun(ctx, key, runID)
	status, outcome := a.perform(ctx, action, t, by)
	runStatus, runErr := journal.RunOK, ""
	switch status {
	case journal.ActionFailed:
		runStatus, runErr = journal.RunFailed, outcome
	case journal.ActionRefused:
		runStatus, runErr = journal.RunCanceled, "refused: "+outcome
	}
	if err := a.opts.Journal.FinishRun(ctx, runID, runStatus, runErr, outcome); err != nil {
		log.Error("slack: run outcome not recorded", "run_id", runID, "err", err)
	}
	if err := a.opts.Journal.FinishAction(ctx, key, status, outcome); err != nil {
		log.Error("slack: action outcome not recorded", "run_id", runID, "err", err)
	}
	log.Info("slack: action taken", "run_id", runID, "status", status, "outcome", outcome)
	a.report(ctx, cb, ba, ts, action, status, outcome, runID)
}

// perform runs the action: status is done, failed or refused.
func (a *Actions) perform(ctx context.Context, action string, t target, by string) (status, outcome string) {
	fail := func(what string, err error) (string, string) {
		return journal.ActionFailed, what + " failed: " + a.scrub(err)
	}
	switch action {
	case "revoke":
		if t.KeyID == "" {
			return journal.ActionRefused, "this finding names no platform key to revoke"
		}
		name, managed, err := a.opts.Keys.ManagedKey(ctx, t.KeyID)
		if err != nil {
			return fail("checking whether the key is managed", err)
		}
		if managed {
			return journal.ActionRefused, fmt.Sprintf("key %s is managed by mrbacd (keys: entry %s): its consumers read it from the store, so revoking it would break them. A managed key is never revoked from Slack; press Rotate now, or remove the entry from the config first.", t.KeyID, name)
		}
		out, err := a.opts.Keys.RevokeKey(ctx, t.KeyID, by)
		if err != nil {
			return fail("revoke of "+t.KeyID, err)
		}
		return journal.ActionDone, out
	case "rotate":
		name := t.KeyName
		if name == "" && t.KeyID != "" {
			n, managed, err := a.opts.Keys.ManagedKey(ctx, t.KeyID)
			if err != nil {
				return fail("finding the key's entry", err)
			}
			if !managed {
				return journal.ActionRefused, fmt.Sprintf("key %s is not managed by mrbacd: there is nothing to rotate it with", t.KeyID)
			}
			name = n
		}
		if name == "" {
			return journal.ActionRefused, "this finding names no managed key"
		}
		out, err := a.opts.Keys.RotateKey(ctx, name, by)
		if err != nil {
			return fail("rotation of "+name, err)
		}
		return journal.ActionDone, out
	case "snooze":
		until := a.opts.Now().Add(SnoozeForDays * 24 * time.Hour)
		if err := a.opts.Journal.Snooze(ctx, scopeOf(t), t.ID, until, by); err != nil {
			return fail("snooze", err)
		}
		return journal.ActionDone, fmt.Sprintf("%s snoozed until %s", t.ID, until.UTC().Format("2006-01-02 15:04 MST"))
	default:
		if err := a.opts.Journal.Acknowledge(ctx, scopeOf(t), t.ID, by); err != nil {
			return fail("acknowledge", err)
		}
		return journal.ActionDone, t.ID + " acknowledged: not reported again while it stays open"
	}
}

func scopeOf(t target) string {
	if t.Scope != "" {
		return t.Scope
	}
	return "rotation"
}

func alreadyText(action string, prev journal.OperatorAction) string {
	at := prev.StartedAt.UTC().Format("15:04 MST")
	switch prev.Status {
	case journal.ActionRunning:
		return fmt.Sprintf("Already in progress: <@%s> asked to %s at %s (run #%d). Nothing more was done.", prev.User, action, at, prev.RunID)
	case journal.ActionRefused:
		return fmt.Sprintf("Already tried by <@%s> at %s and refused: %s", prev.User, at, prev.Outcome)
	}
	return fmt.Sprintf("Already done: <@%s> %s this at %s (run #%d): %s", prev.User, verbs[action].done, at, prev.RunID, prev.Outcome)
}

func (a *Actions) ephemeral(ctx context.Context, channel, user, text string) {
	if channel == "" || user == "" {
		return
	}
	if _, err := a.api.PostEphemeralContext(ctx, channel, user, slackapi.MsgOptionText(text, false)); err != nil {
		a.log.Warn("slack: ephemeral answer failed", "slack_user", user, "err", a.scrub(err))
	}
}

// report posts the outcome in the message's thread and updates the
// message so the target's buttons give way to what happened.
func (a *Actions) report(ctx context.Context, cb slackapi.InteractionCallback, ba slackapi.BlockAction, ts, action, status, outcome string, runID int64) {
	channel, user := cb.Channel.ID, cb.User.ID
	v := verbs[action]
	line := fmt.Sprintf("%s <@%s> %s: %s (run #%d)", v.icon, user, v.done, outcome, runID)
	switch status {
	case journal.ActionFailed:
		line = fmt.Sprintf(":x: <@%s> asked to %s; it failed: %s (run #%d)", user, action, outcome, runID)
	case journal.ActionRefused:
		line = fmt.Sprintf(":no_entry_sign: <@%s> asked to %s; refused: %s (run #%d)", user, action, outcome, runID)
	}
	line = truncate(line, maxSectionText)
	if _, _, err := a.api.PostMessageContext(ctx, channel, slackapi.MsgOptionText(line, false), slackapi.MsgOptionTS(ts)); err != nil {
		a.log.Warn("slack: thread reply failed", "err", a.scrub(err))
	}
	if status != journal.ActionDone {
		return // the buttons stay: a failure may be retried, a refusal leaves the other actions
	}
	blocks := cb.Message.Blocks.BlockSet
	replaced := false
	for i, b := range blocks {
		if ab, ok := b.(*slackapi.ActionBlock); ok && ab.BlockID == ba.BlockID {
			blocks[i] = slackapi.NewContextBlock(ba.BlockID, slackapi.NewTextBlockObject(slackapi.MarkdownType, line, false, false))
			replaced = true
		}
	}
	if !replaced {
		return
	}
	text := cb.Message.Text
	if text == "" {
		text = line
	}
	if _, _, _, err := a.api.UpdateMessageContext(ctx, channel, ts, slackapi.MsgOptionText(text, false), slackapi.MsgOptionBlocks(blocks...)); err != nil {
		a.log.Warn("slack: message update failed", "err", a.scrub(err))
	}
}
