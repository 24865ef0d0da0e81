package sandbox_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
)

var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

type harness struct {
	t   *testing.T
	sb  *sandbox.Server
	url string
}

func start(t *testing.T, seed *sandbox.Seed) *harness {
	t.Helper()
	sb := sandbox.New(sandbox.Options{Seed: seed, Now: func() time.Time { return testNow }})
	// Every answer of the tests using start is checked against the spec.
	ts := sandboxtest.Serve(t, sb, false)
	return &harness{t: t, sb: sb, url: ts.URL}
}

// do sends a request and returns status, headers and body. auth is a full
// header line ("Authorization: Bearer X" or "x-api-key: X") or "".
func (h *harness) do(method, path, auth, body string) (int, http.Header, []byte) {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if auth != "" {
		k, v, _ := strings.Cut(auth, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (h *harness) admin() string { return "Authorization: Bearer " + h.sb.AdminKey() }

// object decodes a JSON object and checks it has exactly the wanted keys.
func object(t *testing.T, what string, raw any, keys ...string) map[string]any {
	t.Helper()
	var m map[string]any
	switch v := raw.(type) {
	case []byte:
		if err := json.Unmarshal(v, &m); err != nil {
			t.Fatalf("%s: not a JSON object: %s", what, v)
		}
	case map[string]any:
		m = v
	default:
		t.Fatalf("%s: not an object: %T %v", what, raw, raw)
	}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	sort.Strings(keys)
	if strings.Join(got, ",") != strings.Join(keys, ",") {
		t.Errorf("%s: fields %v, want %v", what, got, keys)
	}
	return m
}

func (h *harness) createKey(name, extra string) map[string]any {
	h.t.Helper()
	ws := h.sb.Workspaces()[0].UUID
	user := h.sb.Users()[0].ID
	st, _, b := h.do("POST", "/v1/admin/api-keys", h.admin(), fmt.Sprintf(`{"name": %q, "workspace_uuid": %q, "user_id": %q%s}`, name, ws, user, extra))
	if st != 200 {
		h.t.Fatalf("create key: %d %s", st, b)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// keyFields are APIKeyOUT's, the answer to a create; listedKeyFields
// APIKeyExtendedOUT's.
var (
	keyFields       = []string{"key_id", "key", "name", "hidden_key", "created_at", "expiration_date", "actions"}
	listedKeyFields = append(slices.Clone(keyFields), "workspace_id", "workspace_name", "created_by", "product", "last_used", "can_delete")
)

// TestJSONShapes checks each answer against the shapes of mistral-api.md.
func TestJSONShapes(t *testing.T) {
	h := start(t, nil)
	k := h.createKey("shape", `, "expiration": "2027-01-01"`)
	object(t, "created key", k, keyFields...)
	if k["key"] == nil || k["expiration_date"] != "2027-01-01" {
		t.Errorf("created key values: %v", k)
	}
	if _, err := time.Parse(time.RFC3339, k["created_at"].(string)); err != nil {
		t.Errorf("created_at %v: %v", k["created_at"], err)
	}
	actions := object(t, "actions", k["actions"], "rotate", "delete")
	object(t, "actions.rotate", actions["rotate"], "status", "reason")
	object(t, "actions.delete", actions["delete"], "status")
	plain := k["key"].(string)
	auth := "Authorization: Bearer " + plain

	st, _, b := h.do("GET", "/v1/admin/api-keys?limit=100&offset=0&name=shape", h.admin(), "")
	list := object(t, "key list", b, "keys")
	if st != 200 || len(list["keys"].([]any)) != 1 {
		t.Fatalf("list: %d %s", st, b)
	}
	listed := object(t, "listed key", list["keys"].([]any)[0], listedKeyFields...)
	if listed["key"] != nil || listed["last_used"] != nil || listed["product"] != "API" || listed["created_by"] != sandbox.DefaultUserEmail {
		t.Errorf("listed key: %v", listed)
	}

	_, _, b = h.do("GET", "/v1/admin/workspaces?page=1&page_size=25&search=&is_archived=", h.admin(), "")
	wp := object(t, "workspace page", b, "total", "items", "object", "page", "page_size")
	w := object(t, "workspace", wp["items"].([]any)[0], "uuid", "name", "description", "icon", "members_count", "is_default", "spend_limit")
	object(t, "workspace spend_limit", w["spend_limit"], "value", "currency", "no_monthly_limit")

	_, _, b = h.do("GET", "/v1/admin/users?page=1&page_size=10&email=", h.admin(), "")
	users := object(t, "users", b, "members", "invites", "total", "page", "page_size")
	object(t, "member", users["members"].([]any)[0], "uuid", "oid_id", "name", "email", "is_sso_outsider", "workspaces", "subscriptions",
		"raw_roles", "raw_role", "created_at")

	_, _, b = h.do("GET", "/v1/models", auth, "")
	models := object(t, "models", b, "object", "data")
	m := object(t, "model", models["data"].([]any)[0], "id", "object", "created", "owned_by", "capabilities", "name", "description",
		"max_context_length", "aliases", "deprecation", "default_model_temperature", "type")
	if m["object"] != "model" || models["object"] != "list" {
		t.Errorf("models: %v", models)
	}

	st, hdr, b := h.do("POST", "/v1/chat/completions", auth, `{"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi there"}], "temperature": 0.2, "top_p": 1, "max_tokens": 50, "random_seed": 1, "safe_prompt": false, "stop": ["\n"], "response_format": {"type": "text"}}`)
	if st != 200 || hdr.Get("x-ratelimit-remaining-req-minute") == "" {
		t.Fatalf("chat: %d %v %s", st, hdr, b)
	}
	chat := object(t, "chat", b, "id", "object", "created", "model", "choices", "usage")
	choice := object(t, "choice", chat["choices"].([]any)[0], "index", "message", "finish_reason")
	msg := choice["message"].(map[string]any)
	if msg["role"] != "assistant" || chat["object"] != "chat.completion" {
		t.Errorf("chat: %s", b)
	}
	object(t, "usage", chat["usage"], "prompt_tokens", "completion_tokens", "total_tokens")

	st, hdr, b = h.do("POST", "/v1/chat/completions", auth, `{"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}], "stream": true}`)
	if st != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %v", st, hdr)
	}
	var events []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, d)
		}
	}
	if len(events) < 3 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream events: %q", events)
	}
	for i, ev := range events[:len(events)-1] {
		c := map[string]any{}
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if c["object"] != "chat.completion.chunk" || c["p"] == nil {
			t.Errorf("chunk %d: %v", i, c)
		}
		delta := c["choices"].([]any)[0].(map[string]any)["delta"]
		if delta == nil {
			t.Errorf("chunk %d lacks delta", i)
		}
		_, hasUsage := c["usage"]
		if hasUsage != (i == len(events)-2) {
			t.Errorf("chunk %d usage presence %v", i, hasUsage)
		}
	}

	_, _, b = h.do("POST", "/v1/embeddings", auth, `{"model": "mistral-embed", "input": "one text"}`)
	emb := object(t, "embeddings", b, "id", "object", "model", "data", "usage")
	object(t, "embedding", emb["data"].([]any)[0], "object", "embedding", "index")

	_, _, b = h.do("GET", "/v1/admin/usage?month=11&year=2026", h.admin(), "")
	u := map[string]any{}
	_ = json.Unmarshal(b, &u)
	for _, f := range []string{"completion", "chat", "ocr", "fine_tuning", "audio", "start_date", "end_date", "currency", "currency_symbol", "prices"} {
		if _, ok := u[f]; !ok {
			t.Errorf("usage lacks %s", f)
		}
	}

	_, _, b = h.do("GET", "/v1/admin/spend-limit", h.admin(), "")
	sl := object(t, "spend limit", b, "limits")
	limits := object(t, "spend limit limits", sl["limits"], "completion", "currency", "last_payment_failure", "last_payment_failure_protection")
	object(t, "spend limit completion", limits["completion"], "monthly_limit_reached", "no_monthly_limit", "usage", "vibe_usage", "total_usage", "usage_limit")
	st, _, _ = h.do("POST", "/v1/admin/spend-limit", h.admin(), `{"amount": 20, "no_monthly_limit": false}`)
	if st != 200 {
		t.Errorf("set spend limit: %d", st)
	}
	_, _, b = h.do("GET", "/v1/admin/rate-limit", h.admin(), "")
	rl := object(t, "rate limit", b, "requests_per_second", "tokens_limits_by_model")
	object(t, "model token limits", rl["tokens_limits_by_model"].(map[string]any)["mistral-small-latest"], "tokens_per_minute", "tokens_per_month")

	st, _, b = h.do("DELETE", "/v1/admin/api-keys/"+k["key_id"].(string), h.admin(), "")
	if st != 200 || string(b) != `{"detail":"API key deleted successfully"}` {
		t.Errorf("delete: %d %s", st, b)
	}
}

