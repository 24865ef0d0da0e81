package mistral_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
)

type env struct {
	sb     *sandbox.Server
	url    string
	client *mistral.Client
	logs   *testenv.LogBuffer
	ws     string // first workspace uuid
	user   string // first user id
}

var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// newEnv starts a sandbox on a free 127.0.0.1 port and a client with
// short backoffs; edit tweaks the client options.
func newEnv(t *testing.T, seed *sandbox.Seed, edit func(*mistral.Options)) *env {
	t.Helper()
	return newEnvWith(t, sandbox.Options{Seed: seed}, edit)
}

// newEnvWith is newEnv with the sandbox's options.
func newEnvWith(t *testing.T, so sandbox.Options, edit func(*mistral.Options)) *env {
	t.Helper()
	sb := sandbox.New(so)
	sb.SetNow(testNow)
	// The client's requests and the sandbox's answers are checked against
	// the spec in every test.
	ts := sandboxtest.Serve(t, sb, true)
	logs := &testenv.LogBuffer{}
	opts := mistral.Options{
		BaseURL: ts.URL, AdminKey: mistral.Secret(sb.AdminKey()),
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&opts)
	}
	c, err := mistral.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{sb: sb, url: ts.URL, client: c, logs: logs}
	e.ws = sb.Workspaces()[0].UUID
	e.user = sb.Users()[0].ID
	return e
}

func (e *env) createKey(t *testing.T, name string) mistral.Key {
	t.Helper()
	k, err := e.client.CreateKey(context.Background(), mistral.CreateKeyRequest{Name: name, WorkspaceUUID: e.ws, UserID: e.user})
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	return k
}

var plaintextRE = regexp.MustCompile(`^[A-Za-z0-9]{32}$`)

func TestNewOptions(t *testing.T) {
	tests := []struct {
		opts    mistral.Options
		wantErr string
	}{
		{opts: mistral.Options{}, wantErr: ""},
		{opts: mistral.Options{BaseURL: "http://127.0.0.1:1/v1/"}, wantErr: ""},
		{opts: mistral.Options{BaseURL: "ftp://x"}, wantErr: "want http(s)"},
		{opts: mistral.Options{BaseURL: "http://user:pw@host"}, wantErr: "credentials"},
		{opts: mistral.Options{AdminAuthHeader: "X-API-KEY"}, wantErr: ""},
		{opts: mistral.Options{AdminAuthHeader: "basic"}, wantErr: `"basic"`},
	}
	for _, tt := range tests {
		_, err := mistral.New(tt.opts)
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("New(%+v) = %v, want error containing %q", tt.opts, err, tt.wantErr)
		}
	}
}

func TestKeyLifecycle(t *testing.T) {
	for _, header := range []string{mistral.AuthBearer, mistral.AuthXAPIKey} {
		t.Run(header, func(t *testing.T) {
			e := newEnv(t, nil, func(o *mistral.Options) { o.AdminAuthHeader = header })
			ctx := context.Background()
			exp := mistral.Date{Year: 2027, Month: 2, Day: 1}
			k, err := e.client.CreateKey(ctx, mistral.CreateKeyRequest{Name: "dev-team-key.r1", Expiration: &exp, WorkspaceUUID: e.ws, UserID: e.user})
			if err != nil {
				t.Fatal(err)
			}
			if !plaintextRE.MatchString(k.Key.Reveal()) || k.KeyID == "" || k.Name != "dev-team-key.r1" ||
				k.ExpirationDate == nil || *k.ExpirationDate != exp || k.WorkspaceID != e.ws ||
				!k.CreatedAt.Equal(testNow) || k.LastUsed != nil ||
				k.HiddenKey != k.Key.Reveal()[:4]+"..."+k.Key.Reveal()[28:] || k.Actions == nil || k.Actions.Delete == nil || k.Actions.Delete.Status != "available" {
				t.Fatalf("created key = %+v", k)
			}
			models, err := e.client.ListModels(ctx, k.Key)
			if err != nil {
				t.Fatalf("new key refused at once: %v", err)
			}
			ids := map[string]bool{}
			for _, m := range models {
				ids[m.ID] = true
			}
			for _, p := range mistral.DefaultPrices() {
				if !ids[p.Model] {
					t.Errorf("model %s of the price list missing", p.Model)
				}
			}
			keys, err := e.client.ListAllKeys(ctx, "dev-team-key.r1")
			if err != nil || len(keys) != 1 || keys[0].KeyID != k.KeyID || !keys[0].Key.IsZero() {
				t.Fatalf("list = %+v, %v", keys, err)
			}
			if l := keys[0]; l.WorkspaceName != sandbox.DefaultWorkspaceName || l.CanDelete == nil || !*l.CanDelete || l.Product != "API" ||
				l.CreatedBy != sandbox.DefaultUserEmail || l.WorkspaceID != e.ws {
				t.Errorf("listed key = %+v", l)
			}
			if keys[0].LastUsed == nil || *keys[0].LastUsed != mistral.DateOf(testNow) {
				t.Errorf("last_used = %v, want %v", keys[0].LastUsed, mistral.DateOf(testNow))
			}
			if err := e.client.DeleteKey(ctx, k.KeyID); err != nil {
				t.Fatal(err)
			}
			if _, err := e.client.ListModels(ctx, k.Key); !errors.Is(err, mistral.ErrUnauthorized) {
				t.Fatalf("deleted key: err = %v, want ErrUnauthorized", err)
			}
			if err := e.client.DeleteKey(ctx, k.KeyID); !errors.Is(err, mistral.ErrNotFound) {
				t.Fatalf("second delete: err = %v, want ErrNotFound", err)
			}
			if keys, _ := e.client.ListAllKeys(ctx, ""); len(keys) != 0 {
				t.Fatalf("deleted key still listed: %+v", keys)
			}
		})
	}
}

