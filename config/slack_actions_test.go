package config

import "testing"

func TestSlackOperators(t *testing.T) {
	src := minimalBody + `notify:
  slack:
    token_env: SLACK_BOT_TOKEN
    app_token_file: /run/secrets/slack-app-token
    channel: "#alerts"
    operators:
      - {user: U0123ABCD, actions: [rotate, revoke, snooze, acknowledge]}
      - {user: W0GRIDUSER1, actions: [snooze]}
`
	cfg, err := Parse("ops.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sl := cfg.Notify.Slack
	if sl.AppTokenFile != "/run/secrets/slack-app-token" || len(sl.Operators) != 2 {
		t.Fatalf("slack = %+v", sl)
	}
	cases := []struct {
		name, user, action string
		want               bool
	}{
		{name: "granted", user: "U0123ABCD", action: ActionRevoke, want: true},
		{name: "grid user, granted", user: "W0GRIDUSER1", action: ActionSnooze, want: true},
		{name: "grid user, not granted", user: "W0GRIDUSER1", action: ActionRotate, want: false},
		{name: "stranger", user: "U9999999", action: ActionSnooze, want: false},
		{name: "empty user", user: "", action: ActionSnooze, want: false},
	}
	for _, c := range cases {
		if got := sl.Allows(c.user, c.action); got != c.want {
			t.Errorf("%s: Allows(%q, %q) = %v", c.name, c.user, c.action, got)
		}
	}
	var none *Slack
	if none.Allows("U0123ABCD", ActionSnooze) {
		t.Error("nil Slack allows")
	}
}
