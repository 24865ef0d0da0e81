package awssm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/storetest"
)

// faultTransport answers requests that match with an injected response
// instead of forwarding them to moto.
type faultTransport struct {
	base  http.RoundTripper
	mu    sync.Mutex
	match func(body []byte) bool
	fault func(r *http.Request) (*http.Response, error)
	times int // how many matching requests to fail; <0 for all
	seen  []string
}

func (f *faultTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	f.mu.Lock()
	f.seen = append(f.seen, r.Header.Get("X-Amz-Target")+" "+r.Header.Get("Authorization"))
	hit := f.fault != nil && f.times != 0 && (f.match == nil || f.match(body))
	if hit && f.times > 0 {
		f.times--
	}
	f.mu.Unlock()
	if hit {
		return f.fault(r)
	}
	return f.base.RoundTrip(r)
}

func awsError(status int, code, msg string) func(r *http.Request) (*http.Response, error) {
	return func(r *http.Request) (*http.Response, error) {
		b := fmt.Sprintf(`{"__type":%q,"Message":%q}`, code, msg)
		return &http.Response{StatusCode: status, Status: http.StatusText(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/x-amz-json-1.1"}, "X-Amzn-Errortype": {code}},
			Body:   io.NopCloser(strings.NewReader(b)), ContentLength: int64(len(b)), Request: r}, nil
	}
}

func newStore(t *testing.T, m *testenv.MotoServer, ft *faultTransport, logs *testenv.LogBuffer, mod func(*Options)) *Store {
	t.Helper()
	o := Options{Region: m.Region, Endpoint: m.Endpoint,
		Credentials: credentials.NewStaticCredentialsProvider(m.AccessKeyID, m.SecretAccessKey, "")}
	if ft != nil {
		o.HTTPClient = &http.Client{Transport: ft}
	}
	if logs != nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if mod != nil {
		mod(&o)
	}
	s, err := New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func rawClient(m *testenv.MotoServer) *secretsmanager.Client {
	return secretsmanager.NewFromConfig(aws.Config{Region: m.Region,
		Credentials: credentials.NewStaticCredentialsProvider(m.AccessKeyID, m.SecretAccessKey, "")},
		func(o *secretsmanager.Options) { o.BaseEndpoint = aws.String(m.Endpoint) })
}

func TestContract(t *testing.T) {
	m := testenv.Moto(t)
	raw := rawClient(m)
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		logs := &testenv.LogBuffer{}
		return storetest.Harness{
			Store: newStore(t, m, nil, logs, nil),
			Peek: func(t *testing.T, p string) string {
				out, err := raw.GetSecretValue(context.Background(), &secretsmanager.GetSecretValueInput{
					SecretId: aws.String(p), VersionStage: aws.String("AWSCURRENT")})
				if err != nil {
					t.Fatalf("peek: %v", err)
				}
				return aws.ToString(out.SecretString)
			},
			// moto does not enforce IAM here: AccessDenied is injected at the
			// HTTP layer for every request naming the secret.
			Denied: func(t *testing.T, p string) (secrets.Store, func()) {
				ft := &faultTransport{base: http.DefaultTransport, times: -1,
					match: func(b []byte) bool { return bytes.Contains(b, []byte(`"`+p+`"`)) },
					fault: awsError(400, "AccessDeniedException", "User: arn:aws:iam::123456789012:user/denied is not authorized to perform: secretsmanager:* on resource: "+p)}
				return newStore(t, m, ft, logs, nil), nil
			},
			Outage:        func(t *testing.T) { m.Pause() },
			Restore:       func(t *testing.T) { m.Resume() },
			OutageTimeout: time.Second,
			Logs:          logs.String,
			Crash:         func(t *testing.T, n int) secrets.Store { return crashingStore(t, m, n, logs) },
		}
	})
}

