package mistral_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/mistral"
)

// examplesServer answers each route with the spec-shaped example of
// mistral/contract/testdata/examples (checked against the contract by the
// contract package's tests).
func examplesServer(t *testing.T) *mistral.Client {
	t.Helper()
	files := map[string]string{
		"GET /v1/admin/api-keys":             "list-keys.json",
		"POST /v1/admin/api-keys":            "create-key.json",
		"DELETE /v1/admin/api-keys/{id}":     "delete-key.json",
		"GET /v1/admin/workspaces":           "list-workspaces.json",
		"POST /v1/admin/workspaces":          "create-workspace.json",
		"GET /v1/admin/users":                "list-users.json",
		"GET /v1/admin/usage":                "usage.json",
		"GET /v1/admin/spend-limit":          "spend-limit.json",
		"POST /v1/admin/spend-limit":         "spend-limit.json",
		"GET /v1/admin/rate-limit":           "rate-limit.json",
		"GET /v1/admin/audit-logs":           "audit-logs.json",
		"GET /v1/models":                     "models.json",
		"POST /v1/chat/completions":          "chat.json",
		"POST /v1/embeddings":                "embeddings.json",
		"DELETE /v1/admin/workspaces/{uuid}": "",
	}
	mux := http.NewServeMux()
	for route, file := range files {
		var body []byte
		if file != "" {
			b, err := os.ReadFile(filepath.Join("contract", "testdata", "examples", file))
			if err != nil {
				t.Fatal(err)
			}
			body = b
		}
		mux.HandleFunc(route, func(w http.ResponseWriter, r *http.Request) {
			switch {
			case body == nil:
				w.WriteHeader(http.StatusNoContent)
			case strings.HasSuffix(route, "audit-logs") && r.URL.Query().Get("after") != "":
				_, _ = w.Write([]byte("[]")) // one page, then the end
			case strings.HasSuffix(route, "api-keys") && r.Method == "GET" && r.URL.Query().Get("offset") != "":
				_, _ = w.Write([]byte(`{"keys": []}`))
			default:
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(body)
			}
		})
	}
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	c, err := mistral.New(mistral.Options{BaseURL: ts.URL, AdminKey: "admin-key-000000000000000000000", MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSpecExamplesDecode: a spec-shaped example of each answer decodes
// through the client, nulls included.
func TestSpecExamplesDecode(t *testing.T) {
	c := examplesServer(t)
	ctx := context.Background()
	key := mistral.Secret("inference-key-00000000000000000")

	keys, err := c.ListAllKeys(ctx, "")
	if err != nil || len(keys) != 2 || keys[0].ExpirationDate.String() != "2027-01-31" || keys[0].LastUsed.String() != "2026-11-26" ||
		keys[0].Actions.Rotate.Reason != "unsupported_scope" || !*keys[0].CanDelete || keys[1].Name != "" || keys[1].CanDelete != nil {
		t.Errorf("keys = %+v, %v", keys, err)
	}
	k, err := c.CreateKey(ctx, mistral.CreateKeyRequest{WorkspaceUUID: "w", UserID: "u"})
	if err != nil || k.ExpirationDate.String() != "2026-12-27" || k.Key.IsZero() || k.WorkspaceID != "w" || k.Actions.Rotate.Status != "available" {
		t.Errorf("created = %+v, %v", k, err)
	}
	if err := c.DeleteKey(ctx, k.KeyID); err != nil {
		t.Errorf("delete: %v", err)
	}
	ws, err := c.ListWorkspaces(ctx, mistral.ListWorkspacesOptions{})
	if err != nil || len(ws.Items) != 2 || !ws.Items[0].SpendLimit.Limited() || *ws.Items[0].SpendLimit.Value != 250.5 ||
		ws.Items[1].SpendLimit != nil || ws.Items[1].MembersCount != nil || ws.Items[1].Description != "" || ws.PageSize != 50 {
		t.Errorf("workspaces = %+v, %v", ws, err)
	}
	cw, err := c.CreateWorkspace(ctx, mistral.CreateWorkspaceRequest{Name: "research", AdminUserID: "u"})
	if err != nil || cw.Name != "research" || cw.RawRole != "A" || cw.SpendLimit == nil || cw.SpendLimit.Limited() {
		t.Errorf("created workspace = %+v, %v", cw, err)
	}
	if err := c.ArchiveWorkspace(ctx, cw.UUID); err != nil {
		t.Errorf("archive: %v", err)
	}
	up, err := c.ListUsers(ctx, mistral.ListUsersOptions{})
	if err != nil || len(up.Members) != 2 || up.Members[0].UUID == "" || up.Members[0].RawRoles[0] != "A" || up.Members[1].Email != "" ||
		len(up.Invites) != 1 || up.Invites[0].Email != "new@example.com" || up.Total != 0 {
		t.Errorf("users = %+v, %v", up, err)
	}
	u, err := c.Usage(ctx, mistral.UsageQuery{Month: 11, Year: 2026})
	if err != nil || u.Totals()["mistral-small-2603"] != (mistral.ModelUsage{PromptTokens: 1030, CompletionTokens: 203}) ||
		u.Categories["vibe_code.completion"]["devstral-latest"].PromptTokens != 10 || u.VibeUsage != 3.5 || len(u.PriceData) != 2 ||
		u.PriceData[0].Price != 0.15 || !u.EndDate.Equal(time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC)) {
		t.Errorf("usage = %+v, %v", u, err)
	}
	sl, err := c.SpendLimit(ctx)
	if err != nil || sl.Limits.Currency != "EUR" || *sl.Limits.Completion.UsageLimit != 500 || sl.Limits.Completion.Usage != 120.25 ||
		sl.Limits.LastPaymentFailureProtection != nil || sl.Limits.Completion.VibeUsage != 0 {
		t.Errorf("spend limit = %+v, %v", sl, err)
	}
	if err := c.SetSpendLimit(ctx, 500, false); err != nil {
		t.Errorf("set spend limit: %v", err)
	}
	rl, err := c.RateLimit(ctx)
	if err != nil || rl.TokensLimitsByModel["mistral-small-2603"].TokensPerMonth != 10_000_000_000 {
		t.Errorf("rate limit = %+v, %v", rl, err)
	}
	ev, err := c.AuditLogs(ctx, mistral.AuditQuery{})
	if err != nil || len(ev) != 2 || ev[0].ID != 101 || ev[0].ActorID() != "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d" || ev[0].Actor() != "API_KEY mrbacd" ||
		ev[1].Actor() != "HUMAN ops@example.com" || ev[1].Target() != "rule-1" || ev[1].WorkspaceUUID != "" || ev[1].EventMetadata["rpm"] != "60" {
		t.Errorf("audit = %+v, %v", ev, err)
	}
	models, err := c.ListModels(ctx, key)
	if err != nil || len(models) != 2 || models[0].Aliases[0] != "mistral-small-latest" || models[0].MaxContextLength != 262144 || models[1].Type != "fine-tuned" {
		t.Errorf("models = %+v, %v", models, err)
	}
	chat, err := c.ChatCompletion(ctx, key, mistral.ChatRequest{Model: "m", Messages: []mistral.Message{{Role: "user", Content: "x"}}})
	if err != nil || chat.Choices[0].Message.Content != "Paris." || chat.Usage.TotalTokens != 15 {
		t.Errorf("chat = %+v, %v", chat, err)
	}
	emb, err := c.Embeddings(ctx, key, mistral.EmbeddingsRequest{Model: "mistral-embed", Input: []string{"x"}})
	if err != nil || len(emb.Data) != 1 || emb.Usage.PromptTokens != 3 {
		t.Errorf("embeddings = %+v, %v", emb, err)
	}
}
