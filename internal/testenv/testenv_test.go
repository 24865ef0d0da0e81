package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/slack-go/slack"
)

func TestFreePort(t *testing.T) {
	p := FreePort(t)
	if p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d", p)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("port %d not free: %v", p, err)
	}
	l.Close()
}

func TestVault(t *testing.T) {
	v := Vault(t)
	ctx := context.Background()
	if !strings.HasPrefix(v.Addr, "http://127.0.0.1:") {
		t.Fatalf("Addr = %q", v.Addr)
	}
	kv := v.Client.KVv2("secret")
	if _, err := kv.Put(ctx, "smoke", map[string]any{"v": "one"}); err != nil {
		t.Fatalf("put: %v", err)
	}
	s, err := kv.Get(ctx, "smoke")
	if err != nil || s.Data["v"] != "one" || s.VersionMetadata.Version != 1 {
		t.Fatalf("get = %+v, %v", s, err)
	}

	// A token with a policy on one path only.
	v.WritePolicy(t, "smoke-read", `path "secret/data/smoke" { capabilities = ["read"] }`)
	tok := v.Token(t, time.Minute, "smoke-read")
	limited := v.NewClient(t, tok).KVv2("secret")
	if _, err := limited.Get(ctx, "smoke"); err != nil {
		t.Fatalf("limited read: %v", err)
	}
	if _, err := limited.Put(ctx, "smoke", map[string]any{"v": "two"}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("limited write err = %v, want 403", err)
	}

	// Seal and unseal keep the data.
	v.Seal(t)
	if _, err := kv.Get(ctx, "smoke"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("sealed get err = %v, want 503", err)
	}
	v.Unseal(t)
	if s, err := kv.Get(ctx, "smoke"); err != nil || s.Data["v"] != "one" {
		t.Fatalf("get after unseal = %+v, %v", s, err)
	}

	// Pause hangs requests, Resume answers again.
	v.Pause()
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = kv.Get(pctx, "smoke")
	cancel()
	if err == nil {
		t.Fatalf("get while paused succeeded")
	}
	v.Resume()
	if _, err := kv.Get(ctx, "smoke"); err != nil {
		t.Fatalf("get after resume: %v", err)
	}

	v.Stop()
	if _, err := kv.Get(ctx, "smoke"); err == nil {
		t.Fatalf("get after stop succeeded")
	}
	v.Restart(t)
	if _, err := v.Client.KVv2("secret").Put(ctx, "smoke", map[string]any{"v": "x"}); err != nil {
		t.Fatalf("put after restart: %v", err)
	}
}

func TestMoto(t *testing.T) {
	m := Moto(t)
	ctx := context.Background()
	sm := secretsmanager.NewFromConfig(aws.Config{
		Region:      m.Region,
		Credentials: credentials.NewStaticCredentialsProvider(m.AccessKeyID, m.SecretAccessKey, ""),
	}, func(o *secretsmanager.Options) { o.BaseEndpoint = aws.String(m.Endpoint) })
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("smoke"), SecretString: aws.String("one")}); err != nil {
		t.Fatalf("create: %v", err)
	}
	out, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("smoke"), VersionStage: aws.String("AWSCURRENT")})
	if err != nil || aws.ToString(out.SecretString) != "one" {
		t.Fatalf("get = %v, %v", out, err)
	}
	m.Pause()
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = sm.GetSecretValue(pctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("smoke")})
	cancel()
	if err == nil {
		t.Fatalf("get while paused succeeded")
	}
	m.Resume()
	if _, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("smoke"), VersionStage: aws.String("AWSCURRENT")}); err != nil {
		t.Fatalf("get after resume: %v", err)
	}
	m.Reset(t)
	if _, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("smoke")}); err == nil {
		t.Fatalf("secret survived reset")
	}
	m.Stop()
	if _, err := sm.ListSecrets(ctx, &secretsmanager.ListSecretsInput{}); err == nil {
		t.Fatalf("list after stop succeeded")
	}
}

