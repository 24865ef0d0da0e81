package contract_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mrbacd/mrbacd/mistral/contract"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// Example is one entry of testdata/examples/index.json: a spec-shaped
// answer of an endpoint.
type Example struct {
	Endpoint string `json:"endpoint"`
	Status   string `json:"status"`
	File     string `json:"file"`
}

func examples(t *testing.T) []Example {
	t.Helper()
	b, err := os.ReadFile("testdata/examples/index.json")
	if err != nil {
		t.Fatal(err)
	}
	var out []Example
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func load(t *testing.T) *contract.Contract {
	t.Helper()
	c, err := contract.Load()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestContractCoversEndpoints: the committed contract describes every
// endpoint used, names its spec and keeps its waivers.
func TestContractCoversEndpoints(t *testing.T) {
	c := load(t)
	if c.Source.Date != "2026-08-21" || len(c.Source.Commit) != 40 || c.Source.Path != "public/openapi.yaml" {
		t.Errorf("source = %+v", c.Source)
	}
	for _, ep := range contract.Endpoints {
		e, ok := c.Endpoints[ep]
		if !ok {
			t.Errorf("%s missing", ep)
			continue
		}
		ok2xx := false
		for status := range e.Responses {
			ok2xx = ok2xx || strings.HasPrefix(status, "2")
		}
		if !ok2xx {
			t.Errorf("%s documents no success", ep)
		}
	}
	for _, w := range contract.Waivers {
		s := c.Schemas[w.Schema]
		if w.Property != "" && s.Properties[w.Property] == nil {
			t.Errorf("waiver %s.%s: property not admitted", w.Schema, w.Property)
		}
		for _, node := range append([]*contract.Schema{s}, s.AllOf...) {
			for _, r := range node.Required {
				if w.Required != "" && r == w.Required {
					t.Errorf("waiver %s.%s not applied", w.Schema, w.Required)
				}
			}
		}
	}
	if contract.SkipHeader != sandbox.FaultHeader {
		t.Errorf("the checker skips %q, the sandbox marks faults %q", contract.SkipHeader, sandbox.FaultHeader)
	}
}

// TestExamplesFollowTheSpec: every example answer validates strictly, and
// every endpoint's success has an example.
func TestExamplesFollowTheSpec(t *testing.T) {
	c := load(t)
	covered := map[string]bool{}
	for _, ex := range examples(t) {
		e := c.Endpoints[ex.Endpoint]
		if e == nil || e.Responses[ex.Status] == nil || e.Responses[ex.Status].JSON == nil {
			t.Errorf("%s %s: no such documented JSON answer", ex.Endpoint, ex.Status)
			continue
		}
		b, err := os.ReadFile(filepath.Join("testdata/examples", ex.File))
		if err != nil {
			t.Fatal(err)
		}
		if errs := c.ValidateStrictJSON(e.Responses[ex.Status].JSON, b); len(errs) > 0 {
			t.Errorf("%s (%s %s): %s", ex.File, ex.Endpoint, ex.Status, strings.Join(errs, "; "))
		}
		covered[ex.Endpoint] = true
	}
	for ep, e := range c.Endpoints {
		if e.Responses["200"] != nil && e.Responses["200"].JSON != nil && !covered[ep] {
			t.Errorf("%s has no example", ep)
		}
	}
}

// TestCheckerCatchesDrift: answers shaped as the sandbox used to answer
// before it followed the spec are each caught.
func TestCheckerCatchesDrift(t *testing.T) {
	tests := []struct {
		name, method, path string
		status             int
		body               string
		want               string
	}{
		{name: "spend limit without LimitsContext", method: "GET", path: "/v1/admin/spend-limit", status: 200,
			body: `{"limits": {"completion": {"monthly_limit_reached": false, "no_monthly_limit": true, "usage": 0, "usage_limit": null}}, "currency": "USD"}`,
			want: "missing required field currency"},
		{name: "workspace with is_archived", method: "GET", path: "/v1/admin/workspaces", status: 200,
			body: `{"total": 1, "items": [{"uuid": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "name": "w", "description": "", "icon": null, "members_count": 1, "is_default": true, "is_archived": false, "spend_limit": null}], "object": "list", "page": 1, "page_size": 25}`,
			want: "$.items[0].is_archived: field not in the spec"},
		{name: "member with id", method: "GET", path: "/v1/admin/users", status: 200,
			body: `{"members": [{"id": "u1", "email": "a@b.c", "name": "A", "role": "admin"}], "invites": [], "total": 1, "page": 1, "page_size": 25}`,
			want: "missing required field uuid"},
		{name: "created key with a date-time expiration", method: "POST", path: "/v1/admin/api-keys", status: 200,
			body: `{"key_id": "8f1c2a3b-4d5e-4f60-8a1b-2c3d4e5f6a7d", "key": "k", "name": "n", "hidden_key": "k", "created_at": "2026-11-27T12:00:00Z", "expiration_date": "2026-12-27T00:00:00Z", "actions": {}}`,
			want: "is not a date"},
		{name: "usage without the nested categories", method: "GET", path: "/v1/admin/usage", status: 200,
			body: `{"completion": {"models": {}}, "start_date": "2026-11-01", "end_date": "2026-11-30", "currency": "USD", "currency_symbol": "$", "prices": []}`,
			want: "missing required field chat"},
		{name: "audit log id as a string", method: "GET", path: "/v1/admin/audit-logs", status: 200,
			body: `[{"created_at": "2026-11-27T10:00:00Z", "actor_type": "ROBOT", "actor_metadata": {}, "event_type": "api_key.create", "event_metadata": {}, "target_type": "API_KEY", "target_metadata": {}, "log_id": "1"}]`,
			want: "$[0].log_id: want integer, got string"},
		{name: "undocumented success", method: "DELETE", path: "/v1/admin/api-keys/8f1c2a3b-4d5e-4f60-8a1b-2c3d4e5f6a7d", status: 204, body: ``, want: "status 204 is not documented"},
	}
	c := load(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			})
			k := contract.NewChecker(c, h, false)
			k.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tt.method, tt.path, nil))
			got := strings.Join(k.Problems(), "\n")
			if !strings.Contains(got, tt.want) {
				t.Errorf("problems %q, want one containing %q", got, tt.want)
			}
		})
	}
}