func TestListKeysPaging(t *testing.T) {
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	for i := 0; i < 250; i++ {
		name := fmt.Sprintf("bulk-%03d", i)
		if i%50 == 0 {
			name = fmt.Sprintf("special-%03d", i)
		}
		if _, err := e.sb.AddKey(name, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		opts mistral.ListKeysOptions
		want int
		// first is the name of the first key returned
		first string
	}{
		{opts: mistral.ListKeysOptions{Limit: 100}, want: 100, first: "special-000"},
		{opts: mistral.ListKeysOptions{Limit: 100, Offset: 200}, want: 50, first: "special-200"},
		{opts: mistral.ListKeysOptions{Limit: 100, Offset: 300}, want: 0, first: ""},
		{opts: mistral.ListKeysOptions{Name: "special"}, want: 5, first: "special-000"},
		{opts: mistral.ListKeysOptions{Name: "special", Offset: 3, Limit: 1}, want: 1, first: "special-150"},
		{opts: mistral.ListKeysOptions{}, want: 100, first: "special-000"},
	}
	for _, tt := range tests {
		keys, err := e.client.ListKeys(ctx, tt.opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != tt.want || (tt.want > 0 && keys[0].Name != tt.first) {
			t.Errorf("ListKeys(%+v): %d keys, want %d starting %q", tt.opts, len(keys), tt.want, tt.first)
		}
	}
	all, err := e.client.ListAllKeys(ctx, "")
	if err != nil || len(all) != 250 {
		t.Fatalf("ListAllKeys: %d, %v", len(all), err)
	}
	exact, err := e.client.ListAllKeys(ctx, "bulk-001")
	if err != nil || len(exact) != 1 {
		t.Fatalf("ListAllKeys exact: %d, %v", len(exact), err)
	}
	// 250 keys: pages of 100, 100, 50 and the empty one; the exact name:
	// one page and the empty one.
	if got := e.sb.Stats()["GET /v1/admin/api-keys"]; got != int64(len(tests))+4+2 {
		t.Errorf("list calls = %d, want %d", got, len(tests)+6)
	}
	if keys, err := e.client.ListKeys(ctx, mistral.ListKeysOptions{Limit: 5000}); err != nil || len(keys) != sandbox.DefaultMaxPageSize {
		t.Errorf("limit 5000: %d keys, %v; want the server's cap %d", len(keys), err, sandbox.DefaultMaxPageSize)
	}
}

// TestListsReadWholeUnderPageCap: a server serving at most 7 items a page,
// whatever is asked, still has every listing read whole.
func TestListsReadWholeUnderPageCap(t *testing.T) {
	e := newEnvWith(t, sandbox.Options{MaxPageSize: 7}, nil)
	ctx := context.Background()
	for i := range 40 {
		if _, err := e.sb.AddKey(fmt.Sprintf("k-%02d", i), "", nil); err != nil {
			t.Fatal(err)
		}
		e.sb.AddWorkspace(fmt.Sprintf("ws-%02d", i))
		e.sb.AddUser(fmt.Sprintf("u%02d@example.com", i), "")
	}
	keys, err := e.client.ListAllKeys(ctx, "")
	if err != nil || len(keys) != 40 {
		t.Errorf("keys: %d, %v; want 40", len(keys), err)
	}
	if got := e.sb.Stats()["GET /v1/admin/api-keys"]; got != 7 { // 6 pages (7*5+5) and the empty one
		t.Errorf("key pages read = %d, want 7", got)
	}
	ws, err := e.client.ListAllWorkspaces(ctx)
	if err != nil || len(ws) != 41 {
		t.Errorf("workspaces: %d, %v; want 41", len(ws), err)
	}
	users, err := e.client.ListAllUsers(ctx)
	if err != nil || len(users) != 41 {
		t.Errorf("users: %d, %v; want 41", len(users), err)
	}
	for range 30 {
		e.createKey(t, "")
	}
	events, err := e.client.AuditLogs(ctx, mistral.AuditQuery{})
	if err != nil || len(events) != 70 { // 40 console creates, 30 API creates
		t.Errorf("audit events: %d, %v; want 70", len(events), err)
	}
	for i := 1; i < len(events); i++ {
		if !events[i].Time.After(events[i-1].Time) || events[i].ID <= events[i-1].ID {
			t.Fatalf("audit events out of order at %d: %+v then %+v", i, events[i-1], events[i])
		}
	}
}

func TestWorkspacesAndUsers(t *testing.T) {
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		e.sb.AddWorkspace(fmt.Sprintf("team-%02d", i))
	}
	p, err := e.client.ListWorkspaces(ctx, mistral.ListWorkspacesOptions{Page: 2, PageSize: 25})
	if err == nil && p.Items[0].MembersCount == nil {
		t.Error("members_count not read")
	}
	if err != nil || p.Total != 31 || len(p.Items) != 6 || p.Page != 2 || p.PageSize != 25 || p.Object != "list" {
		t.Fatalf("page 2 = %+v, %v", p, err)
	}
	all, err := e.client.ListAllWorkspaces(ctx)
	if err != nil || len(all) != 31 || !all[0].IsDefault || all[0].SpendLimit == nil || all[0].SpendLimit.Currency != "USD" {
		t.Fatalf("all = %d %+v, %v", len(all), all[0], err)
	}
	p, _ = e.client.ListWorkspaces(ctx, mistral.ListWorkspacesOptions{Search: "TEAM-1"})
	if p.Total != 10 {
		t.Errorf("search team-1: %d, want 10", p.Total)
	}
	ws, err := e.client.CreateWorkspace(ctx, mistral.CreateWorkspaceRequest{Name: "ml-workspace", AdminUserID: e.user, Description: "ML"})
	if err != nil || ws.UUID == "" || ws.Name != "ml-workspace" || ws.Description != "ML" || ws.RawRole != "A" || len(ws.RawRoles) != 1 {
		t.Fatalf("create workspace: %+v, %v", ws, err)
	}
	if _, err := e.client.CreateWorkspace(ctx, mistral.CreateWorkspaceRequest{Name: "ml-workspace", AdminUserID: e.user}); !errors.Is(err, mistral.ErrBadRequest) {
		t.Errorf("duplicate workspace: %v", err)
	}
	if _, err := e.client.CreateWorkspace(ctx, mistral.CreateWorkspaceRequest{Name: "no-admin"}); err == nil {
		t.Error("a workspace without admin_user_id was sent")
	}
	if err := e.client.ArchiveWorkspace(ctx, ws.UUID); err != nil {
		t.Fatal(err)
	}
	p, _ = e.client.ListWorkspaces(ctx, mistral.ListWorkspacesOptions{IncludeArchived: true, Search: "ml-"})
	if p.Total != 1 || p.Items[0].UUID != ws.UUID {
		t.Errorf("with archived = %+v", p)
	}
	if all, _ := e.client.ListAllWorkspaces(ctx); len(all) != 31 {
		t.Errorf("the archived workspace is listed without is_archived: %d", len(all))
	}
	if err := e.client.ArchiveWorkspace(ctx, ws.UUID); !errors.Is(err, mistral.ErrNotFound) {
		t.Errorf("archive twice: %v", err)
	}
	e.sb.AddUser("ops@example.com", "Ops")
	up, err := e.client.ListUsers(ctx, mistral.ListUsersOptions{Email: "ops@"})
	if err != nil || up.Total != 1 || len(up.Members) != 1 || up.Members[0].Email != "ops@example.com" || up.Invites == nil ||
		up.Members[0].UUID == "" || up.Members[0].RawRole != "M" || len(up.Members[0].RawRoles) != 1 || up.Members[0].CreatedAt.IsZero() {
		t.Fatalf("users = %+v, %v", up, err)
	}
	up, _ = e.client.ListUsers(ctx, mistral.ListUsersOptions{Page: 1, PageSize: 1})
	if up.Total != 2 || len(up.Members) != 1 {
		t.Errorf("users page = %+v", up)
	}
}

func TestInferenceAndUsage(t *testing.T) {
	seed, err := sandbox.ParseSeed([]byte(`
workspaces: [{name: dev-workspace}, {uuid: 11111111-2222-4333-8444-555555555555, name: ml-workspace}]
usage:
  - {workspace: dev-workspace, month: "2026-11", model: codestral-latest, prompt_tokens: 1000, completion_tokens: 100}
  - {workspace: 11111111-2222-4333-8444-555555555555, month: "2026-11", model: mistral-small-latest, prompt_tokens: 5, completion_tokens: 5}
  - {workspace: dev-workspace, month: "2026-10", model: codestral-latest, prompt_tokens: 7, completion_tokens: 7}
`))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, seed, nil)
	ctx := context.Background()
	k := e.createKey(t, "dev-key")
	msgs := []mistral.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "What is the capital of France?"}}
	want := sandbox.ChatUsage([]string{"be brief", "What is the capital of France?"}, 0)
	resp, err := e.client.ChatCompletion(ctx, k.Key, mistral.ChatRequest{Model: "mistral-small-latest", Messages: msgs})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Usage != want || resp.Object != "chat.completion" || len(resp.Choices) != 1 || resp.Choices[0].Message.Role != "assistant" ||
		resp.Choices[0].FinishReason != "stop" || sandbox.CountTokens(resp.Choices[0].Message.Content) != want.CompletionTokens || resp.ID == "" {
		t.Fatalf("chat = %+v, want usage %+v", resp, want)
	}
	maxTok := 3
	resp, err = e.client.ChatCompletion(ctx, k.Key, mistral.ChatRequest{Model: "mistral-small-latest", Messages: msgs, MaxTokens: &maxTok})
	if err != nil || resp.Usage.CompletionTokens != 3 || resp.Choices[0].FinishReason != "length" {
		t.Fatalf("max_tokens: %+v, %v", resp, err)
	}
	var chunks []mistral.ChatChunk
	var text strings.Builder
	usage, err := e.client.ChatCompletionStream(ctx, k.Key, mistral.ChatRequest{Model: "mistral-small-latest", Messages: msgs}, func(c mistral.ChatChunk) error {
		chunks = append(chunks, c)
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
		}
		return nil
	})
	if err != nil || usage == nil || *usage != want || len(chunks) < 3 || chunks[0].Object != "chat.completion.chunk" || chunks[len(chunks)-1].Usage == nil {
		t.Fatalf("stream: usage %+v, %d chunks, %v", usage, len(chunks), err)
	}
	if sandbox.CountTokens(text.String()) != want.CompletionTokens {
		t.Errorf("streamed text %q is not %d tokens", text.String(), want.CompletionTokens)
	}
	stop := errors.New("enough")
	if _, err := e.client.ChatCompletionStream(ctx, k.Key, mistral.ChatRequest{Model: "mistral-small-latest", Messages: msgs}, func(mistral.ChatChunk) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("consumer error: %v", err)
	}
	emb, err := e.client.Embeddings(ctx, k.Key, mistral.EmbeddingsRequest{Model: "mistral-embed", Input: []string{"hello", "world!!!"}})
	if err != nil || len(emb.Data) != 2 || len(emb.Data[0].Embedding) != sandbox.EmbeddingDims || emb.Data[1].Index != 1 || emb.Usage.PromptTokens != 2+2 || emb.Usage.TotalTokens != 4 {
		t.Fatalf("embeddings = %+v, %v", emb, err)
	}
	if _, err := e.client.ChatCompletion(ctx, k.Key, mistral.ChatRequest{Model: "no-such-model", Messages: msgs}); !errors.Is(err, mistral.ErrBadRequest) {
		t.Errorf("unknown model: %v", err)
	}
	if _, err := e.client.Embeddings(ctx, k.Key, mistral.EmbeddingsRequest{Model: "mistral-small-latest", Input: []string{"x"}}); !errors.Is(err, mistral.ErrBadRequest) {
		t.Errorf("chat model for embeddings: %v", err)
	}

	// Usage: the key's workspace (dev-workspace) got the seed plus the calls.
	u, err := e.client.Usage(ctx, mistral.UsageQuery{Month: 11, Year: 2026, WorkspaceID: e.ws})
	if err != nil {
		t.Fatal(err)
	}
	tot := u.Totals()
	small := want.PromptTokens*4 + want.PromptTokens // chat, max_tokens, stream, stream stopped early... counted below
	_ = small
	wantSmall := mistral.ModelUsage{PromptTokens: int64(4 * want.PromptTokens), CompletionTokens: int64(3*want.CompletionTokens + 3)}
	if tot["mistral-small-latest"] != wantSmall {
		t.Errorf("small usage = %+v, want %+v", tot["mistral-small-latest"], wantSmall)
	}
	if tot["codestral-latest"] != (mistral.ModelUsage{PromptTokens: 1000, CompletionTokens: 100}) || tot["mistral-embed"].PromptTokens != 4 {
		t.Errorf("usage = %+v", tot)
	}
	if u.Currency != "USD" || !u.StartDate.Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) || u.EndDate.Day() != 30 ||
		len(u.PriceData) != 2*len(mistral.DefaultPrices()) {
		t.Errorf("usage header = %+v", u)
	}
	for _, c := range []string{"completion", "chat", "ocr", "fine_tuning.training", "audio", "libraries_api.tokens", "vibe_code.completion"} {
		if _, ok := u.Categories[c]; !ok {
			t.Errorf("category %s missing", c)
		}
	}
	org, _ := e.client.Usage(ctx, mistral.UsageQuery{Month: 11, Year: 2026})
	if org.Totals()["mistral-small-latest"].PromptTokens != wantSmall.PromptTokens+5 {
		t.Errorf("org usage = %+v", org.Totals())
	}
	if _, err := e.client.Usage(ctx, mistral.UsageQuery{Month: 11, Year: 2026, WorkspaceID: "00000000-0000-4000-8000-000000000000"}); !errors.Is(err, mistral.ErrNotFound) {
		t.Errorf("unknown workspace usage: %v", err)
	}
	if _, err := e.client.Usage(ctx, mistral.UsageQuery{Month: 13, Year: 2026}); err == nil {
		t.Error("month 13 accepted")
	}
}

