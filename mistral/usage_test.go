package mistral

import (
	"reflect"
	"testing"
)

func TestParseUsageShapes(t *testing.T) {
	tests := []struct {
		name string
		body string
		want map[string]map[string]ModelUsage
	}{
		{"models wrapper with value lists", `{"completion": {"models": {"mistral-small-latest": {"input": [{"usage_type": "prompt_tokens", "value": 10}, {"value": 5}], "output": [{"value": 7}]}}}, "currency": "USD", "start_date": "2026-11-01", "end_date": "2026-11-30", "prices": [{"model": "mistral-small-latest", "input_price": 0.15, "output_price": 0.6}]}`,
			map[string]map[string]ModelUsage{"completion": {"mistral-small-latest": {15, 7}}}},
		{"direct token fields", `{"chat": {"codestral-latest": {"prompt_tokens": 3, "completion_tokens": 4}}}`,
			map[string]map[string]ModelUsage{"chat": {"codestral-latest": {3, 4}}}},
		{"list of entries", `{"completion": [{"model": "a", "input_tokens": "12", "output_tokens": 1.0}, {"model": "a", "input_tokens": 1}, {"no_model": 1}]}`,
			map[string]map[string]ModelUsage{"completion": {"a": {13, 1}}}},
		{"data wrapper and objects", `{"ocr": {"data": {"m": {"input": {"tokens": 9}}}}, "audio": {"models": {}}, "object": "usage"}`,
			map[string]map[string]ModelUsage{"ocr": {"m": {9, 0}}, "audio": {}}},
		{"unknown inner shapes ignored", `{"completion": {"models": {"m": {"cost": 3}, "n": 5}}, "fine_tuning": 7}`,
			map[string]map[string]ModelUsage{"completion": {}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseUsage([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(u.Categories, tt.want) {
				t.Errorf("Categories = %v, want %v", u.Categories, tt.want)
			}
			if len(u.Raw) == 0 {
				t.Error("Raw not kept")
			}
		})
	}
	u, _ := ParseUsage([]byte(tests[0].body))
	if u.Currency != "USD" || u.StartDate != "2026-11-01" || u.EndDate != "2026-11-30" || len(u.Prices) != 1 || u.Prices[0].OutputPerMillion != 0.6 {
		t.Errorf("header fields: %+v", u)
	}
	if _, err := ParseUsage([]byte(`[1,2]`)); err == nil {
		t.Error("a list at top level was accepted")
	}
	tot := Usage{Categories: map[string]map[string]ModelUsage{"a": {"m": {1, 2}}, "b": {"m": {3, 4}, "n": {1, 0}}}}.Totals()
	if tot["m"] != (ModelUsage{4, 6}) || tot["n"] != (ModelUsage{1, 0}) {
		t.Errorf("Totals = %v", tot)
	}
}

func TestPriceCost(t *testing.T) {
	for _, p := range DefaultPrices() {
		if p.Model == "mistral-small-latest" {
			if got := p.Cost(1_000_000, 2_000_000); got != 0.15+1.2 {
				t.Errorf("cost = %v", got)
			}
			return
		}
	}
	t.Fatal("mistral-small-latest not in DefaultPrices")
}
