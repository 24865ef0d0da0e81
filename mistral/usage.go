package mistral

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Price is a model's list price in USD per million tokens.
type Price struct {
	Model            string  `json:"model"`
	InputPerMillion  float64 `json:"input_per_million"`
	OutputPerMillion float64 `json:"output_per_million"`
}

// Cost returns the price of the given token counts.
func (p Price) Cost(promptTokens, completionTokens int64) float64 {
	return (float64(promptTokens)*p.InputPerMillion + float64(completionTokens)*p.OutputPerMillion) / 1e6
}

// DefaultPrices are the list prices of August 2026 (mistral-api.md). Prices
// change: the config holds the ones in force, with these as defaults.
func DefaultPrices() []Price {
	return []Price{
		{"mistral-small-latest", 0.15, 0.60},
		{"mistral-medium-latest", 1.50, 7.50},
		{"mistral-large-latest", 0.50, 1.50},
		{"codestral-latest", 0.30, 0.90},
		{"mistral-embed", 0.10, 0},
		{"codestral-embed", 0.15, 0},
		{"ministral-14b-latest", 0.20, 0.20},
		{"ministral-8b-latest", 0.15, 0.15},
		{"ministral-3b-latest", 0.10, 0.10},
	}
}

// ModelUsage counts one model's tokens.
type ModelUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
}

// PriceData is one entry of a usage answer's price list. The spec does not
// say how a billing metric maps to a model, so the budget prices usage
// with the config's prices and keeps these for reference.
type PriceData struct {
	EventType     string `json:"event_type"`
	BillingMetric string `json:"billing_metric"`
	BillingGroup  string `json:"billing_group"`
	APIZone       string `json:"api_zone"`
	ServiceTier   string `json:"service_tier"`
	// Price is the unit price; PriceText keeps it as sent (a number or a
	// decimal string).
	Price     float64 `json:"-"`
	PriceText string  `json:"-"`
}

// Usage is a month of usage (UsageOUTJSON), per category per model. The
// platform leaves the per-model inner shape untyped, so it is parsed
// defensively; Raw keeps the whole answer.
type Usage struct {
	// StartDate and EndDate bound the period (date-time in the spec; a
	// bare date is read as midnight UTC).
	StartDate, EndDate time.Time
	Currency           string
	CurrencySymbol     string
	// VibeUsage is the month's Vibe usage amount.
	VibeUsage float64
	// PriceData is the answer's price list as sent.
	PriceData []PriceData
	// Prices are the entries of the price list that name a model with
	// input and output prices (older answers); usually empty.
	Prices []Price
	// Categories maps category → model → tokens. Nested categories are
	// named "parent.child": "libraries_api.tokens", "vibe_code.completion",
	// "fine_tuning.training".
	Categories map[string]map[string]ModelUsage
	Raw        json.RawMessage
}

// TokenCategories are the categories counted in tokens of inference
// priced per model, which Totals sums. The others count pages, seconds,
// characters, connector calls, training tokens or Vibe usage.
var TokenCategories = []string{"completion", "chat", "libraries_api.tokens"}

// Totals sums the token categories (TokenCategories) per model.
func (u Usage) Totals() map[string]ModelUsage {
	out := map[string]ModelUsage{}
	for _, c := range TokenCategories {
		for m, mu := range u.Categories[c] {
			t := out[m]
			t.PromptTokens += mu.PromptTokens
			t.CompletionTokens += mu.CompletionTokens
			out[m] = t
		}
	}
	return out
}

