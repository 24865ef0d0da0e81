package gateway

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
)

func TestFromConfig(t *testing.T) {
	dir := t.TempDir()
	store, err := file.New(filepath.Join(dir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(dir, "tok")
	if err := os.WriteFile(tokFile, []byte("file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GW_TEST_TOKEN", "env-token")
	shaTok := HashToken("sha-token")
	base := func() *config.Config {
		return &config.Config{
			Mistral: config.Mistral{BaseURL: "http://127.0.0.1:1"},
			Keys: []config.Key{
				{Name: "ml-key", Workspace: "ml", Store: config.KeyStore{Backend: "file", Path: "mistral/ml", ValueFormat: "raw"}},
				{Name: "dev-first", Workspace: "dev", Store: config.KeyStore{Backend: "file", Path: "mistral/dev-1"}},
				{Name: "dev-second", Workspace: "dev", Store: config.KeyStore{Backend: "file", Path: "mistral/dev-2"}},
			},
			Roles: map[string]config.Role{"analyst": {Models: []string{"mistral-small-*"}, MaxTokensPerRequest: 500, DailyTokens: 1000, RPM: 5, HourlyUSD: 1, DailyUSD: 2}},
			Gateway: config.Gateway{Listen: "127.0.0.1:0", MaxBodyBytes: 4096, MaxConnections: 7, Clients: []config.GatewayClient{
				{Name: "a", Role: "analyst", Workspace: "dev", TokenSHA256: strings.ToUpper(hex.EncodeToString(shaTok[:]))},
				{Name: "b", Role: "analyst", Workspace: "ml", TokenFile: tokFile},
				{Name: "c", Role: "analyst", Workspace: "dev", TokenEnv: "GW_TEST_TOKEN"},
			}},
			Prices:     map[string]config.ModelPrice{"mistral-small-latest": {InputPerM: 9, OutputPerM: 10}},
			Workspaces: []config.Workspace{{Name: "dev", Models: []string{"mistral-*", "codestral-latest"}, RPM: 30}, {Name: "ml"}},
		}
	}
	deps := Deps{Stores: map[string]KeyReader{"file": store}}

	o, err := FromConfig(base(), deps)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.Upstreams["dev"]; got.KeyName != "dev-first" || got.Target.Path != "mistral/dev-1" || got.Target.Format != secrets.FormatJSON {
		t.Fatalf("dev upstream %+v: want the first key of the workspace", got)
	}
	if o.MaxConnections != 7 {
		t.Fatalf("max connections %d, want the config's 7", o.MaxConnections)
	}
	if got := o.Upstreams["ml"]; got.Target.Format != secrets.FormatRaw {
		t.Fatalf("ml upstream %+v: want raw format", got)
	}
	wantHash := map[string][32]byte{"a": shaTok, "b": HashToken("file-token"), "c": HashToken("env-token")}
	for _, c := range o.Clients {
		if c.TokenSHA256 != wantHash[c.Name] {
			t.Errorf("client %s: wrong token hash", c.Name)
		}
	}
	if r := o.Roles["analyst"]; r.DailyTokens != 1000 || r.RPM != 5 || r.HourlyUSD != 1 || r.DailyUSD != 2 || r.MaxTokensPerRequest != 500 {
		t.Fatalf("role %+v", r)
	}
	if w := o.Workspaces["dev"]; w.RPM != 30 || strings.Join(w.Models, ",") != "mistral-*,codestral-latest" {
		t.Fatalf("dev workspace limits %+v", w)
	}
	if w, ok := o.Workspaces["ml"]; !ok || w.RPM != 0 || len(w.Models) != 0 {
		t.Fatalf("ml workspace limits %+v (listed %v), want none", w, ok)
	}
	if p, ok := o.Price("mistral-small-latest"); !ok || p.InputPerM != 9 {
		t.Fatalf("config price not used: %+v", p)
	}
	if p, ok := o.Price("codestral-latest"); !ok || p.InputPerM != 0.30 {
		t.Fatalf("default price not used: %+v", p)
	}
	if o.MaxBodyBytes != 4096 || o.Listen != "127.0.0.1:0" || o.UpstreamURL != "http://127.0.0.1:1" {
		t.Fatalf("options %+v", o)
	}

	bad := []struct {
		name   string
		mutate func(*config.Config)
		want   string
	}{
		{name: "workspace without key", mutate: func(c *config.Config) { c.Gateway.Clients[0].Workspace = "nokey" }, want: "workspace nokey has no managed key"},
		{name: "store not configured", mutate: func(c *config.Config) { c.Keys[1].Store.Backend = "vault" }, want: `secret store "vault" is not configured`},
		{name: "bad sha", mutate: func(c *config.Config) { c.Gateway.Clients[0].TokenSHA256 = "abc" }, want: "64 hex digits"},
		{name: "missing env", mutate: func(c *config.Config) { c.Gateway.Clients[2].TokenEnv = "GW_TEST_UNSET_TOKEN" }, want: "GW_TEST_UNSET_TOKEN"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(c)
			_, err := FromConfig(c, deps)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			for _, s := range []string{"file-token", "env-token", "sha-token"} {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error leaks a token: %v", err)
				}
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	store, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	good := Options{UpstreamURL: "http://127.0.0.1:1", Roles: map[string]Role{"r": {Models: []string{"*"}}},
		Clients:   []Client{{Name: "a", Role: "r", Workspace: "w", TokenSHA256: HashToken("t")}},
		Upstreams: map[string]Upstream{"w": {Store: store, Target: secrets.Target{Path: "k"}}}}
	tests := []struct {
		name   string
		mutate func(*Options)
		want   string
	}{
		{name: "no upstream URL", mutate: func(o *Options) { o.UpstreamURL = "" }, want: "upstream URL is required"},
		{name: "bad upstream URL", mutate: func(o *Options) { o.UpstreamURL = "ftp://x" }, want: "http(s) URL"},
		{name: "unknown role", mutate: func(o *Options) { o.Clients[0].Role = "x" }, want: `unknown role "x"`},
		{name: "no key store", mutate: func(o *Options) { o.Upstreams = nil }, want: `workspace "w" has no upstream key`},
		{name: "negative workspace rpm", mutate: func(o *Options) { o.Workspaces = map[string]Workspace{"w": {RPM: -1}} }, want: "workspace w: rpm -1 is negative"},
		{name: "shared token", mutate: func(o *Options) {
			o.Clients = append(o.Clients, Client{Name: "b", Role: "r", Workspace: "w", TokenSHA256: HashToken("t")})
		}, want: "share a token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			o.Clients = append([]Client(nil), good.Clients...)
			tc.mutate(&o)
			_, err := New(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