func TestSlack(t *testing.T) {
	s := Slack(t)
	ctx := context.Background()
	api := slack.New("xoxb-test-token", slack.OptionAPIURL(s.APIURL))

	tests := []struct {
		name   string
		inject func()
		check  func(t *testing.T, err error)
	}{
		{name: "ok", inject: func() {}, check: func(t *testing.T, err error) {
			if err != nil {
				t.Fatalf("post: %v", err)
			}
		}},
		{name: "429 with retry-after", inject: func() { s.RateLimit(1, "7") }, check: func(t *testing.T, err error) {
			var rl *slack.RateLimitedError
			if !errors.As(err, &rl) || rl.RetryAfter != 7*time.Second {
				t.Fatalf("err = %v, want rate limited 7s", err)
			}
		}},
		{name: "500", inject: func() { s.FailNext(1, http.StatusInternalServerError) }, check: func(t *testing.T, err error) {
			var se slack.StatusCodeError
			if !errors.As(err, &se) || se.Code != 500 {
				t.Fatalf("err = %v, want status 500", err)
			}
		}},
		{name: "slack error", inject: func() { s.InjectFaults(SlackFault{SlackError: "channel_not_found"}) }, check: func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "channel_not_found") {
				t.Fatalf("err = %v, want channel_not_found", err)
			}
		}},
		{name: "outage", inject: func() { s.SetDown(true) }, check: func(t *testing.T, err error) {
			s.SetDown(false)
			if err == nil {
				t.Fatalf("post during outage succeeded")
			}
		}},
	}
	accepted := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.inject()
			_, _, err := api.PostMessageContext(ctx, "#alerts", slack.MsgOptionText("hello "+tc.name, false))
			tc.check(t, err)
			if err == nil {
				accepted++
			}
		})
	}
	msgs := s.Messages()
	if len(msgs) != accepted || msgs[0].Channel != "#alerts" || msgs[0].Text != "hello ok" || msgs[0].Token != "xoxb-test-token" {
		t.Fatalf("messages = %+v, want %d accepted", msgs, accepted)
	}
	if got := s.Attempts(); got != len(tests) {
		t.Fatalf("attempts = %d, want %d", got, len(tests))
	}
	// Block Kit arrives as raw JSON.
	_, _, err := api.PostMessageContext(ctx, "#alerts", slack.MsgOptionBlocks(slack.NewSectionBlock(slack.NewTextBlockObject("mrkdwn", "*hi*", false, false), nil, nil)), slack.MsgOptionText("hi", false))
	if err != nil {
		t.Fatal(err)
	}
	got := s.WaitForMessages(t, accepted+1, time.Second)
	if !strings.Contains(got[len(got)-1].Blocks, "*hi*") {
		t.Fatalf("blocks = %q", got[len(got)-1].Blocks)
	}
	// Incoming webhook.
	if err := slack.PostWebhookContext(ctx, s.WebhookURL, &slack.WebhookMessage{Text: "via webhook"}); err != nil {
		t.Fatalf("webhook: %v", err)
	}
	if wh := s.WebhookMessages(); len(wh) != 1 || !strings.Contains(string(wh[0]), "via webhook") {
		t.Fatalf("webhooks = %s", wh)
	}
	if _, err := api.AuthTestContext(ctx); err != nil {
		t.Fatalf("auth.test: %v", err)
	}
	s.Stop()
	if _, _, err := api.PostMessageContext(ctx, "#alerts", slack.MsgOptionText("x", false)); err == nil {
		t.Fatalf("post after stop succeeded")
	}
}

func TestVaultTLS(t *testing.T) {
	v := VaultTLS(t)
	if !strings.HasPrefix(v.Addr, "https://127.0.0.1:") || v.CACert == "" {
		t.Fatalf("Addr = %q CACert = %q", v.Addr, v.CACert)
	}
	if _, err := v.NewClient(t, v.RootToken).KVv2("secret").Put(context.Background(), "tls", map[string]any{"v": "1"}); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
}

// fatalRecorder captures a Fatalf instead of failing the real test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fatalRecorder) Cleanup(func()) {}

// fatalOf runs fn with a recorder and returns its Fatalf message ("" if none).
func fatalOf(t *testing.T, fn func(tb testing.TB)) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r.msg
}

// TestMissingToolsFailLoudly: a missing tool is a failure that says how to
// get it, never a skip.
func TestMissingToolsFailLoudly(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		run  func(tb testing.TB)
		want string
	}{
		{name: "vault binary", env: map[string]string{"MRBACD_VAULT_BIN": "/nonexistent/vault"},
			run: func(tb testing.TB) { VaultBinary(tb) }, want: "scripts/ensure-vault.sh"},
		{name: "moto_server", env: map[string]string{"PATH": t.TempDir()},
			run: func(tb testing.TB) { Moto(tb) }, want: "pip install"},
		{name: "postgres", env: map[string]string{PostgresAdminEnv: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/test?connect_timeout=2", FreePort(t))},
			run: func(tb testing.TB) { Postgres(tb) }, want: "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			msg := fatalOf(t, tc.run)
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("failure message %q does not say how to get the tool (%q)", msg, tc.want)
			}
		})
	}
}

func TestUntilAndWaitFor(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	WaitFor(t, 10*time.Second, "three increments", func() bool { return n.Load() == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if Until(ctx, func() bool { return false }) {
		t.Fatal("Until reported a condition that never holds")
	}
	msg := fatalOf(t, func(tb testing.TB) { WaitFor(tb, 10*time.Millisecond, "nothing", func() bool { return false }) })
	if !strings.Contains(msg, "timed out after 10ms waiting for nothing") {
		t.Fatalf("WaitFor failed with %q", msg)
	}
}
