package slack

import (
	"fmt"
	"strings"
	"unicode/utf8"

	slackapi "github.com/slack-go/slack"

	"github.com/mrbacd/mrbacd/notify"
)

// Block Kit limits.
const (
	maxHeader      = 150
	maxSectionText = 3000
	maxFieldText   = 2000
	maxFields      = 10
	maxBlocks      = 50
)

var severityEmoji = map[notify.Severity]string{
	notify.Critical: ":rotating_light:",
	notify.Warning:  ":warning:",
	notify.Info:     ":information_source:",
}

// Blocks renders a notification as Block Kit: a header (title), sections of
// up to ten fields, one section per notify.Section, and a context line
// (severity, kind, context). Text is escaped and cut to Slack's limits.
func Blocks(n notify.Notification) []slackapi.Block {
	var blocks []slackapi.Block
	title := n.Title
	if title == "" {
		title = n.Kind
	}
	blocks = append(blocks, slackapi.NewHeaderBlock(
		slackapi.NewTextBlockObject(slackapi.PlainTextType, truncate(severityEmoji[n.Severity]+" "+title, maxHeader), true, false)))
	for i := 0; i < len(n.Fields); i += maxFields {
		var fs []*slackapi.TextBlockObject
		for _, f := range n.Fields[i:min(i+maxFields, len(n.Fields))] {
			fs = append(fs, slackapi.NewTextBlockObject(slackapi.MarkdownType,
				truncate("*"+escape(f.Label)+"*\n"+escape(f.Value), maxFieldText), false, false))
		}
		blocks = append(blocks, slackapi.NewSectionBlock(nil, fs, nil))
	}
	if len(n.Fields) == 0 && len(n.Sections) == 0 && n.Text != "" && n.Text != n.Title {
		blocks = append(blocks, slackapi.NewSectionBlock(
			slackapi.NewTextBlockObject(slackapi.MarkdownType, truncate(escape(n.Text), maxSectionText), false, false), nil, nil))
	}
	for _, s := range n.Sections {
		if len(blocks) >= maxBlocks-2 {
			break
		}
		var b strings.Builder
		if s.Title != "" {
			b.WriteString("*" + escape(s.Title) + "*")
		}
		for _, l := range s.Lines {
			if b.Len() > 0 {
				b.WriteString("\n")
			}
			b.WriteString("• " + escape(l))
		}
		if b.Len() == 0 {
			continue
		}
		blocks = append(blocks, slackapi.NewSectionBlock(
			slackapi.NewTextBlockObject(slackapi.MarkdownType, truncate(b.String(), maxSectionText), false, false), nil, nil))
	}
	return append(blocks, footer(n))
}

// footer is the context line closing every message.
func footer(n notify.Notification) slackapi.Block {
	ctx := fmt.Sprintf("%s · %s", n.Severity, n.Kind)
	if n.Context != "" {
		ctx += " · " + n.Context
	}
	return slackapi.NewContextBlock("",
		slackapi.NewTextBlockObject(slackapi.MarkdownType, truncate(escape(ctx), maxFieldText), false, false))
}

// BlocksWithActions is Blocks with buttons for the message's targets,
// before the closing context line.
func BlocksWithActions(n notify.Notification) []slackapi.Block {
	blocks := Blocks(n)
	if len(n.Targets) == 0 {
		return blocks
	}
	body, foot := blocks[:len(blocks)-1], blocks[len(blocks)-1]
	body = append(body, ActionBlocks(n.Targets, maxBlocks-1-len(body))...)
	return append(body, foot)
}

// escape applies Slack's mrkdwn escaping (&, <, >).
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