func TestSpendAndRateLimit(t *testing.T) {
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	sl, err := e.client.SpendLimit(ctx)
	if err != nil || sl.Limits.Currency != "USD" || !sl.Limits.Completion.NoMonthlyLimit || sl.Limits.LastPaymentFailure {
		t.Fatalf("spend limit = %+v, %v", sl, err)
	}
	if err := e.client.SetSpendLimit(ctx, 1, false); err != nil {
		t.Fatal(err)
	}
	k := e.createKey(t, "k")
	msgs := []mistral.Message{{Role: "user", Content: "hi"}}
	if _, err := e.client.ChatCompletion(ctx, k.Key, mistral.ChatRequest{Model: "mistral-large-latest", Messages: msgs}); err != nil {
		t.Fatal(err)
	}
	// $1.50 of mistral-large-latest passes the $1 limit.
	if err := e.sb.AddUsage(sandbox.UsageRecord{Model: "mistral-large-latest", PromptTokens: 3_000_000}); err != nil {
		t.Fatal(err)
	}
	sl, _ = e.client.SpendLimit(ctx)
	c := sl.Categories()["completion"]
	if c.NoMonthlyLimit || !c.MonthlyLimitReached || c.UsageLimit == nil || *c.UsageLimit != 1 || c.Usage <= 1 {
		t.Fatalf("after spending: %+v", c)
	}
	_, err = e.client.ChatCompletion(ctx, k.Key, mistral.ChatRequest{Model: "mistral-large-latest", Messages: msgs})
	var ae *mistral.APIError
	if !errors.Is(err, mistral.ErrRateLimited) || !errors.As(err, &ae) || ae.Code != "1300" || ae.Type != "rate_limited" {
		t.Fatalf("over the limit: %v", err)
	}
	if err := e.client.SetSpendLimit(ctx, -1, false); err == nil {
		t.Error("negative limit accepted")
	}
	rl, err := e.client.RateLimit(ctx)
	if err != nil || rl.RequestsPerSecond <= 0 || rl.TokensLimitsByModel["mistral-small-latest"].TokensPerMinute <= 0 {
		t.Fatalf("rate limit = %+v, %v", rl, err)
	}
}

