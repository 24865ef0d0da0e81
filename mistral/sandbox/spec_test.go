package sandbox_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// TestModelAliases: the current aliases and contexts; open-mistral-7b is
// retired.
func TestModelAliases(t *testing.T) {
	h := start(t, nil)
	k := h.createKey("models", "")
	st, _, b := h.do("GET", "/v1/models", "Authorization: Bearer "+k["key"].(string), "")
	var l struct {
		Data []struct {
			ID               string   `json:"id"`
			Aliases          []string `json:"aliases"`
			MaxContextLength int      `json:"max_context_length"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &l); err != nil || st != 200 {
		t.Fatalf("models: %d %s", st, b)
	}
	byID := map[string][]string{}
	ctx := map[string]int{}
	for _, m := range l.Data {
		byID[m.ID], ctx[m.ID] = m.Aliases, m.MaxContextLength
	}
	tests := []struct {
		alias, model string
	}{
		{alias: "mistral-small-latest", model: "mistral-small-2603"},
		{alias: "mistral-medium-latest", model: "mistral-medium-3-5"},
	}
	for _, tt := range tests {
		if !slices.Contains(byID[tt.alias], tt.model) || !slices.Contains(byID[tt.model], tt.alias) {
			t.Errorf("%s and %s are not aliases of each other: %v / %v", tt.alias, tt.model, byID[tt.alias], byID[tt.model])
		}
		if ctx[tt.alias] != 262144 || ctx[tt.model] != 262144 {
			t.Errorf("%s context %d, %s context %d; want 256k", tt.alias, ctx[tt.alias], tt.model, ctx[tt.model])
		}
	}
	if _, ok := byID["open-mistral-7b"]; ok {
		t.Error("open-mistral-7b is retired but listed")
	}
}

// TestChatRequestFields: the fields the spec lists are accepted, others
// refused.
func TestChatRequestFields(t *testing.T) {
	h := start(t, nil)
	k := h.createKey("chat", "")
	auth := "Authorization: Bearer " + k["key"].(string)
	tests := []struct {
		name   string
		extra  string
		status int
	}{
		{name: "metadata", extra: `"metadata": {"team": "ml"}`, status: 200},
		{name: "reasoning_effort", extra: `"reasoning_effort": "high"`, status: 200},
		{name: "guardrails", extra: `"guardrails": [{"block_on_error": true}]`, status: 200},
		{name: "prompt_cache_key", extra: `"prompt_cache_key": "session-1"`, status: 200},
		{name: "service_tier", extra: `"service_tier": "standard_only"`, status: 200},
		{name: "prompt_mode and n", extra: `"prompt_mode": "reasoning", "n": 1, "parallel_tool_calls": true`, status: 200},
		{name: "unknown field", extra: `"user": "bob"`, status: 422},
		{name: "bad reasoning effort", extra: `"reasoning_effort": "max"`, status: 422},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"model": "mistral-small-2603", "messages": [{"role": "user", "content": "hi"}], ` + tt.extra + `}`
			if st, _, b := h.do("POST", "/v1/chat/completions", auth, body); st != tt.status {
				t.Errorf("%s: %d %s, want %d", tt.name, st, b, tt.status)
			}
		})
	}
	st, _, b := h.do("POST", "/v1/chat/completions", auth, `{"model": "mistral-small-latest", "messages": [{"role": "tool", "content": "42", "name": "calc", "tool_call_id": "c1"}]}`)
	if st != 200 {
		t.Errorf("a tool message may carry a name: %d %s", st, b)
	}
}

