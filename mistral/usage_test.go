package mistral

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

func TestParseUsageShapes(t *testing.T) {
	tests := []struct {
		name string
		body string
		want map[string]map[string]ModelUsage
	}{
		{name: "models wrapper with value lists", body: `{"completion": {"models": {"mistral-small-latest": {"input": [{"usage_type": "prompt_tokens", "value": 10}, {"value": 5}], "output": [{"value": 7}]}}}, "currency": "USD", "start_date": "2026-11-01", "end_date": "2026-11-30", "prices": [{"model": "mistral-small-latest", "input_price": 0.15, "output_price": 0.6}]}`,
			want: map[string]map[string]ModelUsage{"completion": {"mistral-small-latest": {15, 7}}}},
		{name: "direct token fields", body: `{"chat": {"codestral-latest": {"prompt_tokens": 3, "completion_tokens": 4}}}`,
			want: map[string]map[string]ModelUsage{"chat": {"codestral-latest": {3, 4}}}},
		{name: "list of entries", body: `{"completion": [{"model": "a", "input_tokens": "12", "output_tokens": 1.0}, {"model": "a", "input_tokens": 1}, {"no_model": 1}]}`,
			want: map[string]map[string]ModelUsage{"completion": {"a": {13, 1}}}},
		{name: "data wrapper and objects", body: `{"ocr": {"data": {"m": {"input": {"tokens": 9}}}}, "audio": {"models": {}}, "object": "usage"}`,
			want: map[string]map[string]ModelUsage{"ocr": {"m": {9, 0}}, "audio": {}}},
		{name: "unknown inner shapes ignored", body: `{"completion": {"models": {"m": {"cost": 3}, "n": 5}}, "fine_tuning": 7}`,
			want: map[string]map[string]ModelUsage{"completion": {}}},
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
	if u.Currency != "USD" || !u.StartDate.Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) || u.EndDate.Day() != 30 || len(u.Prices) != 1 || u.Prices[0].OutputPerMillion != 0.6 {
		t.Errorf("header fields: %+v", u)
	}
	if _, err := ParseUsage([]byte(`[1,2]`)); err == nil {
		t.Error("a list at top level was accepted")
	}
	tot := Usage{Categories: map[string]map[string]ModelUsage{"completion": {"m": {1, 2}}, "chat": {"m": {3, 4}, "n": {1, 0}}, "ocr": {"m": {100, 0}}}}.Totals()
	if tot["m"] != (ModelUsage{4, 6}) || tot["n"] != (ModelUsage{1, 0}) {
		t.Errorf("Totals = %v (ocr pages must not count as tokens)", tot)
	}
}

// TestParseUsageSpecShape reads an answer shaped as the spec's
// UsageOUTJSON: every required category, the models wrappers, nested
// categories, PriceData prices as numbers and strings, date-time periods.
func TestParseUsageSpecShape(t *testing.T) {
	m := func(p, c int) string {
		return fmt.Sprintf(`{"models": {"mistral-small-2603": {"input": [{"usage_type": "prompt_tokens", "value": %d}], "output": [{"usage_type": "completion_tokens", "value": %d}]}}}`, p, c)
	}
	empty := `{"models": {}}`
	body := `{"completion": ` + m(100, 10) + `, "ocr": ` + m(7, 0) + `, "connectors": ` + empty +
		`, "libraries_api": {"pages": ` + m(3, 0) + `, "tokens": ` + m(20, 2) + `, "audio_seconds": ` + empty + `}` +
		`, "fine_tuning": {"training": ` + m(5000, 0) + `, "storage": {"ft:abc": 1024}}` +
		`, "audio": ` + empty + `, "audio_characters": ` + empty + `, "vibe_usage": 1.25` +
		`, "vibe_code": {"completion": ` + m(9, 9) + `, "ocr": ` + empty + `, "connectors": ` + empty + `, "audio": ` + empty + `, "audio_characters": ` + empty + `}` +
		`, "chat": ` + m(1, 1) + `, "date": "2026-11-27T12:00:00Z", "previous_month": "2026-10", "next_month": null` +
		`, "start_date": "2026-11-01T00:00:00Z", "end_date": "2026-11-30T23:59:59.999Z", "currency": "EUR", "currency_symbol": "€"` +
		`, "prices": [{"event_type": "api_tokens", "billing_metric": "input_tokens", "billing_group": "mistral-small-2603", "api_zone": "eu", "service_tier": "standard", "price": "0.1"},` +
		`{"event_type": null, "billing_metric": "output_tokens", "billing_group": "mistral-small-2603", "api_zone": "global", "service_tier": "priority", "price": 0.3}]}`
	u, err := ParseUsage([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]ModelUsage{"mistral-small-2603": {121, 13}} // completion + chat + libraries_api.tokens
	if !reflect.DeepEqual(u.Totals(), want) {
		t.Errorf("Totals = %v, want %v", u.Totals(), want)
	}
	for _, c := range []string{"ocr", "libraries_api.pages", "libraries_api.tokens", "libraries_api.audio_seconds", "fine_tuning.training", "vibe_code.completion", "audio_characters"} {
		if _, ok := u.Categories[c]; !ok {
			t.Errorf("category %q missing from %v", c, u.Categories)
		}
	}
	if _, ok := u.Categories["fine_tuning.storage"]; ok {
		t.Error("fine_tuning.storage read as token usage")
	}
	if u.VibeUsage != 1.25 || u.Currency != "EUR" || u.StartDate.Month() != 11 || u.EndDate.Day() != 30 {
		t.Errorf("header fields: %+v", u)
	}
	if len(u.PriceData) != 2 || u.PriceData[0].Price != 0.1 || u.PriceData[0].PriceText != "0.1" || u.PriceData[1].Price != 0.3 ||
		u.PriceData[1].BillingMetric != "output_tokens" || u.PriceData[0].APIZone != "eu" || len(u.Prices) != 0 {
		t.Errorf("prices: %+v / %+v", u.PriceData, u.Prices)
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