func TestAuthErrors(t *testing.T) {
	e := newEnv(t, nil, func(o *mistral.Options) { o.MaxRetries = -1 })
	ctx := context.Background()
	k := e.createKey(t, "k")
	wrong, _ := mistral.New(mistral.Options{BaseURL: e.url, AdminKey: "not-the-admin-key", MaxRetries: -1})
	withInference, _ := mistral.New(mistral.Options{BaseURL: e.url, AdminKey: k.Key, MaxRetries: -1})
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{name: "wrong admin key", call: func() error { _, err := wrong.ListKeys(ctx, mistral.ListKeysOptions{}); return err }, want: mistral.ErrUnauthorized},
		{name: "inference key on admin route", call: func() error { _, err := withInference.ListKeys(ctx, mistral.ListKeysOptions{}); return err }, want: mistral.ErrForbidden},
		{name: "admin key on inference", call: func() error { _, err := e.client.ListModels(ctx, mistral.Secret(e.sb.AdminKey())); return err }, want: mistral.ErrUnauthorized},
		{name: "unknown key on chat", call: func() error {
			_, err := e.client.ChatCompletion(ctx, "nope-nope-nope", mistral.ChatRequest{Model: "m", Messages: []mistral.Message{{Role: "user"}}})
			return err
		}, want: mistral.ErrUnauthorized},
		{name: "create in unknown workspace", call: func() error {
			_, err := e.client.CreateKey(ctx, mistral.CreateKeyRequest{Name: "x", WorkspaceUUID: "00000000-0000-4000-8000-000000000000", UserID: e.user})
			return err
		}, want: mistral.ErrNotFound},
		{name: "create with past expiration", call: func() error {
			_, err := e.client.CreateKey(ctx, mistral.CreateKeyRequest{Name: "x", WorkspaceUUID: e.ws, UserID: e.user, Expiration: &mistral.Date{Year: 2020, Month: 1, Day: 1}})
			return err
		}, want: mistral.ErrValidation},
	}
	for _, tt := range tests {
		err := tt.call()
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}