// Models returns the models with token usage, sorted.
func (u Usage) Models() []string {
	t := u.Totals()
	out := make([]string, 0, len(t))
	for m := range t {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// UsageQuery selects a month, optionally one workspace.
type UsageQuery struct {
	Month, Year int
	WorkspaceID string
}

// Usage reads a month of usage.
func (c *Client) Usage(ctx context.Context, q UsageQuery) (Usage, error) {
	if q.Month < 1 || q.Month > 12 || q.Year < 2000 {
		return Usage{}, fmt.Errorf("mistral: usage: invalid month %d/%d", q.Month, q.Year)
	}
	v := url.Values{}
	v.Set("month", strconv.Itoa(q.Month))
	v.Set("year", strconv.Itoa(q.Year))
	if q.WorkspaceID != "" {
		v.Set("workspace_id", q.WorkspaceID)
	}
	var raw json.RawMessage
	if err := c.do(ctx, call{method: "GET", path: "/v1/admin/usage", query: v, admin: true}, &raw); err != nil {
		return Usage{}, err
	}
	u, err := ParseUsage(raw)
	if err != nil {
		return Usage{}, fmt.Errorf("mistral: GET /v1/admin/usage: %w", err)
	}
	return u, nil
}

// nestedCategories are the categories whose object holds sub-categories.
var nestedCategories = map[string]bool{"libraries_api": true, "vibe_code": true, "fine_tuning": true}

// ParseUsage reads a usage answer. The top level must be an object; every
// object-valued field other than the known ones is a category, and those
// of nestedCategories hold sub-categories. Inside a category, per-model
// data sits under "models" (or "data"/"by_model", or directly) as an
// object keyed by model or a list of entries naming their model; token
// counts are read from prompt/input and completion/output fields holding
// numbers or lists of {value|tokens|quantity}.
func ParseUsage(raw []byte) (Usage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return Usage{}, fmt.Errorf("decode usage: want a JSON object")
	}
	u := Usage{Categories: map[string]map[string]ModelUsage{}, Raw: append(json.RawMessage(nil), raw...)}
	for k, v := range top {
		switch k {
		case "start_date":
			u.StartDate = usageTime(v)
		case "end_date":
			u.EndDate = usageTime(v)
		case "currency":
			u.Currency = jsonScalar(v)
		case "currency_symbol":
			u.CurrencySymbol = jsonScalar(v)
		case "vibe_usage":
			u.VibeUsage = priceNumber(v)
		case "prices":
			u.PriceData, u.Prices = parsePrices(v)
		case "object", "id", "month", "year", "workspace_id", "date", "previous_month", "next_month":
		default:
			if nestedCategories[k] {
				parseNested(u.Categories, k, v)
			} else if models := parseCategory(v); models != nil {
				u.Categories[k] = models
			}
		}
	}
	return u, nil
}

// parseNested reads a category of sub-categories ("libraries_api":
// {"pages", "tokens", "audio_seconds"}). fine_tuning's "storage" maps a
// model to a number, not to usage, and is left in Raw.
func parseNested(cats map[string]map[string]ModelUsage, name string, v json.RawMessage) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(v, &obj) != nil {
		return
	}
	if _, ok := obj["models"]; ok { // an older flat shape
		if models := parseCategory(v); models != nil {
			cats[name] = models
		}
		return
	}
	for sub, sv := range obj {
		if name == "fine_tuning" && sub == "storage" {
			continue
		}
		if models := parseCategory(sv); models != nil {
			cats[name+"."+sub] = models
		}
	}
}

// usageTime reads a date-time (or a bare date); zero when unreadable.
func usageTime(v json.RawMessage) time.Time {
	var t flexTime
	if json.Unmarshal(v, &t) != nil {
		return time.Time{}
	}
	return time.Time(t)
}

func parseCategory(v json.RawMessage) map[string]ModelUsage {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(v, &obj); err == nil {
		for _, wrap := range []string{"models", "data", "by_model"} {
			if inner, ok := obj[wrap]; ok {
				return parseCategory(inner)
			}
		}
		out := map[string]ModelUsage{}
		for model, mv := range obj {
			if mu, ok := parseModelUsage(mv); ok {
				addUsage(out, model, mu)
			}
		}
		return out
	}
	var list []json.RawMessage
	if err := json.Unmarshal(v, &list); err == nil {
		out := map[string]ModelUsage{}
		for _, item := range list {
			var e map[string]json.RawMessage
			if json.Unmarshal(item, &e) != nil {
				continue
			}
			model := firstScalar(e, "model", "model_name", "name", "id")
			if model == "" {
				continue
			}
			if mu, ok := parseModelUsage(item); ok {
				addUsage(out, model, mu)
			}
		}
		return out
	}
	return nil
}