// TestKeyPolicy: an organization's expiration policy shortens or sets a
// new key's expiration, and the answer says so.
func TestKeyPolicy(t *testing.T) {
	seed, err := sandbox.ParseSeed([]byte("key_policy: {max_days: 30}\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, seed) // clock: 2026-11-27
	tests := []struct {
		name, extra, want string
	}{
		{name: "none asked", extra: ``, want: "2026-12-27"},
		{name: "later asked", extra: `, "expiration": "2027-06-01"`, want: "2026-12-27"},
		{name: "earlier asked", extra: `, "expiration": "2026-12-10"`, want: "2026-12-10"},
	}
	for _, tt := range tests {
		k := h.createKey("policy-"+tt.name, tt.extra)
		if k["expiration_date"] != tt.want {
			t.Errorf("%s: expiration_date %v, want %s", tt.name, k["expiration_date"], tt.want)
		}
	}
	h.sb.SetKeyPolicy(sandbox.UserActor(h.sb.Users()[0]), sandbox.KeyPolicy{})
	if k := h.createKey("no-policy", ""); k["expiration_date"] != nil {
		t.Errorf("policy lifted, yet expiration_date %v", k["expiration_date"])
	}
	log := h.sb.AuditLog()
	if e := log[len(log)-2]; e.EventType != "api_key_policy.update" || e.ActorType != mistral.ActorHuman || e.TargetType != "API_KEY_POLICY" {
		t.Errorf("policy change not audited: %+v", e)
	}
}

// TestAuditAttribution: changes through the API are attributed to the
// admin key used, console changes to the person.
func TestAuditAttribution(t *testing.T) {
	h := start(t, nil)
	k := h.createKey("mine", "")
	otherID, other := h.sb.AddAdminKey("alice-script")
	ws, user := h.sb.Workspaces()[0].UUID, h.sb.Users()[0].ID
	st, _, b := h.do("POST", "/v1/admin/api-keys", "Authorization: Bearer "+other, fmt.Sprintf(`{"workspace_uuid": %q, "user_id": %q}`, ws, user))
	if st != 200 {
		t.Fatalf("create with a second admin key: %d %s", st, b)
	}
	if st, _, b := h.do("POST", "/v1/admin/spend-limit", h.admin(), `{"amount": 300}`); st != 200 {
		t.Fatalf("spend limit: %d %s", st, b)
	}
	st, _, b = h.do("POST", "/v1/admin/workspaces", h.admin(), fmt.Sprintf(`{"name": "ml", "admin_user_id": %q}`, user))
	if st != 200 {
		t.Fatalf("create workspace: %d %s", st, b)
	}
	var created struct {
		UUID string `json:"uuid"`
	}
	_ = json.Unmarshal(b, &created)
	if st, _, _ := h.do("DELETE", "/v1/admin/workspaces/"+created.UUID, h.admin(), ""); st != 204 {
		t.Fatalf("archive workspace: %d", st)
	}
	human := sandbox.UserActor(h.sb.Users()[0])
	limit := 50.0
	if err := h.sb.SetWorkspaceSpendLimit(human, ws, &limit); err != nil {
		t.Fatal(err)
	}
	if err := h.sb.RateLimitRule(human, "create", "rule-1", map[string]string{"rpm": "60"}); err != nil {
		t.Fatal(err)
	}
	if err := h.sb.DeleteKeyAs(human, k["key_id"].(string)); err != nil {
		t.Fatal(err)
	}
	me := h.sb.AdminActor()
	want := []struct{ event, actor, actorID string }{
		{event: "api_key.create", actor: mistral.ActorAPIKey, actorID: me.ID},
		{event: "api_key.create", actor: mistral.ActorAPIKey, actorID: otherID},
		{event: "billing.monthly_limit.updated", actor: mistral.ActorAPIKey, actorID: me.ID},
		{event: "workspace.create", actor: mistral.ActorAPIKey, actorID: me.ID},
		{event: "workspace.delete", actor: mistral.ActorAPIKey, actorID: me.ID},
		{event: "billing.workspace_monthly_limit.updated", actor: mistral.ActorHuman, actorID: human.ID},
		{event: "rate_limit.rule.create", actor: mistral.ActorHuman, actorID: human.ID},
		{event: "api_key.delete", actor: mistral.ActorHuman, actorID: human.ID},
	}
	got := h.sb.AuditLog()
	if len(got) != len(want) {
		t.Fatalf("audit log has %d events, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if g := got[i]; g.EventType != w.event || g.ActorType != w.actor || g.ActorID() != w.actorID {
			t.Errorf("event %d = %s by %s %s, want %s by %s %s", i, g.EventType, g.ActorType, g.ActorID(), w.event, w.actor, w.actorID)
		}
	}
	if ws := h.sb.Workspaces()[0]; ws.SpendLimit == nil || *ws.SpendLimit != 50 {
		t.Errorf("workspace spend limit not set: %+v", ws)
	}
	// The listing: newest first by default; filters by event and actor type.
	st, _, b = h.do("GET", "/v1/admin/audit-logs?event_type=api_key.create&actor_type=API_KEY", h.admin(), "")
	var page []map[string]any
	if err := json.Unmarshal(b, &page); err != nil || st != 200 || len(page) != 2 || page[0]["log_id"].(float64) != 2 {
		t.Errorf("filtered audit logs: %d %s", st, b)
	}
	if st, _, b := h.do("GET", "/v1/admin/audit-logs?sort=sideways", h.admin(), ""); st != 422 || !strings.Contains(string(b), `"sort"`) {
		t.Errorf("bad sort: %d %s", st, b)
	}
}