// TestErrorBodiesOverHTTP serves each documented error body through an
// injected fault and checks the typed error the client returns.
func TestErrorBodiesOverHTTP(t *testing.T) {
	e := newEnv(t, nil, func(o *mistral.Options) { o.MaxRetries = -1 })
	ctx := context.Background()
	tests := []struct {
		status int
		body   string
		want   error
		msg    string
	}{
		{status: 401, body: `{"message": "Unauthorized", "request_id": "r1"}`, want: mistral.ErrUnauthorized, msg: "Unauthorized (request_id r1)"},
		{status: 401, body: `{"detail": "Unauthorized"}`, want: mistral.ErrUnauthorized, msg: "401 unauthorized: Unauthorized"},
		{status: 403, body: "-", want: mistral.ErrForbidden, msg: "403 forbidden: Forbidden"},
		{status: 422, body: `{"detail": [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}]}`, want: mistral.ErrValidation, msg: "body.name: Field required (missing)"},
		{status: 422, body: `{"object": "error", "message": {"detail": [{"loc": ["body", "x"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]}, "type": "invalid_request_error", "param": null, "code": null}`, want: mistral.ErrValidation, msg: "body.x: Extra inputs"},
		{status: 422, body: `{"object": "error", "message": "{\"detail\": [{\"loc\": [\"body\", \"y\"], \"msg\": \"Field required\", \"type\": \"missing\"}]}", "type": "invalid_request_error", "param": null, "code": null}`, want: mistral.ErrValidation, msg: "422 validation: body.y: Field required (missing)"},
		{status: 429, body: `{"message": "Requests rate limit exceeded"}`, want: mistral.ErrRateLimited, msg: "Requests rate limit exceeded"},
		{status: 429, body: `{"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "code": "1300"}`, want: mistral.ErrRateLimited, msg: "Rate limit exceeded"},
		{status: 500, body: "-", want: mistral.ErrServer, msg: "500 server: Internal Server Error"},
		{status: 503, body: `upstream connect error`, want: mistral.ErrServer, msg: "upstream connect error"},
	}
	for _, tt := range tests {
		e.sb.InjectFault(sandbox.Fault{Route: "GET /v1/admin/api-keys", Status: tt.status, Body: tt.body, Times: 1})
		_, err := e.client.ListKeys(ctx, mistral.ListKeysOptions{})
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%d %s: err = %v, want %v containing %q", tt.status, tt.body, err, tt.want, tt.msg)
		}
	}
}

