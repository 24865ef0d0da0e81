package gateway

import (
	"fmt"
	"testing"
)

func testAuthorizer(t testing.TB) *authorizer {
	t.Helper()
	roles := map[string]*role{
		"analyst": compileRole("analyst", Role{Models: []string{"mistral-small-latest", "mistral-embed"}, MaxTokensPerRequest: 500}),
		"dev":     compileRole("dev", Role{Models: []string{"codestral-*", "mistral-small-latest"}, MaxTokensPerRequest: 2000}),
		"admin":   compileRole("admin", Role{Models: []string{"*"}}),
	}
	a := &authorizer{byHash: map[[32]byte]*principal{}}
	for i, r := range []string{"analyst", "dev", "admin"} {
		h := HashToken(fmt.Sprintf("tok-%d", i))
		a.byHash[h] = &principal{name: r + "-app", hash: h, role: roles[r]}
	}
	// A developer in a workspace that allows only Mistral's own models.
	ws := compileWorkspace("ops", Workspace{Models: []string{"mistral-*", "open-mistral-7b"}}, nil)
	h := HashToken("tok-ws")
	a.byHash[h] = &principal{name: "ops-dev", hash: h, role: roles["dev"], ws: ws}
	// An unrestricted workspace (no models listed) leaves the role's choice.
	h = HashToken("tok-open")
	a.byHash[h] = &principal{name: "open-dev", hash: h, role: roles["dev"], ws: compileWorkspace("open", Workspace{RPM: 5}, nil)}
	// Many more principals, as a large deployment would have.
	for i := 3; i < 1000; i++ {
		h := HashToken(fmt.Sprintf("tok-%d", i))
		a.byHash[h] = &principal{name: fmt.Sprint("app-", i), hash: h, role: roles["dev"]}
	}
	return a
}

func TestAuthorize(t *testing.T) {
	a := testAuthorizer(t)
	tests := []struct {
		name      string
		token     string
		model     string
		maxTokens int64
		want      denial
		client    string
	}{
		{name: "exact model", token: "tok-0", model: "mistral-small-latest", maxTokens: 100, want: allowed, client: "analyst-app"},
		{name: "at the max", token: "tok-0", model: "mistral-embed", maxTokens: 500, want: allowed, client: "analyst-app"},
		{name: "over the max", token: "tok-0", model: "mistral-small-latest", maxTokens: 501, want: denyMaxTokens, client: "analyst-app"},
		{name: "not applicable", token: "tok-0", model: "mistral-embed", maxTokens: -1, want: allowed, client: "analyst-app"},
		{name: "unlisted model", token: "tok-0", model: "mistral-large-latest", maxTokens: 10, want: denyModel, client: "analyst-app"},
		{name: "prefix wildcard", token: "tok-1", model: "codestral-2508", maxTokens: 10, want: allowed, client: "dev-app"},
		{name: "prefix is not a substring", token: "tok-1", model: "my-codestral-x", maxTokens: 10, want: denyModel, client: "dev-app"},
		{name: "prefix alone", token: "tok-1", model: "codestral-", maxTokens: 10, want: allowed, client: "dev-app"},
		{name: "star allows all, no max", token: "tok-2", model: "anything", maxTokens: 1 << 30, want: allowed, client: "admin-app"},
		{name: "workspace refuses what the role allows", token: "tok-ws", model: "codestral-2508", maxTokens: 10, want: denyWorkspaceModel, client: "ops-dev"},
		{name: "workspace and role allow", token: "tok-ws", model: "mistral-small-latest", maxTokens: 10, want: allowed, client: "ops-dev"},
		{name: "role refuses before the workspace", token: "tok-ws", model: "mistral-large-latest", maxTokens: 10, want: denyModel, client: "ops-dev"},
		{name: "workspace refusal before max_tokens", token: "tok-ws", model: "codestral-2508", maxTokens: 1 << 20, want: denyWorkspaceModel, client: "ops-dev"},
		{name: "unrestricted workspace", token: "tok-open", model: "codestral-2508", maxTokens: 10, want: allowed, client: "open-dev"},
		{name: "unrestricted workspace, role refuses", token: "tok-open", model: "open-mistral-7b", maxTokens: 10, want: denyModel, client: "open-dev"},
		{name: "unknown token", token: "nope", model: "mistral-small-latest", maxTokens: 1, want: denyUnknownToken, client: ""},
		{name: "empty token", token: "", model: "mistral-small-latest", maxTokens: 1, want: denyUnknownToken, client: ""},
		{name: "token differing by case", token: "TOK-0", model: "mistral-small-latest", maxTokens: 1, want: denyUnknownToken, client: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, d := a.authorize(tc.token, tc.model, tc.maxTokens)
			if d != tc.want {
				t.Fatalf("denial = %d, want %d", d, tc.want)
			}
			got := ""
			if p != nil {
				got = p.name
			}
			if got != tc.client {
				t.Fatalf("principal = %q, want %q", got, tc.client)
			}
		})
	}
}

func TestBearer(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{in: "Bearer abc", want: "abc"}, {in: "bearer abc", want: "abc"}, {in: "BEARER  abc ", want: "abc"},
		{in: "Basic abc", want: ""}, {in: "Bearer", want: ""}, {in: "", want: ""}, {in: "abc", want: ""},
	} {
		if got := bearer(tc.in); got != tc.want {
			t.Errorf("bearer(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestAuthorizeAllocatesNothing(t *testing.T) {
	a := testAuthorizer(t)
	tok := "sk-gw-" + fmt.Sprint(make([]byte, 40)) // a long token, past any small-buffer optimization
	h := HashToken(tok)
	a.byHash[h] = &principal{name: "long", hash: h, role: compileRole("dev", Role{Models: []string{"codestral-*", "mistral-*"}, MaxTokensPerRequest: 10}),
		ws: compileWorkspace("ops", Workspace{Models: []string{"codestral-latest", "open-*"}}, nil)}
	n := testing.AllocsPerRun(1000, func() {
		if _, d := a.authorize(tok, "codestral-latest", 5); d != allowed {
			t.Fatal("denied")
		}
		if _, d := a.authorize(tok, "mistral-small-latest", 5); d != denyWorkspaceModel {
			t.Fatal("the workspace did not refuse")
		}
		if _, d := a.authorize("unknown-token-value", "codestral-latest", 5); d != denyUnknownToken {
			t.Fatal("allowed")
		}
	})
	if n != 0 {
		t.Fatalf("authorize allocates %v times per run, want 0", n)
	}
}

// BenchmarkAuthorize measures the whole authorization decision (issue 7 (a)):
// token hash and lookup, constant-time confirm, role and workspace model
// check and max_tokens check.
func BenchmarkAuthorize(b *testing.B) {
	a := testAuthorizer(b)
	tok := "sk-gw-0123456789abcdef0123456789abcdef" // a realistic 38-byte token
	h := HashToken(tok)
	a.byHash[h] = &principal{name: "bench", hash: h, role: compileRole("dev", Role{Models: []string{"mistral-small-latest", "codestral-*", "ministral-*"}, MaxTokensPerRequest: 2000}),
		ws: compileWorkspace("ops", Workspace{Models: []string{"mistral-small-latest", "codestral-*"}, RPM: 100}, nil)}
	for _, bc := range []struct{ name, model string }{
		{name: "exact", model: "mistral-small-latest"},
		{name: "prefix", model: "codestral-latest"},
		{name: "denied_model", model: "mistral-large-latest"},
		{name: "denied_by_workspace", model: "ministral-8b-latest"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.authorize(tok, bc.model, 1000)
			}
		})
	}
}
