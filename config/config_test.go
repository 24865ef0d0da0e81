package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestGoodConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	files = append(files, filepath.Join("..", "deploy", "mrbacd.example.yaml"))
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) && strings.HasPrefix(f, "..") {
				t.Fatalf("%s is missing", f)
			}
			cfg, err := Load(f)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if cfg.Path != f {
				t.Errorf("Path = %q, want %q", cfg.Path, f)
			}
			data, _ := os.ReadFile(f)
			sum := sha256.Sum256(data)
			if cfg.Hash() != hex.EncodeToString(sum[:]) {
				t.Errorf("Hash = %q", cfg.Hash())
			}
			if len(cfg.Keys) == 0 || len(cfg.Workspaces) == 0 {
				t.Errorf("no keys or workspaces decoded")
			}
		})
	}
}

// TestFullExample checks the decoded values of a config touching every
// section (testdata/good/full.yaml).
func TestFullExample(t *testing.T) {
	cfg, err := Load("testdata/good/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v := cfg.Secrets.Vault
	if v == nil || v.Address != "https://vault.example:8200" || v.Auth.Method != "approle" ||
		v.Auth.RoleIDFile != "/etc/mrbacd/role-id" || v.Auth.SecretIDFile != "/etc/mrbacd/secret-id" || v.Auth.Mount != "approle" {
		t.Errorf("vault = %+v", v)
	}
	if cfg.Secrets.AWS == nil || cfg.Secrets.AWS.Region != "eu-west-1" {
		t.Errorf("aws = %+v", cfg.Secrets.AWS)
	}
	if cfg.Notify.Slack == nil || cfg.Notify.Slack.TokenEnv != "SLACK_BOT_TOKEN" || cfg.Notify.Slack.Channel != "#mistral-alerts" {
		t.Errorf("slack = %+v", cfg.Notify.Slack)
	}
	k, ok := cfg.Key("dev-team-key")
	if !ok || k.Workspace != "dev-workspace" || k.Store.Backend != "vault" || k.Store.Location() != "mistral/dev-team" ||
		k.RotateEvery.D() != 90*24*time.Hour || k.PropagationWait.D() != time.Minute || k.ExpirationGrace.D() != 30*24*time.Hour {
		t.Errorf("key = %+v", k)
	}
	if _, ok := cfg.Key("nope"); ok {
		t.Error("Key(nope) found")
	}
	w, ok := cfg.Workspace("ml-workspace")
	if !ok || w.RPM != 200 || w.MonthlyBudgetUSD != 500 || !reflect.DeepEqual(w.Models, []string{"*"}) {
		t.Errorf("workspace = %+v", w)
	}
	r, ok := cfg.Role("developer")
	if !ok || r.MaxTokensPerRequest != 2000 || r.DailyTokens != 500000 || r.RPM != 60 {
		t.Errorf("role = %+v", r)
	}
	if _, ok := cfg.Role("nope"); ok {
		t.Error("Role(nope) found")
	}
	if cl := cfg.Gateway.Clients; len(cl) != 1 || cl[0].Role != "analyst" || cfg.Gateway.Listen != "127.0.0.1:8088" {
		t.Errorf("gateway = %+v", cfg.Gateway)
	}
	if !reflect.DeepEqual(cfg.Admin.AllowedUIDs, []int{0}) || cfg.Metrics.Listen != "127.0.0.1:9464" {
		t.Errorf("admin/metrics = %+v %+v", cfg.Admin, cfg.Metrics)
	}
}

// TestDefaults checks every default on the smallest config.
func TestDefaults(t *testing.T) {
	cfg, err := Load("testdata/good/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	day := 24 * time.Hour
	checks := []struct {
		name      string
		got, want any
	}{
		{name: "mistral.base_url", got: cfg.Mistral.BaseURL, want: "https://api.mistral.ai"},
		{name: "mistral.admin_key_env", got: cfg.Mistral.AdminKeyEnv, want: "MISTRAL_ADMIN_KEY"},
		{name: "mistral.admin_auth_header", got: cfg.Mistral.AdminAuthHeader, want: "bearer"},
		{name: "mistral.timeout", got: cfg.Mistral.Timeout.D(), want: 30 * time.Second},
		{name: "mistral.max_retries", got: *cfg.Mistral.MaxRetries, want: 4},
		{name: "state.path", got: cfg.State.Path, want: "/var/lib/mrbacd/state.db"},
		{name: "admin.socket", got: cfg.Admin.Socket, want: "/run/mrbacd/admin.sock"},
		{name: "admin.socket_mode", got: cfg.Admin.SocketMode, want: "0600"},
		{name: "log.format", got: cfg.Log.Format, want: "text"},
		{name: "log.level", got: cfg.Log.Level, want: "info"},
		{name: "secrets.file.dir", got: cfg.Secrets.File.Dir, want: "/var/lib/mrbacd/secrets"},
		{name: "secrets.vault", got: cfg.Secrets.Vault == nil, want: true},
		{name: "keys[0].store.value_format", got: cfg.Keys[0].Store.ValueFormat, want: "json"},
		{name: "keys[0].rotate_every", got: cfg.Keys[0].RotateEvery.D(), want: 90 * day},
		{name: "keys[0].propagation_wait", got: cfg.Keys[0].PropagationWait.D(), want: 60 * time.Second},
		{name: "keys[0].expiration_grace", got: cfg.Keys[0].ExpirationGrace.D(), want: 30 * day},
		{name: "jobs.timezone", got: cfg.Jobs.Timezone, want: "UTC"},
		{name: "jobs.rotate.schedule", got: cfg.Jobs.Rotate.Schedule, want: "0 3 * * *"},
		{name: "jobs.rotate.timeout", got: cfg.Jobs.Rotate.Timeout.D(), want: time.Hour},
		{name: "jobs.rotate.concurrency", got: cfg.Jobs.Rotate.Concurrency, want: 4},
		{name: "jobs.rotate.verify_timeout", got: cfg.Jobs.Rotate.VerifyTimeout.D(), want: 2 * time.Minute},
		{name: "jobs.audit.schedule", got: cfg.Jobs.Audit.Schedule, want: "30 2 * * *"},
		{name: "jobs.audit.timeout", got: cfg.Jobs.Audit.Timeout.D(), want: 30 * time.Minute},
		{name: "jobs.audit.unused_after", got: cfg.Jobs.Audit.UnusedAfter.D(), want: 30 * day},
		{name: "jobs.audit.expiring_within", got: cfg.Jobs.Audit.ExpiringWithin.D(), want: 14 * day},
		{name: "jobs.budget.schedule", got: cfg.Jobs.Budget.Schedule, want: "*/30 * * * *"},
		{name: "jobs.budget.timeout", got: cfg.Jobs.Budget.Timeout.D(), want: 10 * time.Minute},
		{name: "jobs.budget.thresholds", got: cfg.Jobs.Budget.Thresholds, want: []float64{0.5, 0.8, 1.0}},
		{name: "gateway.max_body_bytes", got: cfg.Gateway.MaxBodyBytes, want: int64(1 << 20)},
		{name: "shutdown_timeout", got: cfg.ShutdownTimeout.D(), want: 10 * time.Second},
		{name: "roles", got: cfg.Roles != nil, want: true},
		{name: "prices", got: cfg.Prices != nil, want: true},
		{name: "gateway.read_timeout", got: cfg.Gateway.ReadTimeout.D(), want: 30 * time.Second},
		{name: "gateway.max_connections", got: cfg.Gateway.MaxConnections, want: 10000},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

func TestVaultAuthDefaults(t *testing.T) {
	tests := []struct {
		name, auth           string
		tokenEnv, mount, jwt string
	}{
		{name: "token default", auth: "{}", tokenEnv: "VAULT_TOKEN", mount: "token", jwt: ""},
		{name: "token file", auth: "{token_file: /etc/mrbacd/vault-token}", tokenEnv: "", mount: "token", jwt: ""},
		{name: "kubernetes", auth: "{method: kubernetes, role: mrbacd}", tokenEnv: "", mount: "kubernetes", jwt: DefaultKubernetesJWT},
		{name: "approle custom mount", auth: "{method: approle, mount: ar, role_id_file: /r, secret_id_env: SID}", tokenEnv: "", mount: "ar", jwt: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "secrets:\n  vault: {address: \"http://127.0.0.1:8200\", auth: " + tt.auth + "}\n" + minimalBody
			cfg, err := Parse("v.yaml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			a := cfg.Secrets.Vault.Auth
			if a.TokenEnv != tt.tokenEnv || a.Mount != tt.mount || a.JWTFile != tt.jwt || cfg.Secrets.Vault.Mount != "secret" {
				t.Errorf("auth = %+v, mount %q", a, cfg.Secrets.Vault.Mount)
			}
		})
	}
}

const minimalBody = "workspaces: [{name: dev}]\nkeys: [{name: dev-key, workspace: dev, store: {backend: file, path: k}}]\n"

// TestEveryProblemReported checks that problems in different sections are
// all reported, sorted by position, in one error.
func TestEveryProblemReported(t *testing.T) {
	src := `mistral: {admin_key: x, base_url: ftp://x}
log: {level: loud}
workspaces: [{name: dev}]
keys:
  - {name: k1, workspace: nope, store: {backend: file, path: a}}
  - {name: K2, workspace: dev, store: {backend: aws, secret_id: s}}
jobs: {budget: {thresholds: [2, 1]}}
`
	_, err := Parse("all.yaml", []byte(src))
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("err = %v", err)
	}
	want := []string{
		"all.yaml:1:11: mistral.admin_key: inline secrets are not allowed: use admin_key_env or admin_key_file",
		"all.yaml:1:35: mistral.base_url: must be an http or https URL",
		"all.yaml:2:14: log.level: must be one of debug, info, warn, error, got \"loud\"",
		"all.yaml:5:27: keys[0].workspace: workspace \"nope\" is not declared",
		"all.yaml:6:12: keys[1].name: must be 1 to 40 characters of a-z, 0-9 and -, starting and ending with a letter or digit",
		"all.yaml:6:49: keys[1].store.backend: backend aws is not configured: add secrets.aws",
		"all.yaml:7:33: jobs.budget.thresholds[1]: thresholds must be strictly ascending",
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(err.Error(), "\n") || strings.Count(err.Error(), "\n") != len(want)-1 {
		t.Errorf("Error() = %q", err.Error())
	}
}

func TestMergeKeysAndAliases(t *testing.T) {
	src := `workspaces: [{name: dev}]
keys:
  - &base {name: a, workspace: dev, store: {backend: file, path: a}, rotate_every: 30d}
  - <<: *base
    name: b
    store: {backend: file, path: b}
`
	cfg, err := Parse("m.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := cfg.Key("b")
	if b == nil || b.Workspace != "dev" || b.Store.Path != "b" || b.RotateEvery.D() != 30*24*time.Hour {
		t.Errorf("b = %+v", b)
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, []byte(strings.Repeat("#\n", MaxFileSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	var ps Problems
	if _, err := Load(big); !errors.As(err, &ps) || !strings.Contains(ps[0].Message, "larger than") {
		t.Errorf("big file: %v", err)
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{p: Problem{File: "c.yaml", Line: 3, Col: 5, Field: "keys[2].store.backend", Message: "required"}, want: "c.yaml:3:5: keys[2].store.backend: required"},
		{p: Problem{File: "c.yaml", Line: 1, Col: 1, Message: "empty config"}, want: "c.yaml:1:1: empty config"},
		{p: Problem{File: "c.yaml", Message: "no position"}, want: "c.yaml: no position"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "90d", want: 90 * day, wantErr: false},
		{in: "1d12h", want: 36 * time.Hour, wantErr: false},
		{in: "1.5d", want: 36 * time.Hour, wantErr: false},
		{in: "36h", want: 36 * time.Hour, wantErr: false},
		{in: "60s", want: time.Minute, wantErr: false},
		{in: "1m30s", want: 90 * time.Second, wantErr: false},
		{in: "-1d", want: -day, wantErr: false},
		{in: "0d", want: 0, wantErr: false},
		{in: "", want: 0, wantErr: true},
		{in: "d", want: 0, wantErr: true},
		{in: "14", want: 0, wantErr: true},
		{in: "1d-2h", want: 0, wantErr: true},
		{in: "1e3d", want: 0, wantErr: true},
		{in: "infd", want: 0, wantErr: true},
		{in: "NaNd", want: 0, wantErr: true},
		{in: "999999999d", want: 0, wantErr: true},
		{in: "106752d", want: 0, wantErr: true},
		{in: "106751d23h", want: 106751*day + 23*time.Hour, wantErr: false},
		{in: "30 seconds", want: 0, wantErr: true},
		{in: "2w", want: 0, wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	if s := Duration(90 * day).String(); s != "90d" {
		t.Errorf("String = %q", s)
	}
	if s := Duration(90 * time.Second).String(); s != "1m30s" {
		t.Errorf("String = %q", s)
	}
}

func TestModelPatterns(t *testing.T) {
	valid := []string{"*", "mistral-small-latest", "mistral-*", "ft:open-mistral-7b:abc", "codestral*"}
	invalid := []string{"", "**", "*-latest", "mistral-*-latest", "a b", "ümlaut", strings.Repeat("a", 200)}
	for _, p := range valid {
		if !ValidModelPattern(p) {
			t.Errorf("ValidModelPattern(%q) = false", p)
		}
	}
	for _, p := range invalid {
		if ValidModelPattern(p) {
			t.Errorf("ValidModelPattern(%q) = true", p)
		}
	}
	tests := []struct {
		pattern, model string
		want           bool
	}{
		{pattern: "*", model: "anything", want: true},
		{pattern: "mistral-*", model: "mistral-small-latest", want: true},
		{pattern: "mistral-*", model: "codestral-latest", want: false},
		{pattern: "mistral-small-latest", model: "mistral-small-latest", want: true},
		{pattern: "mistral-small-latest", model: "mistral-small", want: false},
		{pattern: "mistral-small", model: "mistral-small-latest", want: false},
	}
	for _, tt := range tests {
		if got := MatchModel(tt.pattern, tt.model); got != tt.want {
			t.Errorf("MatchModel(%q, %q) = %v", tt.pattern, tt.model, got)
		}
	}
}

func TestPrices(t *testing.T) {
	cfg, err := Parse("p.yaml", []byte(minimalBody+"prices:\n  mistral-small-latest: {input: 0.2, output: 0.7}\n  my-model: {input: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		model string
		want  ModelPrice
		ok    bool
	}{
		{model: "mistral-small-latest", want: ModelPrice{0.2, 0.7}, ok: true},
		{model: "my-model", want: ModelPrice{1, 0}, ok: true},
		{model: "mistral-medium-latest", want: ModelPrice{1.5, 7.5}, ok: true},
		{model: "mistral-embed", want: ModelPrice{0.1, 0}, ok: true},
		{model: "ministral-8b-latest", want: ModelPrice{0.15, 0.15}, ok: true},
		{model: "unknown-model", want: ModelPrice{}, ok: false},
	}
	for _, tt := range tests {
		got, ok := cfg.Price(tt.model)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Price(%q) = %v, %v; want %v, %v", tt.model, got, ok, tt.want, tt.ok)
		}
	}
	if len(DefaultPrices()) != 9 {
		t.Errorf("DefaultPrices has %d entries", len(DefaultPrices()))
	}
}

func TestResolveSecret(t *testing.T) {
	const secret = "sk-very-secret-value"
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	if err := os.WriteFile(file, []byte("  "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MRBACD_TEST_SECRET", " "+secret+" ")
	t.Setenv("MRBACD_TEST_EMPTY", "")
	tests := []struct {
		name, env, file string
		want            string
		errHas          string
	}{
		{name: "env", env: "MRBACD_TEST_SECRET", file: "", want: secret, errHas: ""},
		{name: "file", env: "", file: file, want: secret, errHas: ""},
		{name: "env empty", env: "MRBACD_TEST_EMPTY", file: "", want: "", errHas: "MRBACD_TEST_EMPTY"},
		{name: "env unset", env: "MRBACD_TEST_UNSET_XYZ", file: "", want: "", errHas: "MRBACD_TEST_UNSET_XYZ"},
		{name: "file empty", env: "", file: empty, want: "", errHas: empty},
		{name: "file missing", env: "", file: filepath.Join(dir, "nope"), want: "", errHas: "nope"},
		{name: "both", env: "MRBACD_TEST_SECRET", file: file, want: "", errHas: "use one"},
		{name: "none", env: "", file: "", want: "", errHas: "no environment variable or file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveSecret(tt.env, tt.file)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want it to name %q", err, tt.errHas)
				}
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error leaks the secret: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}

// TestNoSecretInProblems checks that a secret pasted into any field is
// never echoed by a problem message.
func TestNoSecretInProblems(t *testing.T) {
	const secret = "sk-LEAKCHECK0123456789"
	srcs := []string{
		"mistral: {admin_key_env: " + secret + "}\n" + minimalBody,
		"mistral: {admin_key: " + secret + "}\n" + minimalBody,
		"mistral: {max_retries: " + secret + "}\n" + minimalBody,
		"mistral: {timeout: " + secret + "}\n" + minimalBody,
		"notify: {slack: {token_env: " + secret + ", channel: x}}\n" + minimalBody,
		"secrets: {aws: {external_id_env: " + secret + "}}\n" + minimalBody,
		"roles: {a: {models: ['*']}}\ngateway: {clients: [{name: c, role: a, workspace: dev, token_sha256: " + secret + "}]}\n" + minimalBody,
		"roles: {a: {models: ['*']}}\ngateway: {clients: [{name: c, role: a, workspace: dev, token_env: " + secret + "}]}\n" + minimalBody,
		"jobs: {audit: {revoke_unused: " + secret + "}}\n" + minimalBody,
	}
	for _, src := range srcs {
		_, err := Parse("s.yaml", []byte(src))
		if err == nil {
			t.Errorf("no problem for %q", src)
			continue
		}
		if strings.Contains(err.Error(), "LEAKCHECK") {
			t.Errorf("problem echoes the secret: %v", err)
		}
	}
}

// BenchmarkParse measures parsing and validating the deploy example.
func BenchmarkParse(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("..", "deploy", "mrbacd.example.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse("example.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSecretNames: a *_file or *_env value that looks like a secret is
// refused, at check (a problem naming file, line and field) and at start
// (ResolveSecret), never echoed; real paths and variable names pass.
func TestSecretNames(t *testing.T) {
	const key = "Xq7LmN2pR9sT4vW8yZ1aB3cD5eF6gH0j" // the shape of a Mistral key
	tests := []struct {
		name  string
		value string
		file  bool
		want  bool
	}{
		{name: "key as a file", value: key, file: true, want: true},
		{name: "key as a variable", value: key, file: false, want: true},
		{name: "slack token as a variable", value: "xoxb-1234567890-0987654321-AbCdEfGhIj", file: false, want: true},
		{name: "vault token as a file", value: "hvs.CAESIJ4k2lmnopqrstuvwxyz012345", file: true, want: true},
		{name: "webhook url as a file", value: "https://hooks.example/services/T0/B0/abc", file: true, want: true},
		{name: "absolute path", value: "/etc/mrbacd/admin-key", file: true, want: false},
		{name: "path with a hash", value: "/run/secrets/3f2a9c1b7d4e8f6a0b5c2d9e1f7a3b4c", file: true, want: false},
		{name: "relative file", value: "admin.key", file: true, want: false},
		{name: "variable name", value: "MISTRAL_ADMIN_KEY", file: false, want: false},
		{name: "long variable name", value: "MRBACD_GATEWAY_CLIENT_REPORTING_APP_TOKEN", file: false, want: false},
		{name: "variable with a version", value: "SLACK_BOT_TOKEN_V2", file: false, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := looksLikeSecret(tt.value, tt.file); got != tt.want {
				t.Fatalf("looksLikeSecret(%q, file=%v) = %v, want %v", tt.value, tt.file, got, tt.want)
			}
		})
	}
	for _, field := range []string{"admin_key_file", "admin_key_env"} {
		_, err := Parse("m.yaml", []byte("mistral: {"+field+": "+key+"}\n"+minimalBody))
		ps, ok := err.(Problems)
		if !ok || len(ps) != 1 || ps[0].Field != "mistral."+field || ps[0].Line != 1 || strings.Contains(err.Error(), key) {
			t.Errorf("%s: %v", field, err)
		}
	}
	for _, c := range [][2]string{{key, ""}, {"", key}} {
		_, err := ResolveSecret(c[0], c[1])
		if err == nil || !strings.Contains(err.Error(), "looks like a secret") || strings.Contains(err.Error(), key) {
			t.Errorf("ResolveSecret(%q, %q): %v", c[0], c[1], err)
		}
	}
}
