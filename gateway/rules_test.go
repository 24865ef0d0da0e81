package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// errBody is the part of an error body the tests read.
type errBody struct {
	Object  string          `json:"object"`
	Message json.RawMessage `json:"message"`
	Type    string          `json:"type"`
	Code    *string         `json:"code"`
	Detail  json.RawMessage `json:"detail"`
}

type chatAnswer struct {
	Choices []struct {
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage usage `json:"usage"`
}

func TestRules(t *testing.T) {
	e := newEnv(t, withOpsWorkspace())
	small := "mistral-small-latest"
	tests := []struct {
		name       string
		role       string
		method     string
		path       string
		body       string
		wantStatus int
		wantCode   string // our error code; "" for none
		wantMsg    string // substring of the message
	}{
		{name: "allowed", role: "analyst", method: "POST", path: pathChat, body: chatBody(small, 10, false, "hello"), wantStatus: 200, wantCode: "", wantMsg: ""},
		{name: "unknown token", role: "gw-unknown-token", method: "POST", path: pathChat, body: chatBody(small, 10, false, "hi"), wantStatus: 401, wantCode: "invalid_token", wantMsg: "Unauthorized"},
		{name: "no token", role: "", method: "POST", path: pathChat, body: chatBody(small, 10, false, "hi"), wantStatus: 401, wantCode: "invalid_token", wantMsg: "Unauthorized"},
		{name: "unlisted model", role: "analyst", method: "POST", path: pathChat, body: chatBody("mistral-large-latest", 10, false, "hi"), wantStatus: 403, wantCode: "model_not_allowed", wantMsg: "model not allowed: the role analyst"},
		{name: "workspace refuses a model the role allows", role: "ops-dev", method: "POST", path: pathChat, body: chatBody("codestral-latest", 10, false, "hi"), wantStatus: 403, wantCode: "model_not_allowed", wantMsg: "model not allowed: the workspace ops-workspace"},
		{name: "workspace prefix and role allow", role: "ops-dev", method: "POST", path: pathChat, body: chatBody(small, 10, false, "hi"), wantStatus: 200, wantCode: "", wantMsg: ""},
		{name: "role refuses in a restricted workspace", role: "ops-dev", method: "POST", path: pathChat, body: chatBody("mistral-large-latest", 10, false, "hi"), wantStatus: 403, wantCode: "model_not_allowed", wantMsg: "model not allowed: the role developer"},
		{name: "workspace allows what an open role asks", role: "ops-all", method: "POST", path: pathChat, body: chatBody("mistral-large-latest", 10, false, "hi"), wantStatus: 200, wantCode: "", wantMsg: ""},
		{name: "workspace refuses an open role", role: "ops-all", method: "POST", path: pathChat, body: chatBody("ministral-8b-latest", 10, false, "hi"), wantStatus: 403, wantCode: "model_not_allowed", wantMsg: "the workspace ops-workspace does not allow it"},
		{name: "workspace refuses embeddings model", role: "ops-dev", method: "POST", path: pathEmbeddings, body: `{"model":"codestral-embed","input":"a"}`, wantStatus: 403, wantCode: "model_not_allowed", wantMsg: "the workspace ops-workspace"},
		{name: "max_tokens over the role's", role: "analyst", method: "POST", path: pathChat, body: chatBody(small, 51, false, "hi"), wantStatus: 403, wantCode: "max_tokens_per_request", wantMsg: "max_tokens_per_request of 50"},
		{name: "max_tokens at the role's", role: "analyst", method: "POST", path: pathChat, body: chatBody(small, 50, false, "hi"), wantStatus: 200, wantCode: "", wantMsg: ""},
		{name: "prefix wildcard", role: "developer", method: "POST", path: pathChat, body: chatBody("codestral-latest", 10, false, "hi"), wantStatus: 200, wantCode: "", wantMsg: ""},
		{name: "prefix wildcard miss", role: "developer", method: "POST", path: pathChat, body: chatBody("mistral-large-latest", 10, false, "hi"), wantStatus: 403, wantCode: "model_not_allowed", wantMsg: "model not allowed"},
		{name: "invalid JSON", role: "analyst", method: "POST", path: pathChat, body: `{"model": "mistral-small-latest",`, wantStatus: 400, wantCode: "invalid_json", wantMsg: "not valid JSON"},
		{name: "not an object", role: "analyst", method: "POST", path: pathChat, body: `["a"]`, wantStatus: 400, wantCode: "invalid_json", wantMsg: "JSON object"},
		{name: "max_tokens wrong type", role: "analyst", method: "POST", path: pathChat, body: `{"model":"mistral-small-latest","max_tokens":"5","messages":[]}`, wantStatus: 400, wantCode: "invalid_json", wantMsg: "max_tokens must be a non-negative integer"},
		{name: "max_tokens zero", role: "analyst", method: "POST", path: pathChat, body: `{"model":"mistral-small-latest","max_tokens":0,"messages":[]}`, wantStatus: 400, wantCode: "invalid_json", wantMsg: "max_tokens must be at least 1"},
		{name: "max_tokens negative", role: "analyst", method: "POST", path: pathChat, body: `{"model":"mistral-small-latest","max_tokens":-1,"messages":[]}`, wantStatus: 400, wantCode: "invalid_json", wantMsg: "max_tokens must be"},
		{name: "missing model", role: "analyst", method: "POST", path: pathChat, body: `{"messages":[]}`, wantStatus: 400, wantCode: "missing_model", wantMsg: "model is required"},
		{name: "model in another case", role: "analyst", method: "POST", path: pathChat, body: `{"model":"mistral-small-latest","MODEL":"mistral-large-latest","max_tokens":5,"messages":[]}`, wantStatus: 400, wantCode: "invalid_json", wantMsg: `key \"MODEL\" is ambiguous`},
		{name: "model twice", role: "analyst", method: "POST", path: pathChat, body: `{"model":"mistral-small-latest","model":"mistral-large-latest","max_tokens":5,"messages":[]}`, wantStatus: 400, wantCode: "invalid_json", wantMsg: "model appears more than once"},
		{name: "max_tokens twice", role: "analyst", method: "POST", path: pathChat, body: `{"model":"mistral-small-latest","max_tokens":5,"max_tokens":5000,"messages":[]}`, wantStatus: 400, wantCode: "invalid_json", wantMsg: "max_tokens appears more than once"},
		{name: "escaped key is the key", role: "analyst", method: "POST", path: pathChat, body: `{"model":"mistral-small-latest","max_\u0074okens":51,"messages":[]}`, wantStatus: 403, wantCode: "max_tokens_per_request", wantMsg: "max_tokens_per_request of 50"},
		{name: "model wrong type", role: "analyst", method: "POST", path: pathChat, body: `{"model":5,"messages":[]}`, wantStatus: 400, wantCode: "invalid_json", wantMsg: "field model has the wrong type (number)"},
		{name: "nested model ignored", role: "analyst", method: "POST", path: pathChat, body: `{"messages":[{"role":"user","content":"x","model":"mistral-small-latest"}]}`, wantStatus: 400, wantCode: "missing_model", wantMsg: "model is required"},
		{name: "body too large", role: "analyst", method: "POST", path: pathChat, body: chatBody(small, 10, false, strings.Repeat("x", 70<<10)), wantStatus: 413, wantCode: "body_too_large", wantMsg: "exceeds the limit"},
		{name: "unknown route", role: "analyst", method: "GET", path: "/v1/files", body: "", wantStatus: 404, wantCode: "", wantMsg: "no route"},
		{name: "admin route refused", role: "analyst", method: "GET", path: "/v1/admin/api-keys", body: "", wantStatus: 404, wantCode: "", wantMsg: "no route"},
		{name: "wrong method", role: "analyst", method: "GET", path: pathChat, body: "", wantStatus: 405, wantCode: "", wantMsg: "not allowed"},
		{name: "upstream 422 passes through", role: "analyst", method: "POST", path: pathChat, body: `{"model":"mistral-small-latest","max_tokens":5,"messages":[{"role":"user","content":"x"}],"bogus":1}`, wantStatus: 422, wantCode: "", wantMsg: ""},
		{name: "upstream 400 passes through", role: "unbounded", method: "POST", path: pathChat, body: chatBody("no-such-model", 5, false, "x"), wantStatus: 400, wantCode: "", wantMsg: "Invalid model"},
		{name: "embeddings", role: "analyst", method: "POST", path: pathEmbeddings, body: `{"model":"mistral-embed","input":["a","b"]}`, wantStatus: 200, wantCode: "", wantMsg: ""},
		{name: "embeddings unlisted model", role: "analyst", method: "POST", path: pathEmbeddings, body: `{"model":"codestral-embed","input":"a"}`, wantStatus: 403, wantCode: "model_not_allowed", wantMsg: "model not allowed"},
		{name: "embeddings unknown token", role: "gw-nope", method: "POST", path: pathEmbeddings, body: `{"model":"mistral-embed","input":"a"}`, wantStatus: 401, wantCode: "invalid_token", wantMsg: ""},
		{name: "models unknown token", role: "gw-nope", method: "GET", path: pathModels, body: "", wantStatus: 401, wantCode: "invalid_token", wantMsg: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, b, err := e.do(context.Background(), tc.role, tc.method, tc.path, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.wantStatus, b)
			}
			if tc.wantStatus == 200 {
				var a chatAnswer
				if err := json.Unmarshal(b, &a); err != nil || a.Usage.total() == 0 {
					t.Fatalf("answer without usage: %s (%v)", b, err)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("error content type %q", ct)
			}
			var eb errBody
			if err := json.Unmarshal(b, &eb); err != nil {
				t.Fatalf("error body is not JSON: %s", b)
			}
			if eb.Object != "error" && eb.Detail == nil {
				t.Fatalf("error body not in Mistral's shape: %s", b)
			}
			if tc.wantCode != "" && (eb.Code == nil || *eb.Code != tc.wantCode) {
				t.Fatalf("code %v, want %s; body %s", eb.Code, tc.wantCode, b)
			}
			if !strings.Contains(string(b), tc.wantMsg) {
				t.Fatalf("body %s does not say %q", b, tc.wantMsg)
			}
		})
	}
	// Refused and failed requests hold nothing.
	for _, p := range e.gw.snap.Load().clients {
		if _, res, _, _ := p.ledger.snapshot(); res != 0 {
			t.Errorf("%s still reserves %d tokens", p.name, res)
		}
	}
	if n := e.counter(e.gw.m.requests, "analyst-app", "mistral-small-latest", "200"); n != 2 {
		t.Errorf("requests_total{analyst-app, mistral-small-latest, 200} = %v, want 2", n)
	}
	if n := e.counter(e.gw.m.requests, "unknown", "", "401"); n != 4 {
		t.Errorf("requests_total{unknown, 401} = %v, want 4", n)
	}
}