// crashingStore returns a store that dies after n requests changing a secret
// (see storetest.CrashTransport).
func crashingStore(t *testing.T, m *testenv.MotoServer, n int, logs *testenv.LogBuffer) *Store {
	return newStore(t, m, nil, logs, func(o *Options) {
		o.MaxAttempts = 1
		o.HTTPClient = &http.Client{Transport: storetest.CrashTransport(http.DefaultTransport, n, func(r *http.Request) bool {
			switch strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "secretsmanager.") {
			case "DescribeSecret", "GetSecretValue", "ListSecretVersionIds":
				return false
			}
			return true
		})}
	})
}

// TestRawTagsStayBounded: writers that crash after tagging their version,
// or between the put and the label move, and writers that lose the race,
// leave tags that later writes prune, so the secret stays far below AWS's
// 50 tags and readable throughout.
func TestRawTagsStayBounded(t *testing.T) {
	m := testenv.Moto(t)
	ctx := context.Background()
	s := newStore(t, m, nil, nil, nil)
	raw := rawClient(m)
	tg := secrets.Target{Path: "mrbacd-test/bounded", Format: secrets.FormatRaw}
	rec := func(i int) secrets.Record {
		return secrets.Record{APIKey: fmt.Sprintf("sk-bounded-%d", i), KeyID: fmt.Sprintf("k%d", i), KeyName: "n",
			RotationID: fmt.Sprintf("r%d", i), CreatedAt: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)}
	}
	cur, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec(0), Token: "r0"})
	if err != nil {
		t.Fatal(err)
	}
	maxTags := 0
	for round := 1; round <= 4; round++ {
		// Writers die after pruning, tagging, the put or the label move.
		for i := 0; i < 6; i++ {
			r := rec(round*100 + i)
			_, err := crashingStore(t, m, 1+i%3, nil).Write(ctx, secrets.WriteRequest{Target: tg, Record: r, IfVersion: cur, Token: r.RotationID})
			if !errors.Is(err, storetest.ErrCrashed) {
				t.Fatalf("crashing write err = %v", err)
			}
			got, err := s.Read(ctx, tg)
			switch {
			case err != nil:
				t.Fatalf("Read after a crashed write: %v", err)
			case got.Version == cur:
			case got.KeyID == r.KeyID && got.APIKey == r.APIKey: // it crashed after the label move
				cur = got.Version
			default:
				t.Fatalf("Read after a crashed write = %v %q", got.Record, got.Version)
			}
		}
		// Then three race, and one wins.
		recs := make([]secrets.Record, 3)
		for i := range recs {
			recs[i] = rec(round*100 + 50 + i)
		}
		cur = storetest.RaceWrites(ctx, t, fmt.Sprintf("round %d", round), s, tg, cur, recs)
		d, err := raw.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(tg.Path)})
		if err != nil {
			t.Fatal(err)
		}
		maxTags = max(maxTags, len(d.Tags))
	}
	// 6 flat tags, 4 per entry: current, previous, up to 3 pending others.
	if maxTags > 6+4*5 {
		t.Fatalf("the secret's tags grew to %d", maxTags)
	}
}

