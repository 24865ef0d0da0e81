package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/secrets"
)

// readSSE reads a whole event stream, returning the data payloads.
func readSSE(t *testing.T, resp *http.Response) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, d)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *testEnv) open(ctx context.Context, roleName, body string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", e.url+pathChat, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens[roleName])
	return testHTTP.Do(req)
}

// TestStreamingSettlement: a streamed answer arrives as events and the
// reservation settles to the usage of the last chunk, in memory and in the
// journal.
func TestStreamingSettlement(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	resp, err := e.open(ctx, "developer", chatBody("codestral-latest", 150, true, strings.Repeat("stream me ", 30)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := readSSE(t, resp)
	if len(events) < 4 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events %q", events)
	}
	var last struct {
		Usage *usage `json:"usage"`
	}
	if err := json.Unmarshal([]byte(events[len(events)-2]), &last); err != nil || last.Usage == nil {
		t.Fatalf("last chunk without usage: %s", events[len(events)-2])
	}
	p := e.principal("developer")
	settled, reserved, usd, _ := p.ledger.snapshot()
	if settled != last.Usage.total() || reserved != 0 {
		t.Fatalf("ledger settled %d reserved %d, want %d and 0", settled, reserved, last.Usage.total())
	}
	want := cost(Price{0.30, 0.90}, last.Usage.PromptTokens, last.Usage.CompletionTokens)
	if d := usd - want; d > 1e-12 || d < -1e-12 {
		t.Fatalf("usd %v, want %v", usd, want)
	}
	if err := e.gw.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	tok, _, err := e.db.Usage(ctx, usageSubject(p.name), dayWindow(dayOf(time.Now())))
	if err != nil || tok != last.Usage.total() {
		t.Fatalf("journal has %d tokens (%v), want %d", tok, err, last.Usage.total())
	}
	if got := e.counter(e.gw.m.tokens, p.name, testWorkspace); got != float64(last.Usage.total()) {
		t.Fatalf("tokens_total %v", got)
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var samples uint64
	for _, mf := range mfs {
		if mf.GetName() != "mrbacd_gateway_overhead_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && l.GetValue() == "chat_stream" {
					samples += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	if samples != 1 {
		t.Fatalf("overhead histogram has %d chat_stream samples, want 1", samples)
	}
}

// countingStore counts reads of a real store.
type countingStore struct {
	KeyReader
	reads atomic.Int64
}

func (c *countingStore) Read(ctx context.Context, t secrets.Target) (secrets.Versioned, error) {
	c.reads.Add(1)
	return c.KeyReader.Read(ctx, t)
}

// TestRevokedKeyWithoutRotation: a key revoked on the platform while the
// store still holds it gives the upstream 401 (in Mistral's shape), and a
// burst of such requests re-reads the store about once a second, not once
// per request.
func TestRevokedKeyWithoutRotation(t *testing.T) {
	var cs *countingStore
	e := newEnv(t, withOptions(func(o *Options) {
		o.KeyPollInterval = time.Hour
		up := o.Upstreams[testWorkspace]
		cs = &countingStore{KeyReader: up.Store}
		up.Store = cs
		o.Upstreams = map[string]Upstream{testWorkspace: up}
	}))
	if err := e.admin.DeleteKey(context.Background(), e.keyID); err != nil {
		t.Fatal(err)
	}
	before := cs.reads.Load()
	for i := 0; i < 20; i++ {
		resp, b, err := e.do(context.Background(), "analyst", "POST", pathChat, chatBody("mistral-small-latest", 5, false, "x"))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 401 || !json.Valid(b) {
			t.Fatalf("status %d body %s, want the upstream 401", resp.StatusCode, b)
		}
	}
	if n := cs.reads.Load() - before; n < 1 || n > 2 {
		t.Fatalf("%d store reads for 20 upstream 401s, want 1 or 2", n)
	}
}

// abortingTransport relays to a real transport but makes the first read of
// an answer body abort the gateway's handler, as a panic would.
type abortingTransport struct{ http.RoundTripper }

func (t abortingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.RoundTripper.RoundTrip(r)
	if err == nil {
		resp.Body = abortingBody{resp.Body}
	}
	return resp, err
}

type abortingBody struct{ io.ReadCloser }

func (abortingBody) Read([]byte) (int, error) { panic(http.ErrAbortHandler) }

// TestPanicChargesReservation: a handler that panics after the upstream
// accepted the request (net/http recovers it and drops the connection)
// charges the whole reservation: the upstream bills the request and its
// usage is unknown. The client sees the dropped connection only after the
// handler's deferred charge ran, so no polling is needed.
func TestPanicChargesReservation(t *testing.T) {
	tests := []struct {
		name, path, body string
		out              int64 // max_tokens reserved besides the body's bytes
	}{
		{name: "plain", path: pathChat, body: chatBody("codestral-latest", 100, false, "hi"), out: 100},
		{name: "stream", path: pathChat, body: chatBody("codestral-latest", 100, true, "hi"), out: 100},
		{name: "embeddings", path: pathEmbeddings, body: `{"model":"mistral-embed","input":["a"]}`, out: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, withOptions(func(o *Options) { o.Transport = abortingTransport{NewTransport()} }))
			if _, _, err := e.do(context.Background(), "developer", "POST", tc.path, tc.body); err == nil {
				t.Fatal("request succeeded; want the connection dropped by the aborted handler")
			}
			want := int64(len(tc.body)) + tc.out
			if settled, reserved, usd, _ := e.principal("developer").ledger.snapshot(); settled != want || reserved != 0 || usd <= 0 {
				t.Fatalf("after the abort: settled %d reserved %d usd %v, want the whole reservation %d charged", settled, reserved, usd, want)
			}
		})
	}
}