// TestMaxTokensInjected: a request without max_tokens (or with null) gets the
// role's maximum, so the answer stops there.
func TestMaxTokensInjected(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("word ", 200) // ~250 prompt tokens: the sandbox would answer 16+125 tokens
	for _, tc := range []struct{ name, body string }{
		{name: "absent", body: chatBody("mistral-small-latest", -1, false, long)},
		{name: "null", body: strings.Replace(chatBody("mistral-small-latest", -1, false, long), `{`, `{"max_tokens":null,`, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b, err := e.do(context.Background(), "analyst", "POST", pathChat, tc.body)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%v %v %s", err, resp, b)
			}
			var a chatAnswer
			if err := json.Unmarshal(b, &a); err != nil {
				t.Fatal(err)
			}
			if a.Usage.CompletionTokens != 50 || a.Choices[0].FinishReason != "length" {
				t.Fatalf("completion_tokens %d finish %q, want 50 and length (injected max)", a.Usage.CompletionTokens, a.Choices[0].FinishReason)
			}
		})
	}
}

// TestMaxTokensRequiredWithoutRoleMax: a role with a budget but no per-request
// maximum cannot bound a request without max_tokens, so it is refused.
func TestMaxTokensRequiredWithoutRoleMax(t *testing.T) {
	e := newEnv(t, withRoles(map[string]Role{"b": {Models: []string{"*"}, DailyTokens: 10000}}))
	resp, b, err := e.do(context.Background(), "b", "POST", pathChat, chatBody("mistral-small-latest", -1, false, "x"))
	if err != nil || resp.StatusCode != 400 || !strings.Contains(string(b), "max_tokens is required") {
		t.Fatalf("%v %v %s", err, resp, b)
	}
	resp, b, err = e.do(context.Background(), "b", "POST", pathChat, chatBody("mistral-small-latest", 100, false, "x"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v %s", err, resp, b)
	}
}

func retryAfter(t *testing.T, resp *http.Response) time.Duration {
	t.Helper()
	s, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || s < 1 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	return time.Duration(s) * time.Second
}

func nearly(got, want time.Duration) bool {
	d := got - want
	return d > -3*time.Second && d < 3*time.Second
}

// TestLimits429 drives each budget to refusal and checks the 429's
// Retry-After is the time until the window frees.
func TestLimits429(t *testing.T) {
	roles := map[string]Role{
		"daily":  {Models: []string{"mistral-small-latest"}, MaxTokensPerRequest: 100, DailyTokens: 1000},
		"rpm":    {Models: []string{"*"}, RPM: 3},
		"hourly": {Models: []string{"mistral-large-latest"}, MaxTokensPerRequest: 1000, HourlyUSD: 0.002},
		"dayusd": {Models: []string{"mistral-large-latest"}, MaxTokensPerRequest: 1000, DailyUSD: 0.002},
	}
	e := newEnv(t, withRoles(roles))
	prompt900 := strings.Repeat("a", 900)
	tests := []struct {
		role     string
		body     string
		code     string
		maxOK    int // requests admitted at most before the 429
		minOK    int
		until    func(time.Time) time.Duration
		minRetry time.Duration // for rpm: a sliding minute
	}{
		{role: "daily", body: chatBody("mistral-small-latest", 100, false, "hello there"), code: "daily_tokens", maxOK: 45, minOK: 30, until: untilDay, minRetry: 0},
		{role: "rpm", body: chatBody("mistral-small-latest", 5, false, "hi"), code: "rpm", maxOK: 3, minOK: 3, until: nil, minRetry: 55 * time.Second},
		{role: "hourly", body: chatBody("mistral-large-latest", 1000, false, prompt900), code: "hourly_usd", maxOK: 1, minOK: 1, until: untilHour, minRetry: 0},
		{role: "dayusd", body: chatBody("mistral-large-latest", 1000, false, prompt900), code: "daily_usd", maxOK: 1, minOK: 1, until: untilDay, minRetry: 0},
	}
	for _, tc := range tests {
		t.Run(tc.role, func(t *testing.T) {
			ok := 0
			for i := 0; i < 50; i++ {
				resp, b, err := e.do(context.Background(), tc.role, "POST", pathChat, tc.body)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode == 200 {
					ok++
					continue
				}
				if resp.StatusCode != 429 {
					t.Fatalf("status %d: %s", resp.StatusCode, b)
				}
				var eb errBody
				if json.Unmarshal(b, &eb) != nil || eb.Code == nil || *eb.Code != tc.code || eb.Type != "rate_limited" {
					t.Fatalf("429 body %s, want code %s", b, tc.code)
				}
				ra := retryAfter(t, resp)
				switch {
				case tc.until != nil && !nearly(ra, tc.until(time.Now())):
					t.Fatalf("Retry-After %v, want about %v", ra, tc.until(time.Now()))
				case tc.minRetry > 0 && (ra < tc.minRetry || ra > time.Minute):
					t.Fatalf("Retry-After %v, want within (%v, 1m]", ra, tc.minRetry)
				}
				break
			}
			if ok < tc.minOK || ok > tc.maxOK {
				t.Fatalf("%d requests admitted before the 429, want %d..%d", ok, tc.minOK, tc.maxOK)
			}
		})
	}
	// The budget was never overrun.
	p := e.principal("daily")
	if settled, res, _, _ := p.ledger.snapshot(); settled > 1000 || res != 0 {
		t.Fatalf("daily client settled %d reserved %d, budget 1000", settled, res)
	}
	if usd := e.counter(e.gw.m.usd, "hourly-app", testWorkspace); usd <= 0 || usd > 0.002 {
		t.Fatalf("usd_total{hourly-app} = %v, want in (0, 0.002]", usd)
	}
}

// TestWorkspaceRPM: a workspace's rpm is one sliding minute shared by all
// its clients, checked with the role's; other workspaces are unaffected.
func TestWorkspaceRPM(t *testing.T) {
	e := newEnv(t,
		withWorkspace("team-a", Workspace{RPM: 2}, map[string]string{"a1": "unbounded", "a2": "unbounded", "a-limited": "limited"}),
		withWorkspace("team-b", Workspace{RPM: 2}, map[string]string{"b1": "unbounded"}))
	body := chatBody("mistral-small-latest", 5, false, "hi")
	tests := []struct {
		name   string
		client string
		want   int
	}{
		{name: "first of team-a", client: "a1", want: 200},
		{name: "second of team-a, other client", client: "a2", want: 200},
		{name: "third of team-a in the minute", client: "a1", want: 429},
		{name: "the other client of team-a too", client: "a2", want: 429},
		{name: "a client whose role rpm has room", client: "a-limited", want: 429},
		{name: "team-b unaffected", client: "b1", want: 200},
		{name: "team-b's own second", client: "b1", want: 200},
		{name: "team-b's own third", client: "b1", want: 429},
		{name: "workspace without limits", client: "unbounded", want: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, b, err := e.do(context.Background(), tc.client, "POST", pathChat, body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, b)
			}
			if tc.want != 429 {
				return
			}
			var eb errBody
			if json.Unmarshal(b, &eb) != nil || eb.Code == nil || *eb.Code != "workspace_rpm" || eb.Type != "rate_limited" {
				t.Fatalf("429 body %s, want code workspace_rpm", b)
			}
			if !strings.Contains(string(b), "workspace team-") {
				t.Fatalf("429 body %s does not name the workspace", b)
			}
			if ra := retryAfter(t, resp); ra < 55*time.Second || ra > time.Minute {
				t.Fatalf("Retry-After %v, want within (55s, 1m]", ra)
			}
		})
	}
	// A refusal takes no slot of the role's rpm: a-limited (role rpm 3) was
	// refused by its workspace, so its own window is empty.
	for _, p := range e.gw.snap.Load().clients {
		if p.name != "a-limited" {
			continue
		}
		p.ledger.mu.Lock()
		for _, at := range p.ledger.rpm.ring {
			if at != 0 {
				t.Errorf("a request refused by the workspace rpm took a slot of the role's")
			}
		}
		p.ledger.mu.Unlock()
	}
}

