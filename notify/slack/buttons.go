package slack

import (
	"encoding/json"
	"fmt"
	"strings"

	slackapi "github.com/slack-go/slack"

	"github.com/mrbacd/mrbacd/notify"
)

// Button action ids: actionPrefix + the action (rotate, revoke, snooze,
// acknowledge, as in config.SlackActions).
const (
	actionPrefix  = "mrbacd_"
	blockPrefix   = "mrbacd_target_"
	maxTargets    = 10
	SnoozeForDays = 7
)

// target is a notify.Target as carried in a button's value (Slack allows
// 2000 characters; ids and names only).
type target struct {
	Scope   string `json:"s,omitempty"`
	ID      string `json:"i"`
	Kind    string `json:"k"`
	Subject string `json:"t,omitempty"`
	KeyID   string `json:"kid,omitempty"`
	KeyName string `json:"kn,omitempty"`
}

func (t target) value() string {
	b, _ := json.Marshal(t)
	if len(b) > 2000 {
		t.Subject = ""
		b, _ = json.Marshal(t)
	}
	return string(b)
}

func parseTarget(v string) (target, error) {
	var t target
	if err := json.Unmarshal([]byte(v), &t); err != nil || t.ID == "" || t.Kind == "" {
		return target{}, fmt.Errorf("slack action: unreadable button value")
	}
	return t, nil
}

// buttonsFor says which actions a target's kind calls for: Revoke on an
// unused or undeclared key, Rotate now on an overdue key or a failed
// rotation, Snooze and Acknowledge on any finding.
func buttonsFor(t notify.Target) []string {
	var out []string
	switch t.Kind {
	case "unused", "undeclared":
		if t.KeyID != "" {
			out = append(out, "revoke")
		}
	case "overdue", notify.KindRotationFailed:
		out = append(out, "rotate")
	}
	return append(out, "snooze", "acknowledge")
}

// ActionBlocks renders the targets as a context line and an actions block
// each (at most ten, and within room blocks). Destructive buttons carry a
// confirm dialog.
func ActionBlocks(targets []notify.Target, room int) []slackapi.Block {
	var blocks []slackapi.Block
	for i, t := range targets {
		if i == maxTargets || len(blocks)+2 > room {
			break
		}
		tv := target{Scope: t.Scope, ID: t.ID, Kind: t.Kind, Subject: truncate(t.Subject, 200), KeyID: t.KeyID, KeyName: t.KeyName}
		var els []slackapi.BlockElement
		for _, a := range buttonsFor(t) {
			els = append(els, button(a, tv))
		}
		blocks = append(blocks,
			slackapi.NewContextBlock("", slackapi.NewTextBlockObject(slackapi.MarkdownType,
				truncate(escape(fmt.Sprintf("%s · %s", t.Kind, orDash(t.Subject))), maxFieldText), false, false)),
			slackapi.NewActionBlock(fmt.Sprintf("%s%d", blockPrefix, i), els...))
	}
	return blocks
}

func button(action string, t target) *slackapi.ButtonBlockElement {
	txt := func(s string) *slackapi.TextBlockObject {
		return slackapi.NewTextBlockObject(slackapi.PlainTextType, s, false, false)
	}
	subject := truncate(orDash(t.Subject), 120)
	switch action {
	case "revoke":
		return slackapi.NewButtonBlockElement(actionPrefix+action, t.value(), txt("Revoke")).
			WithStyle(slackapi.StyleDanger).
			WithConfirm(slackapi.NewConfirmationBlockObject(txt("Revoke this key?"),
				txt(truncate("Revoke "+subject+" on the platform now. Anything still using it starts failing; this cannot be undone.", 300)),
				txt("Revoke"), txt("Cancel")).WithStyle(slackapi.StyleDanger))
	case "rotate":
		return slackapi.NewButtonBlockElement(actionPrefix+action, t.value(), txt("Rotate now")).
			WithStyle(slackapi.StylePrimary).
			WithConfirm(slackapi.NewConfirmationBlockObject(txt("Rotate now?"),
				txt(truncate("Rotate "+subject+" now: a new key is created, verified and published; the old one is revoked after the propagation wait.", 300)),
				txt("Rotate"), txt("Cancel")))
	case "snooze":
		return slackapi.NewButtonBlockElement(actionPrefix+action, t.value(), txt(fmt.Sprintf("Snooze %d days", SnoozeForDays)))
	}
	return slackapi.NewButtonBlockElement(actionPrefix+action, t.value(), txt("Acknowledge"))
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "—"
	}
	return s
}
