package sandbox_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// FuzzParseSeed checks that no seed file panics the parser or, once
// accepted, sandbox.New. The seeds run as a normal test.
func FuzzParseSeed(f *testing.F) {
	for _, s := range []string{
		"", "workspaces: [{name: a}]\nkeys: [{name: k, workspace: a}]",
		"keys: [{name: k, workspace: Default Workspace, created_at: 2026-01-01, expiration_date: 2026-02-01}]",
		"usage: [{month: \"2026-11\", model: m, prompt_tokens: 1}]", "users: [{email: a@b}]\nkeys: [{name: x}]",
		"keys: [{name: k, key: abcdefgh}]\nspend_limit: {amount: 1}", "now: 2026-11-27T12:00:00Z", "- a\n- b", "{",
		"keys: [{name: k, key: short}]", "now: 2026-13-01T00:00:00Z", "null", "~", "workspaces: [{uuid: u, name: a}, {uuid: u, name: b}]",
		"usage: [{workspace: nope, month: 2026-1, model: m, prompt_tokens: -1}]", "keys: [{name: k, last_used: yesterday}]",
		"keys: [{name: k, created_by: ghost}]", "spend_limit: {amount: -5}", "usage: [{month: \"2026-11\", model: m, prompt_tokens: x}]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		seed, err := sandbox.ParseSeed([]byte(data))
		if err != nil {
			if err.Error() == "" || strings.Contains(err.Error(), "goroutine ") {
				t.Fatalf("error %q: want a message, never a stack", err)
			}
			return
		}
		sb := sandbox.New(sandbox.Options{Seed: seed})
		// An accepted seed is applied in full, with the defaults filled in.
		if len(sb.Workspaces()) == 0 || len(sb.Users()) == 0 {
			t.Fatalf("sandbox from %q has %d workspaces and %d users, want at least one of each", data, len(sb.Workspaces()), len(sb.Users()))
		}
		if got := len(sb.Keys()); got != len(seed.Keys) {
			t.Fatalf("sandbox from %q has %d keys, want the %d seeded", data, got, len(seed.Keys))
		}
	})
}

// bodyRoutes are the routes that read a JSON body.
var bodyRoutes = []string{
	"/v1/admin/api-keys", "/v1/admin/workspaces", "/v1/admin/spend-limit",
	"/v1/chat/completions", "/v1/embeddings", "/sandbox/clock", "/sandbox/faults",
}

// FuzzRequestBodies checks that no request body panics a route or gets a
// 5xx: a malformed one is a 4xx with a JSON error body. The seeds run as a
// normal test.
func FuzzRequestBodies(f *testing.F) {
	bodies := []string{
		"", "{", "null", "[]", "1", `"x"`, "{}", `{"name": 1}`, `{"name": "k"} {}`, `{"unknown": true}`,
		`{"name": "k", "workspace_uuid": null, "user_id": [], "expiration": "2026-99-99"}`,
		`{"name": "w", "admin_user_id": {}}`, `{"amount": "x"}`, `{"amount": -1e308}`, `{"amount": 1e400}`,
		`{"model": 1}`, `{"model": "m", "messages": null}`, `{"model": "m", "messages": [null]}`,
		`{"model": "m", "messages": [{"role": "user", "content": [1, {"type": "text"}]}]}`,
		`{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}`,
		`{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e12}`,
		`{"model": "mistral-embed", "input": {}}`, `{"model": "mistral-embed", "input": [[1], null]}`,
		`{"now": "tomorrow"}`, `{"now": 5}`, `{"route": 1}`, `{"route": "GET /v1/models", "latency": "forever"}`,
		`{"route": "GET /v1/models", "status": 99}`, `{"route": "GET /v1/models", "times": -1}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`,
	}
	for i := range bodyRoutes {
		for _, b := range bodies {
			f.Add(uint8(i), b)
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, body string) {
		sb := sandbox.New(sandbox.Options{})
		key, err := sb.AddKey("fuzz", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		path := bodyRoutes[int(route)%len(bodyRoutes)]
		auth := sb.AdminKey()
		if strings.HasPrefix(path, "/v1/chat") || strings.HasPrefix(path, "/v1/embeddings") {
			auth = key.Plaintext
		}
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+auth)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		sb.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("POST %s %q: status %d: %s", path, body, w.Code, w.Body)
		}
		if w.Code >= 400 && !json.Valid(w.Body.Bytes()) {
			t.Fatalf("POST %s %q: status %d with a body that is not JSON: %q", path, body, w.Code, w.Body)
		}
	})
}