// TestModelsFiltered: /v1/models lists only the models both the role and
// the workspace allow.
func TestModelsFiltered(t *testing.T) {
	e := newEnv(t, withOpsWorkspace())
	tests := []struct {
		role string
		want []string
	}{
		{role: "analyst", want: []string{"mistral-embed", "mistral-small-latest"}},
		{role: "developer", want: []string{"codestral-embed", "codestral-latest", "mistral-embed", "mistral-small-latest"}},
		{role: "spender", want: []string{"mistral-large-latest"}},
		{role: "ops-dev", want: []string{"mistral-embed", "mistral-small-latest"}},
		{role: "ops-all", want: []string{"mistral-embed", "mistral-large-latest", "mistral-small-2603", "mistral-small-latest"}},
	}
	for _, tc := range tests {
		t.Run(tc.role, func(t *testing.T) {
			resp, b, err := e.do(context.Background(), tc.role, "GET", pathModels, "")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%v %v %s", err, resp, b)
			}
			var l struct {
				Object string `json:"object"`
				Data   []struct {
					ID           string          `json:"id"`
					Capabilities json.RawMessage `json:"capabilities"`
				} `json:"data"`
			}
			if err := json.Unmarshal(b, &l); err != nil || l.Object != "list" {
				t.Fatalf("%v %s", err, b)
			}
			var got []string
			for _, m := range l.Data {
				if len(m.Capabilities) == 0 {
					t.Fatalf("model %s lost its fields", m.ID)
				}
				got = append(got, m.ID)
			}
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("models %v, want %v", got, tc.want)
			}
		})
	}
	resp, b, _ := e.do(context.Background(), "unbounded", "GET", pathModels, "")
	if resp.StatusCode != 200 || strings.Count(string(b), `"object":"model"`) < 10 {
		t.Fatalf("unbounded role should see every model: %s", b)
	}
}