func addUsage(m map[string]ModelUsage, model string, mu ModelUsage) {
	t := m[model]
	t.PromptTokens += mu.PromptTokens
	t.CompletionTokens += mu.CompletionTokens
	m[model] = t
}

// A model name in usage may carry a version suffix ("model::version");
// callers match on the part before it. Keep the name as sent.

var (
	promptFields     = []string{"prompt_tokens", "input_tokens", "input", "prompt", "tokens_in"}
	completionFields = []string{"completion_tokens", "output_tokens", "output", "completion", "tokens_out"}
)

func parseModelUsage(v json.RawMessage) (ModelUsage, bool) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(v, &obj); err != nil {
		return ModelUsage{}, false
	}
	var mu ModelUsage
	found := false
	for _, f := range promptFields {
		if x, ok := obj[f]; ok {
			mu.PromptTokens, found = tokenCount(x), true
			break
		}
	}
	for _, f := range completionFields {
		if x, ok := obj[f]; ok {
			mu.CompletionTokens, found = tokenCount(x), true
			break
		}
	}
	return mu, found
}

// tokenCount reads a number, a numeric string, an object with a count, or
// a list of those (summed).
func tokenCount(v json.RawMessage) int64 {
	var f float64
	if err := json.Unmarshal(v, &f); err == nil {
		return int64(f)
	}
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		n, _ := strconv.ParseFloat(strings.TrimSpace(s), 64)
		return int64(n)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(v, &obj); err == nil {
		for _, f := range []string{"value", "tokens", "quantity", "count", "value_paid"} {
			if x, ok := obj[f]; ok {
				return tokenCount(x)
			}
		}
		return 0
	}
	var list []json.RawMessage
	if err := json.Unmarshal(v, &list); err == nil {
		var sum int64
		for _, x := range list {
			sum += tokenCount(x)
		}
		return sum
	}
	return 0
}

func firstScalar(m map[string]json.RawMessage, fields ...string) string {
	for _, f := range fields {
		if v, ok := m[f]; ok {
			if s := jsonScalar(v); s != "" {
				return s
			}
		}
	}
	return ""
}

// parsePrices reads the price list: PriceData entries, and for entries
// that name a model (older answers) a Price.
func parsePrices(v json.RawMessage) ([]PriceData, []Price) {
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, nil
	}
	var data []PriceData
	var prices []Price
	for _, e := range list {
		if _, ok := e["billing_metric"]; ok {
			pd := PriceData{
				EventType: firstScalar(e, "event_type"), BillingMetric: firstScalar(e, "billing_metric"),
				BillingGroup: firstScalar(e, "billing_group"), APIZone: firstScalar(e, "api_zone"),
				ServiceTier: firstScalar(e, "service_tier"), PriceText: firstScalar(e, "price"),
			}
			pd.Price = priceNumber(e["price"])
			data = append(data, pd)
			continue
		}
		p := Price{Model: firstScalar(e, "model", "model_name", "name")}
		if p.Model == "" {
			continue
		}
		p.InputPerMillion = priceField(e, "input_per_million", "input_price", "input", "price_input", "prompt")
		p.OutputPerMillion = priceField(e, "output_per_million", "output_price", "output", "price_output", "completion")
		prices = append(prices, p)
	}
	return data, prices
}

func priceField(m map[string]json.RawMessage, fields ...string) float64 {
	for _, f := range fields {
		if v, ok := m[f]; ok {
			return priceNumber(v)
		}
	}
	return 0
}

// priceNumber reads a number or a decimal string; 0 otherwise.
func priceNumber(v json.RawMessage) float64 {
	var x float64
	if json.Unmarshal(v, &x) == nil {
		return x
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		if x, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
			return x
		}
	}
	return 0
}