func TestErrorShapes(t *testing.T) {
	h := start(t, nil)
	k := h.createKey("k", "")
	auth := "Authorization: Bearer " + k["key"].(string)
	tests := []struct {
		name         string
		method, path string
		auth, body   string
		status       int
		want         string // exact body, or prefix when ending in "*"
	}{
		{name: "models unknown key", method: "GET", path: "/v1/models", auth: "Authorization: Bearer nope", body: "", status: 401, want: `{"message":"Unauthorized","request_id":"*`},
		{name: "chat no key", method: "POST", path: "/v1/chat/completions", auth: "", body: `{}`, status: 401, want: `{"detail":"Unauthorized"}`},
		{name: "admin no key", method: "GET", path: "/v1/admin/api-keys", auth: "", body: "", status: 401, want: `{"message":"Unauthorized","request_id":"*`},
		{name: "admin with inference key", method: "GET", path: "/v1/admin/api-keys", auth: auth, body: "", status: 403, want: ``},
		{name: "admin x-api-key", method: "GET", path: "/v1/admin/rate-limit", auth: "x-api-key: " + h.sb.AdminKey(), body: "", status: 200, want: `{"requests_per_second":*`},
		{name: "chat unknown field", method: "POST", path: "/v1/chat/completions", auth: auth, body: `{"model":"mistral-small-latest","messages":[{"role":"user","content":"x"}],"foo":1}`, status: 422,
			want: `{"detail":[{"loc":["body","foo"],"msg":"Extra inputs are not permitted","type":"extra_forbidden"}]}`},
		{name: "chat missing model", method: "POST", path: "/v1/chat/completions", auth: auth, body: `{"messages":[{"role":"user","content":"x"}]}`, status: 422,
			want: `{"detail":[{"loc":["body","model"],"msg":"Field required","type":"missing"}]}`},
		{name: "chat bad role", method: "POST", path: "/v1/chat/completions", auth: auth, body: `{"model":"mistral-small-latest","messages":[{"role":"robot","content":"x"}]}`, status: 422, want: `{"detail":[{"loc":["body","messages","0","role"]*`},
		{name: "chat bad type", method: "POST", path: "/v1/chat/completions", auth: auth, body: `{"model":"mistral-small-latest","messages":[],"max_tokens":"x"}`, status: 422, want: `{"detail":[{"loc":["body","max_tokens"],"msg":"Input should be a valid integer"*`},
		{name: "chat invalid json", method: "POST", path: "/v1/chat/completions", auth: auth, body: `{"model":`, status: 422, want: `{"detail":[{"loc":["body"],"msg":"Invalid JSON"*`},
		{name: "chat unknown model", method: "POST", path: "/v1/chat/completions", auth: auth, body: `{"model":"gpt","messages":[{"role":"user","content":"x"}]}`, status: 400,
			want: `{"code":"1500","message":"Invalid model: gpt","object":"error","param":null,"type":"invalid_model"}`},
		{name: "create missing fields", method: "POST", path: "/v1/admin/api-keys", auth: h.admin(), body: `{}`, status: 422,
			want: `{"detail":[{"loc":["body","workspace_uuid"],"msg":"Field required","type":"missing"},{"loc":["body","user_id"],"msg":"Field required","type":"missing"}]}`},
		{name: "create long name", method: "POST", path: "/v1/admin/api-keys", auth: h.admin(), body: `{"name":"` + strings.Repeat("n", 256) + `","workspace_uuid":"w","user_id":"u"}`, status: 422,
			want: `{"detail":[{"loc":["body","name"],"msg":"String should have at most 255 characters","type":"string_too_long"}]}`},
		{name: "spend limit not an integer", method: "POST", path: "/v1/admin/spend-limit", auth: h.admin(), body: `{"amount": 10.5}`, status: 422, want: `{"detail":[{"loc":["body","amount"],"msg":"Input should be a valid integer"*`},
		{name: "workspace without admin", method: "POST", path: "/v1/admin/workspaces", auth: h.admin(), body: `{"name": "w2"}`, status: 422,
			want: `{"detail":[{"loc":["body","admin_user_id"],"msg":"Field required","type":"missing"}]}`},
		{name: "user message with name", method: "POST", path: "/v1/chat/completions", auth: auth, body: `{"model":"mistral-small-latest","messages":[{"role":"user","content":"x","name":"bob"}]}`, status: 422,
			want: `{"detail":[{"loc":["body","messages","0","user","name"],"msg":"Extra inputs are not permitted","type":"extra_forbidden"}]}`},
		{name: "chat bad service tier", method: "POST", path: "/v1/chat/completions", auth: auth, body: `{"model":"mistral-small-latest","messages":[{"role":"user","content":"x"}],"service_tier":"gold"}`, status: 422,
			want: `{"detail":[{"loc":["body","service_tier"]*`},
		{name: "retired model", method: "POST", path: "/v1/chat/completions", auth: auth, body: `{"model":"open-mistral-7b","messages":[{"role":"user","content":"x"}]}`, status: 400,
			want: `{"code":"1500","message":"Model open-mistral-7b has been retired; use ministral-8b-latest","object":"error","param":null,"type":"invalid_model"}`},
		{name: "create bad expiration", method: "POST", path: "/v1/admin/api-keys", auth: h.admin(), body: `{"name":"x","workspace_uuid":"w","user_id":"u","expiration":"tomorrow"}`, status: 422, want: `{"detail":[{"loc":["body","expiration"]*`},
		{name: "delete unknown", method: "DELETE", path: "/v1/admin/api-keys/nope", auth: h.admin(), body: "", status: 404, want: `{"detail":"API key not found"}`},
		{name: "bad limit", method: "GET", path: "/v1/admin/api-keys?limit=abc", auth: h.admin(), body: "", status: 422, want: `{"detail":[{"loc":["query","limit"]*`},
		{name: "usage bad zone", method: "GET", path: "/v1/admin/usage?api_zone=mars", auth: h.admin(), body: "", status: 422, want: `{"detail":[{"loc":["query","api_zone"]*`},
		{name: "usage bad month", method: "GET", path: "/v1/admin/usage?month=13&year=2026", auth: h.admin(), body: "", status: 422, want: `{"detail":[{"loc":["query","month"],"msg":"Input should be an integer between 1 and 12","type":"value_error"}]}`},
		{name: "unknown route", method: "GET", path: "/v1/nope", auth: h.admin(), body: "", status: 404, want: `{"detail":"Not Found"}`},
		{name: "control without key", method: "GET", path: "/sandbox/events", auth: "", body: "", status: 401, want: `{"message":"Unauthorized"*`},
		{name: "healthz open", method: "GET", path: "/sandbox/healthz", auth: "", body: "", status: 200, want: `{"status":"ok"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, _, b := h.do(tt.method, tt.path, tt.auth, tt.body)
			got := string(b)
			ok := got == tt.want
			if p, isPrefix := strings.CutSuffix(tt.want, "*"); isPrefix {
				ok = strings.HasPrefix(got, p)
			}
			if st != tt.status || !ok {
				t.Errorf("got %d %s, want %d %s", st, got, tt.status, tt.want)
			}
		})
	}
}

func TestSeed(t *testing.T) {
	valid := `
admin_key: sk-admin-from-seed-000000000000
now: 2026-11-27T12:00:00Z
workspaces:
  - {uuid: aaaaaaaa-0000-4000-8000-000000000001, name: dev-workspace}
  - {name: ml-workspace}
users: [{id: u-1, email: ops@example.com}]
keys:
  - {name: dev-team-key, key: DevTeamKeyPlaintext0123456789abc, workspace: dev-workspace, created_at: 2026-08-01T00:00:00Z, last_used: 2026-11-20, expiration_date: 2027-01-01}
  - {name: expired-key, key: ExpiredKeyPlaintext0123456789abc, workspace: aaaaaaaa-0000-4000-8000-000000000001, expiration_date: 2026-11-26}
  - {name: ml-key, workspace: ml-workspace, created_at: 2026-10-01}
usage:
  - {workspace: ml-workspace, month: "2026-11", model: mistral-small-latest, prompt_tokens: 10, completion_tokens: 20}
spend_limit: {amount: 50}
`
	dir := t.TempDir()
	path := filepath.Join(dir, "seed.yaml")
	if err := os.WriteFile(path, []byte(valid), 0o600); err != nil {
		t.Fatal(err)
	}
	seed, err := sandbox.LoadSeed(path)
	if err != nil {
		t.Fatal(err)
	}
	sb := sandbox.New(sandbox.Options{Seed: seed})
	if sb.AdminKey() != "sk-admin-from-seed-000000000000" || !sb.Now().Equal(testNow) {
		t.Errorf("admin key / now: %s %v", sb.AdminKey(), sb.Now())
	}
	ws := sb.Workspaces()
	if len(ws) != 2 || ws[0].UUID != "aaaaaaaa-0000-4000-8000-000000000001" || !ws[0].IsDefault || ws[1].UUID == "" {
		t.Errorf("workspaces = %+v", ws)
	}
	keys := sb.Keys()
	if len(keys) != 3 || keys[0].LastUsed == nil || keys[0].LastUsed.String() != "2026-11-20" || keys[0].CreatedBy != "u-1" ||
		!keys[0].CreatedAt.Equal(time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC)) || keys[2].WorkspaceID != ws[1].UUID || len(keys[2].Plaintext) != 32 {
		t.Errorf("keys = %+v", keys)
	}
	if !sb.Accepts("DevTeamKeyPlaintext0123456789abc") || sb.Accepts("ExpiredKeyPlaintext0123456789abc") || sb.Accepts("unknown") {
		t.Error("Accepts")
	}
	if u := sb.WorkspaceUsage("ml-workspace", "2026-11"); u["mistral-small-latest"] != (mistral.ModelUsage{PromptTokens: 10, CompletionTokens: 20}) {
		t.Errorf("usage = %v", u)
	}

	bad := []struct {
		name, yaml, want string
	}{
		{name: "unknown field", yaml: "keys: [{name: a, colour: red}]", want: `seed: line 1: unknown field "colour"`},
		{name: "string for a number", yaml: "usage: [{month: \"2026-11\", model: m, prompt_tokens: sk-secret-0123456789}]",
			want: "seed: line 1: expected an integer, got a string"},
		{name: "scalar for a mapping", yaml: "spend_limit: x", want: "seed: line 1: expected a mapping, got a string"},
		{name: "mapping for a list", yaml: "workspaces: {a: 1}", want: "seed: line 1: expected a list, got a mapping"},
		{name: "not yaml", yaml: "keys: [", want: "did not find expected"},
		{name: "unknown workspace", yaml: "keys: [{name: a, workspace: nope}]", want: `keys[0].workspace: unknown workspace "nope"`},
		{name: "missing key name", yaml: "keys: [{key: abcdefghijkl}]", want: "keys[0].name: required"},
		{name: "short plaintext", yaml: "keys: [{name: a, key: abc}]", want: "keys[0].key: too short"},
		{name: "duplicate plaintext", yaml: "keys: [{name: a, key: abcdefghijkl}, {name: b, key: abcdefghijkl}]", want: "keys[1].key: the same plaintext"},
		{name: "bad created_at", yaml: "keys: [{name: a, created_at: yesterday}]", want: "keys[0].created_at"},
		{name: "bad last_used", yaml: "keys: [{name: a, last_used: 2026-11-20T10:00:00Z}]", want: "keys[0].last_used"},
		{name: "bad expiration", yaml: "keys: [{name: a, expiration_date: 2026-13-01}]", want: "keys[0].expiration_date"},
		{name: "unknown creator", yaml: "keys: [{name: a, created_by: ghost}]", want: "keys[0].created_by"},
		{name: "duplicate workspace", yaml: "workspaces: [{name: a}, {name: a}]", want: "workspaces[1].name: duplicate"},
		{name: "nameless workspace", yaml: "workspaces: [{uuid: x}]", want: "workspaces[0].name: required"},
		{name: "bad email", yaml: "users: [{id: u, email: nobody}]", want: "users[0].email"},
		{name: "bad usage month", yaml: "usage: [{month: 2026-11-01, model: m}]", want: "usage[0].month"},
		{name: "usage without model", yaml: `usage: [{month: "2026-11"}]`, want: "usage[0].model: required"},
		{name: "negative tokens", yaml: `usage: [{month: "2026-11", model: m, prompt_tokens: -1}]`, want: "usage[0]: token counts"},
		{name: "bad now", yaml: "now: tomorrow", want: "now:"},
		{name: "negative limit", yaml: "spend_limit: {amount: -1}", want: "spend_limit.amount"},
	}
	for _, tt := range bad {
		_, err := sandbox.ParseSeed([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
			continue
		}
		// Messages speak YAML, not Go, and never quote a value (it may be a key).
		if msg := err.Error(); strings.Contains(msg, "sandbox.") || strings.Contains(msg, "int64") || strings.Contains(msg, "sk-secr") {
			t.Errorf("%s: err = %q names Go types or quotes the value", tt.name, msg)
		}
	}
	if _, err := sandbox.LoadSeed(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
	empty, err := sandbox.ParseSeed(nil)
	if err != nil {
		t.Fatal(err)
	}
	def := sandbox.New(sandbox.Options{Seed: empty})
	if len(def.Workspaces()) != 1 || len(def.Users()) != 1 || len(def.AdminKey()) < 32 {
		t.Errorf("default sandbox: %+v %+v", def.Workspaces(), def.Users())
	}
}

func TestClockExpiryDeletion(t *testing.T) {
	h := start(t, nil)
	h.sb.SetNow(testNow)
	k := h.createKey("exp", `, "expiration": "2026-11-28"`)
	plain := k["key"].(string)
	auth := "Authorization: Bearer " + plain
	models := func() int { st, _, _ := h.do("GET", "/v1/models", auth, ""); return st }
	if models() != 200 {
		t.Fatal("new key refused")
	}
	h.sb.Advance(24 * time.Hour) // 2026-11-28: the last valid day
	if models() != 200 {
		t.Fatal("key refused on its expiration date")
	}
	if st, _, b := h.do("GET", "/v1/admin/api-keys?name=exp", h.admin(), ""); st != 200 || !strings.Contains(string(b), `"last_used":"2026-11-28"`) {
		t.Errorf("last_used not advanced: %s", b)
	}
	st, _, b := h.do("POST", "/sandbox/clock", h.admin(), `{"now": "2026-11-29T00:00:01Z"}`)
	if st != 200 || !strings.Contains(string(b), "2026-11-29T00:00:01Z") {
		t.Fatalf("set clock: %d %s", st, b)
	}
	if models() != 401 || h.sb.Accepts(plain) {
		t.Fatal("expired key accepted")
	}
	st, _, _ = h.do("POST", "/sandbox/clock", h.admin(), `{"now": "2026-11-28T12:00:00Z"}`)
	if st != 200 || models() != 200 {
		t.Fatal("clock set back: key should work again")
	}
	st, _, b = h.do("POST", "/sandbox/clock", h.admin(), `{"now": "soon"}`)
	if st != 422 {
		t.Errorf("bad clock: %d %s", st, b)
	}
	h.do("DELETE", "/v1/admin/api-keys/"+k["key_id"].(string), h.admin(), "")
	if st, _, b := h.do("POST", "/v1/embeddings", auth, `{"model":"mistral-embed","input":"x"}`); st != 401 || string(b) != `{"detail":"Unauthorized"}` {
		t.Fatalf("deleted key: %d %s", st, b)
	}
	ks, _ := h.sb.Key(k["key_id"].(string))
	if !ks.Deleted || !ks.DeletedAt.Equal(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("key state = %+v", ks)
	}
	var kinds []string
	for _, e := range h.sb.Events() {
		kinds = append(kinds, e.Kind+":"+e.Reason)
	}
	want := "create:,use:,use:,reject:expired,use:,delete:,reject:deleted"
	if strings.Join(kinds, ",") != want {
		t.Errorf("events = %s, want %s", strings.Join(kinds, ","), want)
	}
	_, _, b = h.do("GET", "/sandbox/events?since=5", h.admin(), "")
	var ev struct{ Events []sandbox.Event }
	_ = json.Unmarshal(b, &ev)
	if len(ev.Events) != 2 || ev.Events[0].Seq != 6 || ev.Events[0].KeyName != "exp" || ev.Events[0].Workspace != sandbox.DefaultWorkspaceName {
		t.Errorf("events since 5 = %+v", ev.Events)
	}
	_, _, b = h.do("GET", "/sandbox/keys", h.admin(), "")
	if !strings.Contains(string(b), `"deleted":true`) || !strings.Contains(string(b), plain) {
		t.Errorf("control keys = %s", b)
	}
}

func TestFaultsViaControlRoutes(t *testing.T) {
	h := start(t, nil)
	k := h.createKey("f", "")
	auth := "Authorization: Bearer " + k["key"].(string)
	inject := func(body string) int {
		st, _, _ := h.do("POST", "/sandbox/faults", h.admin(), body)
		return st
	}
	if st := inject(`{"route": "GET /v1/models", "status": 429, "times": 2, "retry_after": "7"}`); st != 204 {
		t.Fatalf("inject: %d", st)
	}
	for i := 0; i < 2; i++ {
		st, hdr, b := h.do("GET", "/v1/models", auth, "")
		if st != 429 || hdr.Get("Retry-After") != "7" || string(b) != `{"message":"Requests rate limit exceeded"}` {
			t.Fatalf("fault %d: %d %v %s", i, st, hdr, b)
		}
	}
	if st, _, _ := h.do("GET", "/v1/models", auth, ""); st != 200 {
		t.Fatalf("fault did not expire after 2 times: %d", st)
	}
	inject(`{"route": "/v1/models", "latency": "150ms", "times": 1}`)
	t0 := time.Now()
	if st, _, _ := h.do("GET", "/v1/models", auth, ""); st != 200 || time.Since(t0) < 150*time.Millisecond {
		t.Errorf("latency fault: %d after %v", st, time.Since(t0))
	}
	inject(`{"route": "*", "status": 503, "body": "{\"custom\": true}"}`)
	if st, _, b := h.do("GET", "/v1/admin/users", h.admin(), ""); st != 503 || string(b) != `{"custom": true}` {
		t.Errorf("wildcard fault: %d %s", st, b)
	}
	if st, _, _ := h.do("GET", "/sandbox/stats", h.admin(), ""); st != 200 {
		t.Error("control routes must not be faulted")
	}
	_, _, b := h.do("GET", "/sandbox/faults", h.admin(), "")
	if !strings.Contains(string(b), `"route":"*"`) {
		t.Errorf("faults = %s", b)
	}
	if st, _, _ := h.do("DELETE", "/sandbox/faults", h.admin(), ""); st != 204 {
		t.Fatal("clear faults")
	}
	if st, _, _ := h.do("GET", "/v1/admin/users", h.admin(), ""); st != 200 {
		t.Error("faults not cleared")
	}
	inject(`{"route": "GET /v1/models", "drop": true, "times": 1}`)
	req, _ := http.NewRequest("GET", h.url+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+k["key"].(string))
	fresh := &http.Transport{DisableKeepAlives: true} // a reused connection would be retried by net/http
	if resp, err := fresh.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Errorf("dropped connection answered %d", resp.StatusCode)
	}
	for _, body := range []string{`{"status": 429}`, `{"route": "*", "status": 100}`, `{"route": "*"}`, `{"route": "*", "latency": "fast"}`, `{"route": "*", "status": 500, "colour": 1}`, `{"route": "*", "times": -1, "status": 500}`, `{"route": "GET /v1/modelz", "status": 500}`, `{"route": "/sandbox/clock", "status": 500}`} {
		if st := inject(body); st != 422 {
			t.Errorf("bad fault %s accepted: %d", body, st)
		}
	}
	stats := h.sb.Stats()
	if stats["GET /v1/models"] != 5 || stats["POST /v1/admin/api-keys"] != 1 {
		t.Errorf("stats = %v", stats)
	}
	h.do("DELETE", "/sandbox/stats", h.admin(), "")
	if len(h.sb.Stats()) != 0 {
		t.Errorf("stats not reset: %v", h.sb.Stats())
	}
}

func TestFaultJSONRoundTrip(t *testing.T) {
	f := sandbox.Fault{Route: "GET /v1/models", Status: 429, Times: 3, Latency: 250 * time.Millisecond, RetryAfter: "2"}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var g sandbox.Fault
	if err := json.Unmarshal(b, &g); err != nil || g.Route != f.Route || g.Latency != f.Latency || g.Times != 3 || g.RetryAfter != "2" {
		t.Fatalf("round trip %s: %+v %v", b, g, err)
	}
	if err := json.Unmarshal([]byte(`{"route":"*","latency":100}`), &g); err != nil || g.Latency != 100*time.Millisecond {
		t.Fatalf("latency ms: %+v %v", g, err)
	}
}

// TestConcurrentUse runs creates, deletes and inference in parallel (run
// with -race) and checks the usage adds up.
func TestConcurrentUse(t *testing.T) {
	h := start(t, nil)
	const workers, calls = 8, 25
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			k, err := h.sb.AddKey(fmt.Sprintf("w%d", w), "", nil)
			if err != nil {
				t.Error(err)
				return
			}
			for i := 0; i < calls; i++ {
				req, _ := http.NewRequest("POST", h.url+"/v1/chat/completions", strings.NewReader(`{"model":"mistral-small-latest","messages":[{"role":"user","content":"12345678"}]}`))
				req.Header.Set("Authorization", "Bearer "+k.Plaintext)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("status %d", resp.StatusCode)
				}
				_ = h.sb.Keys()
			}
		}(w)
	}
	wg.Wait()
	u := sandbox.ChatUsage([]string{"12345678"}, 0)
	got := h.sb.WorkspaceUsage("", "2026-11")["mistral-small-latest"]
	if got.PromptTokens != int64(workers*calls*u.PromptTokens) || got.CompletionTokens != int64(workers*calls*u.CompletionTokens) {
		t.Errorf("usage = %+v, want %d calls of %+v", got, workers*calls, u)
	}
}

func TestEventLogBounded(t *testing.T) {
	sb := sandbox.New(sandbox.Options{MaxEvents: 10})
	for i := 0; i < 25; i++ {
		if _, err := sb.AddKey(fmt.Sprintf("k%d", i), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	ev := sb.Events()
	if len(ev) > 10 || ev[len(ev)-1].Seq != 25 || ev[len(ev)-1].KeyName != "k24" {
		t.Errorf("events = %d, last %+v", len(ev), ev[len(ev)-1])
	}
}