// TestUpstreamFailures: upstream errors pass through in Mistral's shape and
// release the reservation.
func TestUpstreamFailures(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name       string
		fault      sandbox.Fault
		wantStatus int
		wantRetry  string
	}{
		{name: "503", fault: sandbox.Fault{Route: "POST /v1/chat/completions", Status: 503, Times: 1}, wantStatus: 503, wantRetry: ""},
		{name: "429 with Retry-After", fault: sandbox.Fault{Route: "POST /v1/chat/completions", Status: 429, Times: 1, RetryAfter: "7"}, wantStatus: 429, wantRetry: "7"},
		{name: "403 without body", fault: sandbox.Fault{Route: "POST /v1/chat/completions", Status: 403, Times: 1, Body: " "}, wantStatus: 403, wantRetry: ""},
		// Dropped after the request was written: the upstream may have
		// accepted it, so the whole reservation is charged.
		{name: "dropped connection", fault: sandbox.Fault{Route: "POST /v1/chat/completions", Drop: true, Times: 1}, wantStatus: 502, wantRetry: ""},
	}
	p := e.principal("budget")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.sb.InjectFault(tc.fault)
			defer e.sb.ClearFaults()
			before, _, _, _ := p.ledger.snapshot()
			resp, b, err := e.do(context.Background(), "budget", "POST", pathChat, chatBody("mistral-small-latest", 100, false, "hi"))
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, b)
			}
			var eb errBody
			if json.Unmarshal(b, &eb) != nil || (eb.Object != "error" && eb.Message == nil && eb.Detail == nil) {
				t.Fatalf("body not in Mistral's shape: %q", b)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.wantRetry {
				t.Fatalf("Retry-After %q, want %q", got, tc.wantRetry)
			}
			after, res, _, _ := p.ledger.snapshot()
			want := before
			if tc.fault.Drop {
				want += int64(len(chatBody("mistral-small-latest", 100, false, "hi"))) + 100
			}
			if after != want || res != 0 {
				t.Fatalf("settled %d→%d (want %d), reserved %d", before, after, want, res)
			}
		})
	}
}

// TestRequestOverBudgetAlone: a request whose worst case exceeds a budget
// on its own is refused with 403 (no window would ever admit it).
func TestRequestOverBudgetAlone(t *testing.T) {
	e := newEnv(t, withRoles(map[string]Role{"tiny": {Models: []string{"*"}, MaxTokensPerRequest: 500, DailyTokens: 300}}))
	resp, b, err := e.do(context.Background(), "tiny", "POST", pathChat, chatBody("mistral-small-latest", 400, false, "x"))
	if err != nil || resp.StatusCode != 403 || !strings.Contains(string(b), "exceeds the role's daily_tokens of 300 on its own") {
		t.Fatalf("%v %v %s", err, resp, b)
	}
	resp, b, err = e.do(context.Background(), "tiny", "POST", pathChat, chatBody("mistral-small-latest", 100, false, "x"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v %s", err, resp, b)
	}
}
