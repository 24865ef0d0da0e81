package budget

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

func TestLimitDiffers(t *testing.T) {
	v := func(f float64) *float64 { return &f }
	tests := []struct {
		name     string
		budget   float64
		limit    *mistral.WorkspaceSpendLimit
		wantDiff bool
		wantText string
	}{
		{name: "platform sent nothing", budget: 50, limit: nil},
		{name: "both none", budget: 0, limit: &mistral.WorkspaceSpendLimit{NoMonthlyLimit: true, Currency: "USD"}},
		{name: "equal", budget: 50, limit: &mistral.WorkspaceSpendLimit{Value: v(50), Currency: "USD"}},
		{name: "equal within a cent", budget: 50, limit: &mistral.WorkspaceSpendLimit{Value: v(50.001)}},
		{name: "amounts differ", budget: 50, limit: &mistral.WorkspaceSpendLimit{Value: v(40), Currency: "USD"}, wantDiff: true,
			wantText: "config monthly_budget_usd $50.00, platform spend_limit $40.00"},
		{name: "platform uncapped", budget: 50, limit: &mistral.WorkspaceSpendLimit{NoMonthlyLimit: true, Currency: "USD"}, wantDiff: true,
			wantText: "platform spend_limit none"},
		{name: "platform null value", budget: 50, limit: &mistral.WorkspaceSpendLimit{Currency: "USD"}, wantDiff: true,
			wantText: "does not cap"},
		{name: "platform caps an unbudgeted workspace", budget: 0, limit: &mistral.WorkspaceSpendLimit{Value: v(10), Currency: "USD"}, wantDiff: true,
			wantText: "config monthly_budget_usd no budget, platform spend_limit $10.00"},
		{name: "other currency", budget: 50, limit: &mistral.WorkspaceSpendLimit{Value: v(50), Currency: "EUR"}, wantDiff: true,
			wantText: "50.00 EUR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			text, diff := LimitDiffers(tc.budget, tc.limit)
			if diff != tc.wantDiff || !strings.Contains(text, tc.wantText) {
				t.Fatalf("LimitDiffers = %q, %v; want %v containing %q", text, diff, tc.wantDiff, tc.wantText)
			}
		})
	}
}

// TestBudgetShowsPlatformLimit: the report carries each workspace's
// platform spend_limit beside its budget, in JSON too, and names a drift;
// a limit changed in the console is read on the next run.
func TestBudgetShowsPlatformLimit(t *testing.T) {
	w := newWorld(t)
	_, rep := w.run(t)
	byName := map[string]WorkspaceSpend{}
	for _, ws := range rep.Workspaces {
		byName[ws.Workspace] = ws
	}
	ml, dev, free := byName["ml-workspace"], byName["dev-workspace"], byName["free-workspace"]
	if ml.PlatformLimit == nil || ml.PlatformLimit.Value == nil || *ml.PlatformLimit.Value != 500 || ml.PlatformLimit.Currency != "USD" || ml.LimitDrift != "" {
		t.Fatalf("ml-workspace: platform limit %+v drift %q; want $500 USD and no drift", ml.PlatformLimit, ml.LimitDrift)
	}
	if dev.PlatformLimit == nil || !dev.PlatformLimit.NoMonthlyLimit || !strings.Contains(dev.LimitDrift, "$50.00") {
		t.Fatalf("dev-workspace: platform limit %+v drift %q; want none and a drift naming the $50 budget", dev.PlatformLimit, dev.LimitDrift)
	}
	if free.LimitDrift != "" {
		t.Fatalf("free-workspace: drift %q, want none (no budget, no limit)", free.LimitDrift)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"platform_limit":{"value":500,"currency":"USD","no_monthly_limit":false}`) {
		t.Fatalf("JSON lacks ml-workspace's platform limit: %s", b)
	}

	limit := 50.0
	if err := w.sb.Console(sandbox.ConsoleChange{WorkspaceSpendLimit: &sandbox.WorkspaceLimitChange{Workspace: "dev-workspace", Value: &limit}}); err != nil {
		t.Fatal(err)
	}
	_, rep = w.run(t)
	for _, ws := range rep.Workspaces {
		if ws.Workspace == "dev-workspace" && (ws.LimitDrift != "" || ws.PlatformLimit.String() != "$50.00") {
			t.Fatalf("after the console change: dev-workspace limit %s drift %q; want $50.00 and no drift", ws.PlatformLimit, ws.LimitDrift)
		}
	}
}