// TestCheckerRequests: a request off the spec is a problem when requests
// are checked.
func TestCheckerRequests(t *testing.T) {
	c := load(t)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"detail": "API key deleted successfully"}`))
	})
	tests := []struct {
		name, method, target, body, want string
	}{
		{name: "unknown query parameter", method: "GET", target: "/v1/admin/api-keys?page=2", body: "", want: "query page: not in the spec"},
		{name: "limit not an integer", method: "GET", target: "/v1/admin/api-keys?limit=ten", body: "", want: "query limit"},
		{name: "bad sort", method: "GET", target: "/v1/admin/audit-logs?sort=up", body: "", want: "query sort"},
		{name: "create without user_id", method: "POST", target: "/v1/admin/api-keys", body: `{"workspace_uuid": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}`, want: "missing required field user_id"},
		{name: "fractional amount", method: "POST", target: "/v1/admin/spend-limit", body: `{"amount": 10.5}`, want: "$.amount: want integer"},
		{name: "user message with a name", method: "POST", target: "/v1/chat/completions", body: `{"model": "m", "messages": [{"role": "user", "content": "x", "name": "bob"}]}`, want: "$.messages[0]"},
		{name: "unknown chat field", method: "POST", target: "/v1/chat/completions", body: `{"model": "m", "messages": [], "user": "bob"}`, want: "$.user: field not in the spec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := contract.NewChecker(c, ok, true)
			k.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body)))
			got := strings.Join(k.Problems(), "\n")
			if !strings.Contains(got, tt.want) {
				t.Errorf("problems %q, want one containing %q", got, tt.want)
			}
		})
	}
	k := contract.NewChecker(c, ok, true)
	k.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/chat/completions",
		strings.NewReader(`{"model": "m", "messages": [{"role": "user", "content": "x"}], "metadata": {"a": 1}, "reasoning_effort": "high", "guardrails": [], "prompt_cache_key": "k", "service_tier": "auto"}`)))
	for _, p := range k.Problems() {
		if strings.Contains(p, "request") {
			t.Errorf("a request the spec allows: %q", p)
		}
	}
}
