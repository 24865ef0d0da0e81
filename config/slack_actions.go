package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// slackUserIDRE matches Slack user ids (U… or, for Enterprise Grid, W…).
var slackUserIDRE = regexp.MustCompile(`^[UW][A-Z0-9]{6,20}$`)

// validateSlackActions checks notify.slack's Socket Mode token and operators.
func (v *validator) validateSlackActions(sl *Slack, hasToken bool) {
	p := "notify.slack"
	v.envFile(p, "app_token", sl.AppTokenEnv, sl.AppTokenFile, false)
	hasApp := sl.AppTokenEnv != "" || sl.AppTokenFile != ""
	if hasApp && !hasToken && (sl.WebhookURLEnv != "" || sl.WebhookURLFile != "") {
		v.errorf(join(p, appTokenField(sl)), "Socket Mode needs a bot token (token_env or token_file): a webhook cannot update messages")
	}
	if len(sl.Operators) > 0 && !hasApp {
		v.errorf(p+".operators", "operators act through Socket Mode: set app_token_env or app_token_file")
	}
	users := map[string]int{}
	for i, op := range sl.Operators {
		op := op
		q := fmt.Sprintf("%s.operators[%d]", p, i)
		switch {
		case op.User == "":
			v.errorf(q+".user", "required: a Slack user id such as U0123ABCD")
		case strings.HasPrefix(op.User, "@") || !slackUserIDRE.MatchString(op.User):
			v.errorf(q+".user", "%s is not a Slack user id: give the id (U0123ABCD, from the profile's \"Copy member ID\"), never a name", quoteShort(op.User))
		default:
			if j, dup := users[op.User]; dup {
				v.errorf(q+".user", "same user as %s.operators[%d]: merge their actions", p, j)
			}
			users[op.User] = i
		}
		if len(op.Actions) == 0 {
			v.errorf(q+".actions", "required: some of %s", strings.Join(SlackActions, ", "))
		}
		for j, a := range op.Actions {
			if !slices.Contains(SlackActions, a) {
				msg := fmt.Sprintf("must be one of %s, got %s", strings.Join(SlackActions, ", "), quoteShort(a))
				if s := closest(a, SlackActions); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				v.errorf(fmt.Sprintf("%s.actions[%d]", q, j), "%s", msg)
			}
		}
	}
}

func appTokenField(sl *Slack) string {
	if sl.AppTokenEnv != "" {
		return "app_token_env"
	}
	return "app_token_file"
}

// Allows reports whether the Slack user id may take action.
func (sl *Slack) Allows(user, action string) bool {
	if sl == nil {
		return false
	}
	for _, op := range sl.Operators {
		if op.User == user {
			return slices.Contains(op.Actions, action)
		}
	}
	return false
}