func TestFaultsAreClassified(t *testing.T) {
	m := testenv.Moto(t)
	ctx := context.Background()
	tg := secrets.Target{Path: "mrbacd-test/faults"}
	setup := newStore(t, m, nil, nil, nil)
	rec := secrets.Record{APIKey: "sk-faults-secret", KeyID: "k1", RotationID: "r1"}
	v1, err := setup.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec, Token: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	reset := func(r *http.Request) (*http.Response, error) { return nil, errors.New("connection reset by peer") }
	tests := []struct {
		name  string
		fault func(r *http.Request) (*http.Response, error)
		want  error
	}{
		{name: "throttled", fault: awsError(400, "ThrottlingException", "Rate exceeded"), want: secrets.ErrUnavailable},
		{name: "internal error", fault: awsError(500, "InternalServiceError", "internal"), want: secrets.ErrUnavailable},
		{name: "service unavailable", fault: awsError(503, "ServiceUnavailable", "unavailable"), want: secrets.ErrUnavailable},
		{name: "network", fault: reset, want: secrets.ErrUnavailable},
		{name: "access denied", fault: awsError(400, "AccessDeniedException", "not authorized"), want: secrets.ErrPermissionDenied},
		{name: "bad signature", fault: awsError(400, "UnrecognizedClientException", "The security token included in the request is invalid."), want: secrets.ErrPermissionDenied},
		{name: "not found", fault: awsError(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret."), want: secrets.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ft := &faultTransport{base: http.DefaultTransport, times: -1, fault: tc.fault}
			s := newStore(t, m, ft, nil, func(o *Options) { o.MaxAttempts = 1 })
			_, err := s.Read(ctx, tg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Read err = %v, want %v", err, tc.want)
			}
			_, err = s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec, IfVersion: v1, Token: "r2"})
			if !errors.Is(err, tc.want) && !(tc.want == secrets.ErrNotFound && err != nil) {
				t.Fatalf("Write err = %v, want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), rec.APIKey) {
				t.Fatalf("error holds the key")
			}
		})
	}
	// With the SDK's retries, one transient failure is invisible.
	t.Run("retried", func(t *testing.T) {
		ft := &faultTransport{base: http.DefaultTransport, times: 1, fault: awsError(500, "InternalServiceError", "internal")}
		s := newStore(t, m, ft, nil, nil)
		got, err := s.Read(ctx, tg)
		if err != nil || got.APIKey != rec.APIKey {
			t.Fatalf("Read after one 500 = %v, %v", got.Record, err)
		}
	})
}

func TestStoppedMoto(t *testing.T) {
	m := testenv.Moto(t)
	s := newStore(t, m, nil, nil, func(o *Options) { o.MaxAttempts = 1 })
	ctx := context.Background()
	tg := secrets.Target{Path: "mrbacd-test/stopped"}
	rec := secrets.Record{APIKey: "sk-stopped", KeyID: "k1", RotationID: "r1"}
	v1, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec, Token: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if _, err := s.Read(ctx, tg); !secrets.Retryable(err) {
		t.Fatalf("Read err = %v, want retryable", err)
	}
	if _, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: rec, IfVersion: v1, Token: "r2"}); !secrets.Retryable(err) {
		t.Fatalf("Write err = %v, want retryable", err)
	}
}

// TestStagesAndTokens checks the labels and request tokens AWS sees.
func TestStagesAndTokens(t *testing.T) {
	m := testenv.Moto(t)
	ctx := context.Background()
	s := newStore(t, m, nil, nil, func(o *Options) { o.KMSKeyID = "alias/mrbacd" })
	raw := rawClient(m)
	tg := secrets.Target{Path: "mrbacd-test/stages", Format: secrets.FormatRaw}
	token1 := "0123456789abcdef0123456789abcdef-rot1" // 32..64 chars: used as is
	r1 := secrets.Record{APIKey: "sk-1", KeyID: "k1", RotationID: token1}
	v1, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r1, Token: token1})
	if err != nil || string(v1) != token1 {
		t.Fatalf("first write = %q, %v; want version id = token", v1, err)
	}
	r2 := secrets.Record{APIKey: "sk-2", KeyID: "k2", RotationID: "rot-2"}
	v2, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r2, IfVersion: v1, Token: "rot-2"})
	if err != nil || v2 != secrets.Version(*versionID("rot-2")) {
		t.Fatalf("second write = %q, %v", v2, err)
	}
	d, err := raw.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(tg.Path)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(d.KmsKeyId) != "alias/mrbacd" {
		t.Errorf("KmsKeyId = %q", aws.ToString(d.KmsKeyId))
	}
	want := map[string]string{string(v1): "AWSPREVIOUS", string(v2): "AWSCURRENT"}
	for id, label := range want {
		if st := d.VersionIdsToStages[id]; len(st) != 1 || st[0] != label {
			t.Errorf("version %s stages = %v, want [%s]", id, st, label)
		}
	}
	tags := map[string]string{}
	for _, tg := range d.Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if tags["managed-by"] != "mrbacd" || tags["key_id"] != "k2" || tags["version"] != string(v2) {
		t.Errorf("tags = %v", tags)
	}
	// A retried put whose label move failed is completed by the retry.
	r3 := secrets.Record{APIKey: "sk-3", KeyID: "k3", RotationID: "rot-3"}
	if _, err := raw.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String(tg.Path),
		SecretString: aws.String("sk-3"), ClientRequestToken: versionID("rot-3"), VersionStages: []string{"AWSPENDING"}}); err != nil {
		t.Fatal(err)
	}
	v3, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r3, IfVersion: v2, Token: "rot-3"})
	if err != nil || v3 != secrets.Version(*versionID("rot-3")) {
		t.Fatalf("completing write = %q, %v", v3, err)
	}
	got, err := s.Read(ctx, tg)
	if err != nil || got.APIKey != "sk-3" || got.KeyID != "k3" || got.Version != v3 {
		t.Fatalf("Read = %v %q, %v", got.Record, got.Version, err)
	}
	// The same token with another value is refused, not silently accepted.
	r4 := secrets.Record{APIKey: "sk-4", KeyID: "k4", RotationID: "rot-2"}
	if _, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r4, IfVersion: v3, Token: "rot-2"}); !errors.Is(err, secrets.ErrConflict) {
		t.Fatalf("reused token err = %v, want ErrConflict", err)
	}
}