func TestRetries(t *testing.T) {
	const route = "GET /v1/admin/workspaces"
	tests := []struct {
		name       string
		faults     []sandbox.Fault
		maxRetries int
		timeout    time.Duration // per-attempt HTTP client timeout
		wantErr    error
		wantCalls  int64
		minElapsed time.Duration
	}{
		{name: "429 without Retry-After", faults: []sandbox.Fault{{Route: route, Status: 429, Times: 2}}, wantCalls: 3},
		{name: "429 with Retry-After", faults: []sandbox.Fault{{Route: route, Status: 429, Times: 1, RetryAfter: "1"}}, wantCalls: 2, minElapsed: time.Second},
		{name: "5xx", faults: []sandbox.Fault{{Route: route, Status: 502, Times: 1}, {Route: route, Status: 503, Times: 1}}, wantCalls: 3},
		{name: "dropped connection", faults: []sandbox.Fault{{Route: route, Drop: true, Times: 2}}, wantCalls: 3},
		{name: "attempt timeout", faults: []sandbox.Fault{{Route: route, Latency: 500 * time.Millisecond, Times: 1}}, timeout: 100 * time.Millisecond, wantCalls: 2},
		{name: "attempt timeout exhausts retries", faults: []sandbox.Fault{{Route: route, Latency: 300 * time.Millisecond}}, timeout: 50 * time.Millisecond, maxRetries: 1, wantErr: context.DeadlineExceeded, wantCalls: 2},
		{name: "gives up after MaxRetries", faults: []sandbox.Fault{{Route: route, Status: 500}}, maxRetries: 2, wantErr: mistral.ErrServer, wantCalls: 3},
		{name: "no retries", faults: []sandbox.Fault{{Route: route, Status: 429}}, maxRetries: -1, wantErr: mistral.ErrRateLimited, wantCalls: 1},
		{name: "401 never retried", faults: []sandbox.Fault{{Route: route, Status: 401}}, wantErr: mistral.ErrUnauthorized, wantCalls: 1},
		{name: "422 never retried", faults: []sandbox.Fault{{Route: route, Status: 422}}, wantErr: mistral.ErrValidation, wantCalls: 1},
		{name: "wildcard fault", faults: []sandbox.Fault{{Route: "*", Status: 503, Times: 1}}, wantCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil, func(o *mistral.Options) {
				o.MaxRetries = tt.maxRetries
				o.Timeout = tt.timeout
			})
			for _, f := range tt.faults {
				e.sb.InjectFault(f)
			}
			start := time.Now()
			p, err := e.client.ListWorkspaces(context.Background(), mistral.ListWorkspacesOptions{})
			if tt.wantErr == nil && (err != nil || len(p.Items) != 1) {
				t.Fatalf("err = %v, items %d", err, len(p.Items))
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := e.sb.Stats()[route]; got != tt.wantCalls {
				t.Errorf("calls = %d, want %d", got, tt.wantCalls)
			}
			if el := time.Since(start); el < tt.minElapsed {
				t.Errorf("elapsed %v < %v: Retry-After not honoured", el, tt.minElapsed)
			}
		})
	}
}

