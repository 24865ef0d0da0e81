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
		{"exact model", "tok-0", "mistral-small-latest", 100, allowed, "analyst-app"},
		{"at the max", "tok-0", "mistral-embed", 500, allowed, "analyst-app"},
		{"over the max", "tok-0", "mistral-small-latest", 501, denyMaxTokens, "analyst-app"},
		{"not applicable", "tok-0", "mistral-embed", -1, allowed, "analyst-app"},
		{"unlisted model", "tok-0", "mistral-large-latest", 10, denyModel, "analyst-app"},
		{"prefix wildcard", "tok-1", "codestral-2508", 10, allowed, "dev-app"},
		{"prefix is not a substring", "tok-1", "my-codestral-x", 10, denyModel, "dev-app"},
		{"prefix alone", "tok-1", "codestral-", 10, allowed, "dev-app"},
		{"star allows all, no max", "tok-2", "anything", 1 << 30, allowed, "admin-app"},
		{"workspace refuses what the role allows", "tok-ws", "codestral-2508", 10, denyWorkspaceModel, "ops-dev"},
		{"workspace and role allow", "tok-ws", "mistral-small-latest", 10, allowed, "ops-dev"},
		{"role refuses before the workspace", "tok-ws", "mistral-large-latest", 10, denyModel, "ops-dev"},
		{"workspace refusal before max_tokens", "tok-ws", "codestral-2508", 1 << 20, denyWorkspaceModel, "ops-dev"},
		{"unrestricted workspace", "tok-open", "codestral-2508", 10, allowed, "open-dev"},
		{"unrestricted workspace, role refuses", "tok-open", "open-mistral-7b", 10, denyModel, "open-dev"},
		{"unknown token", "nope", "mistral-small-latest", 1, denyUnknownToken, ""},
		{"empty token", "", "mistral-small-latest", 1, denyUnknownToken, ""},
		{"token differing by case", "TOK-0", "mistral-small-latest", 1, denyUnknownToken, ""},
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
		{"Bearer abc", "abc"}, {"bearer abc", "abc"}, {"BEARER  abc ", "abc"},
		{"Basic abc", ""}, {"Bearer", ""}, {"", ""}, {"abc", ""},
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
		{"exact", "mistral-small-latest"},
		{"prefix", "codestral-latest"},
		{"denied_model", "mistral-large-latest"},
		{"denied_by_workspace", "ministral-8b-latest"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.authorize(tok, bc.model, 1000)
			}
		})
	}
}