func TestAssumeRole(t *testing.T) {
	m := testenv.Moto(t)
	ft := &faultTransport{base: http.DefaultTransport}
	s := newStore(t, m, ft, nil, func(o *Options) {
		o.RoleARN = "arn:aws:iam::123456789012:role/mrbacd"
		o.ExternalID = "ext-1"
	})
	ctx := context.Background()
	tg := secrets.Target{Path: "mrbacd-test/assumed"}
	if _, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: secrets.Record{APIKey: "sk-a", KeyID: "k"}, Token: "t"}); err != nil {
		t.Fatal(err)
	}
	ft.mu.Lock()
	defer ft.mu.Unlock()
	sawSTS, sawAssumed := false, false
	for _, s := range ft.seen {
		if strings.HasPrefix(s, " ") && strings.Contains(s, "Credential=testing/") {
			sawSTS = true // STS (query protocol, no X-Amz-Target) signed with the base keys
		}
		if strings.HasPrefix(s, "secretsmanager.") && !strings.Contains(s, "Credential=testing/") {
			sawAssumed = true
		}
	}
	if !sawSTS || !sawAssumed {
		t.Fatalf("assume role not used: requests %q", ft.seen)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{name: "bad endpoint", o: Options{Region: "eu-west-1", Endpoint: "localhost:5000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(context.Background(), tc.o); err == nil {
				t.Fatalf("New succeeded")
			}
		})
	}
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	if _, err := New(context.Background(), Options{}); err == nil || !strings.Contains(err.Error(), "region") {
		t.Fatalf("New without region err = %v", err)
	}
	if _, err := (&Store{}).Read(context.Background(), secrets.Target{Path: "bad path!"}); err == nil {
		t.Fatalf("Read(bad path) succeeded")
	}
}

