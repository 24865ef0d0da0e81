package sandbox

import (
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"
)

// flatCategories are UsageOUTJSON's categories that hold {"models": ...};
// nestedCategories hold sub-categories that do. Usage recorded under
// "parent.child" ("libraries_api.tokens") lands in the nested one.
var (
	flatCategories   = []string{"completion", "ocr", "connectors", "audio", "audio_characters", "chat"}
	nestedCategories = map[string][]string{
		"libraries_api": {"pages", "tokens", "audio_seconds"},
		"vibe_code":     {"completion", "ocr", "connectors", "audio", "audio_characters"},
		"fine_tuning":   {"training"},
	}
)

// usageCategoryNames lists every category a usage record may name.
func usageCategoryNames() []string {
	out := slices.Clone(flatCategories)
	for parent, subs := range nestedCategories {
		for _, sub := range subs {
			out = append(out, parent+"."+sub)
		}
	}
	sort.Strings(out)
	return out
}

func knownCategory(c string) bool { return slices.Contains(usageCategoryNames(), c) }

type usageValue struct {
	UsageType string `json:"usage_type"`
	Value     int64  `json:"value"`
}

// modelUsageJSON is the sandbox's per-model entry, which the spec leaves
// open beyond "an object of lists of objects".
type modelUsageJSON struct {
	Input  []usageValue `json:"input"`
	Output []usageValue `json:"output"`
}

type modelsJSON struct {
	Models map[string]*modelUsageJSON `json:"models"`
}

// priceDataJSON is PriceData. The sandbox's convention, which the spec
// leaves open: billing_group is the model, billing_metric "input_tokens"
// or "output_tokens", price in USD per million tokens, the input price
// sent as a decimal string and the output price as a number (the spec
// allows both).
type priceDataJSON struct {
	EventType     string `json:"event_type"`
	BillingMetric string `json:"billing_metric"`
	BillingGroup  string `json:"billing_group"`
	APIZone       string `json:"api_zone"`
	ServiceTier   string `json:"service_tier"`
	Price         any    `json:"price"`
}

// parseUsageQuery reads month and year (the spec makes them optional
// strings; the sandbox's clock month is the default).
func (s *Server) parseUsageQuery(w http.ResponseWriter, r *http.Request) (time.Time, bool) {
	q := r.URL.Query()
	now := s.Now().UTC()
	month, year := int(now.Month()), now.Year()
	var ds []detail
	if v := q.Get("month"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 12 {
			ds = append(ds, detail{Loc: []string{"query", "month"}, Msg: "Input should be an integer between 1 and 12", Type: "value_error"})
		}
		month = n
	}
	if v := q.Get("year"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2000 || n > 9999 {
			ds = append(ds, detail{Loc: []string{"query", "year"}, Msg: "Input should be a valid year", Type: "value_error"})
		}
		year = n
	}
	switch q.Get("api_zone") {
	case "", "global", "us", "eu":
	default:
		ds = append(ds, detail{Loc: []string{"query", "api_zone"}, Msg: "Input should be 'global', 'us' or 'eu'", Type: "enum"})
	}
	if len(ds) > 0 {
		writeValidation(w, ds...)
		return time.Time{}, false
	}
	return time.Date(year, time.Month(month), 1, 0, 0, 0, 0, time.UTC), true
}

// usageCategories returns an empty UsageOUTJSON category tree and the
// models map of each recordable category.
func usageCategories() (map[string]any, map[string]map[string]*modelUsageJSON) {
	tree := map[string]any{}
	byName := map[string]map[string]*modelUsageJSON{}
	for _, c := range flatCategories {
		m := modelsJSON{Models: map[string]*modelUsageJSON{}}
		tree[c], byName[c] = m, m.Models
	}
	for parent, subs := range nestedCategories {
		node := map[string]any{}
		for _, sub := range subs {
			m := modelsJSON{Models: map[string]*modelUsageJSON{}}
			node[sub], byName[parent+"."+sub] = m, m.Models
		}
		tree[parent] = node
	}
	tree["fine_tuning"].(map[string]any)["storage"] = map[string]int64{}
	return tree, byName
}

func (s *Server) getUsage(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	start, ok := s.parseUsageQuery(w, r)
	if !ok {
		return
	}
	wsID := r.URL.Query().Get("workspace_id")
	monthKey := start.Format("2006-01")
	out, byName := usageCategories()
	s.mu.RLock()
	if wsID != "" && !slices.ContainsFunc(s.workspaces, func(ws *workspace) bool { return ws.UUID == wsID }) {
		s.mu.RUnlock()
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Workspace not found"})
		return
	}
	for k, t := range s.usage {
		if k.month != monthKey || (wsID != "" && k.ws != wsID) {
			continue
		}
		c := byName[k.category]
		m := c[k.model]
		if m == nil {
			m = &modelUsageJSON{Input: []usageValue{{"prompt_tokens", 0}}, Output: []usageValue{{"completion_tokens", 0}}}
			c[k.model] = m
		}
		m.Input[0].Value += t.prompt
		m.Output[0].Value += t.completion
	}
	prices := make([]priceDataJSON, 0, 2*len(s.prices))
	for _, p := range s.prices {
		prices = append(prices,
			priceDataJSON{"api_tokens", "input_tokens", p.Model, "global", "standard", strconv.FormatFloat(p.InputPerMillion, 'f', -1, 64)},
			priceDataJSON{"api_tokens", "output_tokens", p.Model, "global", "standard", p.OutputPerMillion})
	}
	s.mu.RUnlock()
	sort.Slice(prices, func(i, j int) bool {
		return prices[i].BillingGroup+prices[i].BillingMetric < prices[j].BillingGroup+prices[j].BillingMetric
	})
	const dateTime = "2006-01-02T15:04:05Z07:00"
	out["vibe_usage"] = 0
	out["date"] = s.Now().UTC().Format(dateTime)
	out["previous_month"] = start.AddDate(0, -1, 0).Format("2006-01")
	out["next_month"] = start.AddDate(0, 1, 0).Format("2006-01")
	out["start_date"] = start.Format(dateTime)
	out["end_date"] = start.AddDate(0, 1, 0).Add(-time.Second).Format(dateTime)
	out["currency"] = "USD"
	out["currency_symbol"] = "$"
	out["prices"] = prices
	writeJSON(w, http.StatusOK, out)
}

// checkCategory validates a usage record's category ("" is "completion").
func checkCategory(c string) string {
	if c == "" {
		return "completion"
	}
	if !knownCategory(c) {
		return ""
	}
	return c
}
