package budget

import (
	"fmt"
	"math"
	"strings"

	"github.com/mrbacd/mrbacd/mistral"
)

// PlatformLimit is a workspace's monthly spend limit as the platform holds
// it (WorkspaceSpendLimitOUT): Value in Currency, or no monthly limit.
type PlatformLimit struct {
	// Value is nil when no limit is set.
	Value          *float64 `json:"value"`
	Currency       string   `json:"currency,omitempty"`
	NoMonthlyLimit bool     `json:"no_monthly_limit"`
}

// PlatformLimitOf copies the platform's limit (nil for nil).
func PlatformLimitOf(l *mistral.WorkspaceSpendLimit) *PlatformLimit {
	if l == nil {
		return nil
	}
	out := &PlatformLimit{Currency: l.Currency, NoMonthlyLimit: l.NoMonthlyLimit}
	if l.Value != nil {
		v := *l.Value
		out.Value = &v
	}
	return out
}

// String renders the limit for a table: "$500.00", "€500.00 EUR", "none".
func (l *PlatformLimit) String() string {
	switch {
	case l == nil:
		return "-"
	case l.NoMonthlyLimit || l.Value == nil:
		return "none"
	case l.Currency == "" || strings.EqualFold(l.Currency, "USD"):
		return fmt.Sprintf("$%.2f", *l.Value)
	}
	return fmt.Sprintf("%.2f %s", *l.Value, strings.ToUpper(l.Currency))
}

// LimitDiffers compares a workspace's configured monthly_budget_usd (0:
// none) with its platform limit. It returns a sentence with both values and
// true when they differ; a platform that sent no limit object (nil) is not
// judged.
func LimitDiffers(budgetUSD float64, l *mistral.WorkspaceSpendLimit) (string, bool) {
	if l == nil {
		return "", false
	}
	pl := PlatformLimitOf(l)
	cfg := "no budget"
	if budgetUSD > 0 {
		cfg = fmt.Sprintf("$%.2f", budgetUSD)
	}
	say := func(why string) (string, bool) {
		return fmt.Sprintf("config monthly_budget_usd %s, platform spend_limit %s: %s", cfg, pl, why), true
	}
	limited := l.Limited()
	switch {
	case budgetUSD <= 0 && !limited:
		return "", false
	case budgetUSD <= 0:
		return say("the platform caps a workspace the config gives no budget")
	case !limited:
		return say("the platform does not cap the workspace at its budget")
	case l.Currency != "" && !strings.EqualFold(l.Currency, "USD"):
		return say("the platform's limit is in another currency")
	case math.Abs(*l.Value-budgetUSD) >= 0.005:
		return say("the two amounts differ")
	}
	return "", false
}