func TestRetryCreateAndDelete(t *testing.T) {
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	e.sb.InjectFault(sandbox.Fault{Route: "POST /v1/admin/api-keys", Status: 503, Times: 1})
	e.sb.InjectFault(sandbox.Fault{Route: "POST /v1/admin/api-keys", Drop: true, Times: 1})
	k := e.createKey(t, "retried")
	if got := e.sb.Stats()["POST /v1/admin/api-keys"]; got != 3 {
		t.Errorf("create calls = %d, want 3", got)
	}
	e.sb.InjectFault(sandbox.Fault{Route: "DELETE /v1/admin/api-keys/{key_id}", Status: 429, Times: 1})
	if err := e.client.DeleteKey(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	if e.sb.Accepts(k.Key.Reveal()) {
		t.Error("deleted key still accepted")
	}
}

func TestContextDeadline(t *testing.T) {
	tests := []struct {
		name  string
		fault sandbox.Fault
	}{
		{name: "slow server", fault: sandbox.Fault{Route: "GET /v1/models", Latency: 3 * time.Second}},
		{name: "Retry-After beyond the deadline", fault: sandbox.Fault{Route: "GET /v1/models", Status: 429, RetryAfter: "30"}},
		{name: "retrying 5xx until the deadline", fault: sandbox.Fault{Route: "GET /v1/models", Status: 500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil, func(o *mistral.Options) {
				o.MaxRetries = 1000
				o.MinBackoff, o.MaxBackoff = 20*time.Millisecond, 50*time.Millisecond
			})
			k := e.createKey(t, "k")
			e.sb.InjectFault(tt.fault)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := e.client.ListModels(ctx, k.Key)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, context.DeadlineExceeded) && !mistral.Retryable(err) {
				t.Errorf("err = %v", err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("took %v past a 300ms deadline", el)
			}
		})
	}
	// Cancellation during a backoff stops at once.
	e := newEnv(t, nil, func(o *mistral.Options) { o.MinBackoff, o.MaxBackoff = time.Minute, time.Minute })
	e.sb.InjectFault(sandbox.Fault{Route: "*", Status: 503})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := e.client.RateLimit(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: %v", err)
	}
}

