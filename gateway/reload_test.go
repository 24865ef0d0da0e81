package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/secrets"
)

// TestReload swaps clients, roles, workspace limits and the key location
// while serving:
// counters survive, removed tokens stop working, added ones start, a moved
// key is read from its new place, and a bad reload changes nothing.
func TestReload(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if resp, b, err := e.do(ctx, "budget", "POST", pathChat, chatBody("mistral-small-latest", 100, false, "before")); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v %s", err, resp, b)
		}
	}
	before, _, _, _ := e.principal("budget").ledger.snapshot()

	// The same key record published at a second path, as after moving it.
	cur, err := e.store.Read(ctx, e.target)
	if err != nil {
		t.Fatal(err)
	}
	moved := secrets.Target{Path: "mistral/dev-team-moved"}
	if _, err := e.store.Write(ctx, secrets.WriteRequest{Target: moved, IfVersion: secrets.NoVersion, Record: cur.Record}); err != nil {
		t.Fatal(err)
	}
	o := e.opts
	o.Roles = map[string]Role{
		"budget":   {Models: []string{"mistral-small-latest"}, MaxTokensPerRequest: 10, DailyTokens: 1000},
		"newcomer": {Models: []string{"mistral-embed", "codestral-*"}},
	}
	o.Workspaces = map[string]Workspace{testWorkspace: {Models: []string{"mistral-small-latest", "mistral-embed"}, RPM: 4}}
	newTok := randomToken("gw-newcomer-")
	e.secrets = append(e.secrets, newTok)
	o.Clients = []Client{
		{Name: "budget-app", Role: "budget", Workspace: testWorkspace, TokenSHA256: HashToken(e.tokens["budget"])},
		{Name: "newcomer-app", Role: "newcomer", Workspace: testWorkspace, TokenSHA256: HashToken(newTok)},
	}
	o.Upstreams = map[string]Upstream{testWorkspace: {KeyName: "dev-team-key", Store: e.store, Target: moved}}

	bad := o
	bad.Clients = append([]Client{{Name: "x", Role: "nope", Workspace: testWorkspace, TokenSHA256: HashToken("x")}}, o.Clients...)
	if err := e.gw.Reload(ctx, bad); err == nil || !strings.Contains(err.Error(), `unknown role "nope"`) {
		t.Fatalf("bad reload: %v", err)
	}
	if resp, _, _ := e.do(ctx, "analyst", "GET", pathModels, ""); resp.StatusCode != 200 {
		t.Fatalf("a failed reload changed the clients: %d", resp.StatusCode)
	}

	if err := e.gw.Reload(ctx, o); err != nil {
		t.Fatal(err)
	}
	e.tokens["newcomer"] = newTok
	tests := []struct {
		name, role, path, body string
		want                   int
	}{
		{name: "removed client", role: "analyst", path: pathChat, body: chatBody("mistral-small-latest", 5, false, "x"), want: 401},
		{name: "new role limit", role: "budget", path: pathChat, body: chatBody("mistral-small-latest", 11, false, "x"), want: 403},
		{name: "kept client", role: "budget", path: pathChat, body: chatBody("mistral-small-latest", 10, false, "x"), want: 200},
		{name: "added client", role: "newcomer", path: pathEmbeddings, body: `{"model":"mistral-embed","input":"x"}`, want: 200},
		{name: "added client's role", role: "newcomer", path: pathChat, body: chatBody("mistral-small-latest", 5, false, "x"), want: 403},
		{name: "new workspace models", role: "newcomer", path: pathChat, body: chatBody("codestral-latest", 5, false, "x"), want: 403},
		{name: "third in the workspace's minute", role: "budget", path: pathChat, body: chatBody("mistral-small-latest", 10, false, "x"), want: 200},
		{name: "fourth in the workspace's minute", role: "budget", path: pathChat, body: chatBody("mistral-small-latest", 10, false, "x"), want: 200},
		{name: "new workspace rpm", role: "newcomer", path: pathEmbeddings, body: `{"model":"mistral-embed","input":"x"}`, want: 429},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, b, err := e.do(ctx, tc.role, "POST", tc.path, tc.body)
			if err != nil || resp.StatusCode != tc.want {
				t.Fatalf("%v status %d, want %d: %s", err, resp.StatusCode, tc.want, b)
			}
		})
	}
	// A reload keeps the workspace's rpm window.
	if err := e.gw.Reload(ctx, o); err != nil {
		t.Fatal(err)
	}
	if resp, b, err := e.do(ctx, "budget", "POST", pathChat, chatBody("mistral-small-latest", 10, false, "x")); err != nil || resp.StatusCode != 429 || !strings.Contains(string(b), "workspace_rpm") {
		t.Fatalf("after a second reload: %v %v %s, want 429", err, resp, b)
	}
	after, _, _, _ := e.principal("budget").ledger.snapshot()
	if after <= before {
		t.Fatalf("budget counter %d after reload, was %d: counters must survive", after, before)
	}
	kc := e.gw.snap.Load().keys[testWorkspace]
	if kc.target != moved {
		t.Fatalf("key cache target %+v, want the moved path", kc.target)
	}
	// The old poller stopped; the new one follows the moved record.
	rotated := cur.Record
	k, err := e.sb.AddKey("dev-team-key-2", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, k.Plaintext)
	rotated.APIKey, rotated.KeyID = k.Plaintext, k.ID
	d, err := e.store.Describe(ctx, moved)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Write(ctx, secrets.WriteRequest{Target: moved, IfVersion: d.Current, Record: rotated}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "the poller to read the rotated key at the reloaded location", func() bool {
		return kc.get().keyID == k.ID
	})
}