// TestForeignAndDeletedSecrets: a secret mrbacd did not write is readable;
// one scheduled for deletion is not found and cannot be written.
func TestForeignAndDeletedSecrets(t *testing.T) {
	m := testenv.Moto(t)
	ctx := context.Background()
	raw := rawClient(m)
	s := newStore(t, m, nil, nil, nil)
	if _, err := raw.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("team/foreign"), SecretString: aws.String("sk-foreign")}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(ctx, secrets.Target{Path: "team/foreign", Format: secrets.FormatRaw})
	if err != nil || got.APIKey != "sk-foreign" || got.Version == "" {
		t.Fatalf("Read(foreign raw) = %v %q, %v", got.Record, got.Version, err)
	}
	if _, err := raw.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String("team/foreign"), RecoveryWindowInDays: aws.Int64(7)}); err != nil {
		t.Fatal(err)
	}
	tg := secrets.Target{Path: "team/foreign", Format: secrets.FormatRaw}
	if _, err := s.Read(ctx, tg); !errors.Is(err, secrets.ErrNotFound) {
		t.Fatalf("Read(deleted) err = %v, want ErrNotFound", err)
	}
	if d, err := s.Describe(ctx, tg); err != nil || d.Exists {
		t.Fatalf("Describe(deleted) = %+v, %v", d, err)
	}
	_, err = s.Write(ctx, secrets.WriteRequest{Target: tg, Record: secrets.Record{APIKey: "sk-new", KeyID: "k"}, Token: "t"})
	if !errors.Is(err, secrets.ErrConflict) || !strings.Contains(err.Error(), "scheduled for deletion") {
		t.Fatalf("Write(deleted) err = %v, want a conflict explaining the deletion", err)
	}
}

// TestLegacyRawRecords: raw records of older mrbacd versions (flat tags
// naming the version, written after the value) still read; one whose tag
// update a crash cut off reads as unavailable, and the retry of that write
// completes it.
func TestLegacyRawRecords(t *testing.T) {
	m := testenv.Moto(t)
	ctx := context.Background()
	raw := rawClient(m)
	s := newStore(t, m, nil, nil, nil)
	tg := secrets.Target{Path: "mrbacd-test/legacy", Format: secrets.FormatRaw}
	r1 := secrets.Record{APIKey: "sk-legacy-1", KeyID: "k1", KeyName: "n", RotationID: "r1", CreatedAt: time.Now().UTC().Truncate(time.Second)}
	out, err := raw.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(tg.Path), SecretString: aws.String(r1.APIKey)})
	if err != nil {
		t.Fatal(err)
	}
	v1 := aws.ToString(out.VersionId)
	legacyTags := func(r secrets.Record, ver string) []types.Tag {
		md := r.Metadata()
		md["version"] = ver
		return toTags(md)
	}
	if _, err := raw.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: aws.String(tg.Path), Tags: legacyTags(r1, v1)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(ctx, tg)
	if err != nil || got.KeyID != "k1" || got.APIKey != r1.APIKey || string(got.Version) != v1 {
		t.Fatalf("Read(legacy) = %v %q, %v", got.Record, got.Version, err)
	}
	// An older writer's put and label move, then the crash before its tags.
	r2 := secrets.Record{APIKey: "sk-legacy-2", KeyID: "k2", KeyName: "n", RotationID: "r2", CreatedAt: time.Now().UTC().Truncate(time.Second)}
	v2 := versionID("r2")
	if _, err := raw.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String(tg.Path),
		SecretString: aws.String(r2.APIKey), ClientRequestToken: v2, VersionStages: []string{"AWSPENDING"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{SecretId: aws.String(tg.Path),
		VersionStage: aws.String("AWSCURRENT"), MoveToVersionId: v2, RemoveFromVersionId: aws.String(v1)}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Read(ctx, tg)
	if !secrets.Retryable(err) || strings.Contains(err.Error(), r2.APIKey) {
		t.Fatalf("Read(cut-off legacy write) err = %v, want retryable", err)
	}
	v, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r2, IfVersion: secrets.Version(v1), Token: "r2"})
	if err != nil || v != secrets.Version(*v2) {
		t.Fatalf("retried Write = %q, %v", v, err)
	}
	got, err = s.Read(ctx, tg)
	if err != nil || got.KeyID != "k2" || got.APIKey != r2.APIKey || !got.CreatedAt.Equal(r2.CreatedAt) {
		t.Fatalf("Read after the retry = %v, %v", got.Record, err)
	}
	d, err := s.Describe(ctx, tg)
	if err != nil || d.Metadata["key_id"] != "k2" || d.Current != v {
		t.Fatalf("Describe = %+v, %v", d, err)
	}
}