// TestNoKeyLeaks drives error and retry paths and checks that neither the
// admin key nor a created key appears in any error string or log line.
func TestNoKeyLeaks(t *testing.T) {
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	k := e.createKey(t, "leak-check")
	secrets := []string{e.sb.AdminKey(), k.Key.Reveal()}
	var errs []error
	collect := func(err error) {
		if err == nil {
			t.Fatal("expected an error")
		}
		errs = append(errs, err)
	}
	e.sb.InjectFault(sandbox.Fault{Route: "*", Status: 500, Times: 2, Body: `{"message": "echo ` + k.Key.Reveal() + ` ` + e.sb.AdminKey() + `"}`})
	e.sb.InjectFault(sandbox.Fault{Route: "*", Status: 401, Times: 2, Body: `{"detail": "bad key ` + k.Key.Reveal() + `", "request_id": "` + e.sb.AdminKey() + `"}`})
	_, err := e.client.ListModels(ctx, k.Key)
	collect(err)
	_, err = e.client.ListKeys(ctx, mistral.ListKeysOptions{})
	collect(err)
	if err := e.client.DeleteKey(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.ListModels(ctx, k.Key)
	collect(err)
	_, err = e.client.ChatCompletionStream(ctx, k.Key, mistral.ChatRequest{Model: "mistral-small-latest", Messages: []mistral.Message{{Role: "user", Content: "x"}}}, nil)
	collect(err)
	e.sb.InjectFault(sandbox.Fault{Route: "*", Drop: true, Times: 10})
	_, err = e.client.CreateKey(ctx, mistral.CreateKeyRequest{Name: "x", WorkspaceUUID: e.ws, UserID: e.user})
	collect(err)
	text := e.logs.String()
	for _, err := range errs {
		text += "\n" + err.Error() + fmt.Sprintf(" %+v %#v", err, err)
	}
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Fatalf("a key leaked into errors or logs:\n%s", text)
		}
	}
	if !strings.Contains(e.logs.String(), "mistral request retry") {
		t.Error("retries were not logged; the scan proves little")
	}
}

// TestTolerantAnswers serves answer variants through 2xx faults and checks
// the client copes.
func TestTolerantAnswers(t *testing.T) {
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	e.sb.InjectFault(sandbox.Fault{Route: "POST /v1/admin/api-keys", Status: 200, Times: 1,
		Body: `{"key_id": "k-1", "key": null, "name": "n", "created_at": "2026-11-27T12:00:00", "created_by": {"id": "u"}, "unknown": 1}`})
	k, err := e.client.CreateKey(ctx, mistral.CreateKeyRequest{Name: "n", WorkspaceUUID: e.ws, UserID: e.user})
	if err == nil || k.KeyID != "k-1" || !strings.Contains(err.Error(), "no plaintext") {
		t.Errorf("create without plaintext: %+v, %v", k, err)
	}
	e.sb.InjectFault(sandbox.Fault{Route: "GET /v1/admin/usage", Status: 200, Times: 1,
		Body: `{"completion": [{"model": "mistral-small-latest", "input_tokens": 10, "output_tokens": 2}], "chat": {"codestral-latest": {"prompt_tokens": 1}}}`})
	u, err := e.client.Usage(ctx, mistral.UsageQuery{Month: 11, Year: 2026})
	if err != nil || u.Totals()["mistral-small-latest"] != (mistral.ModelUsage{PromptTokens: 10, CompletionTokens: 2}) || u.Totals()["codestral-latest"].PromptTokens != 1 {
		t.Errorf("usage variant: %+v, %v", u.Categories, err)
	}
	k2 := e.createKey(t, "stream")
	e.sb.InjectFault(sandbox.Fault{Route: "POST /v1/chat/completions", Status: 200, Times: 1,
		Body: ": comment\nevent: message\ndata: {\"id\":\"a\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}}],\"extra\":{\"x\":1}}\n\n" +
			"data: {\"id\":\"a\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\ndata: [DONE]\n\n"})
	var text string
	usage, err := e.client.ChatCompletionStream(ctx, k2.Key, mistral.ChatRequest{Model: "mistral-small-latest", Messages: []mistral.Message{{Role: "user", Content: "x"}}},
		func(c mistral.ChatChunk) error {
			for _, ch := range c.Choices {
				text += ch.Delta.Content
			}
			return nil
		})
	if err != nil || usage == nil || usage.TotalTokens != 4 || text != "hi" {
		t.Errorf("stream variant: %+v %q %v", usage, text, err)
	}
	e.sb.InjectFault(sandbox.Fault{Route: "POST /v1/chat/completions", Status: 200, Times: 1, Body: "data: {\"id\":\"a\",\"choices\":[]}\n\n"})
	if _, err := e.client.ChatCompletionStream(ctx, k2.Key, mistral.ChatRequest{Model: "mistral-small-latest", Messages: []mistral.Message{{Role: "user", Content: "x"}}}, nil); err == nil || !strings.Contains(err.Error(), "without [DONE]") {
		t.Errorf("truncated stream: %v", err)
	}
	e.sb.InjectFault(sandbox.Fault{Route: "GET /v1/models", Status: 200, Times: 1, Body: `{"data": "nope"}`})
	if _, err := e.client.ListModels(ctx, k2.Key); err == nil || !strings.Contains(err.Error(), "decode response") {
		t.Errorf("bad models answer: %v", err)
	}
}
