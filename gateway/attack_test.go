package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// The attack suite: what a hostile client tries, against the real sandbox
// (which bills a request when it accepts it, whether the client stays or
// not), asserting what the upstream received and billed besides what the
// client was answered.

// upstreamTap sits in front of the sandbox: it records what the upstream
// received and models generation time (the sandbox has billed by the time
// its answer is written; the tap delays that answer by firstDelay and each
// further streamed chunk by chunkDelay).
type upstreamTap struct {
	h          http.Handler
	firstDelay time.Duration
	chunkDelay time.Duration
	// gate, when set, holds every chat answer (after billing) until closed.
	gate chan struct{}
	// pad, when set, adds an SSE comment line of that many bytes before
	// each streamed chunk (a long answer, for clients that stop reading).
	pad int

	mu     sync.Mutex
	bodies []tapped
}

type tapped struct {
	path string
	body []byte
}

func (u *upstreamTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	u.mu.Lock()
	u.bodies = append(u.bodies, tapped{r.URL.Path, b})
	u.mu.Unlock()
	if r.URL.Path == pathChat || r.URL.Path == pathEmbeddings {
		w = &pacedWriter{ResponseWriter: w, u: u}
	}
	u.h.ServeHTTP(w, r)
}

// received returns what the upstream received on path.
func (u *upstreamTap) received(path string) [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out [][]byte
	for _, t := range u.bodies {
		if t.path == path {
			out = append(out, t.body)
		}
	}
	return out
}

type pacedWriter struct {
	http.ResponseWriter
	u       *upstreamTap
	started bool
}

func (p *pacedWriter) WriteHeader(code int) {
	if !p.started {
		p.started = true
		if p.u.gate != nil {
			<-p.u.gate
		}
		// sleep: the upstream's generation time, the request is billed already
		time.Sleep(p.u.firstDelay)
	}
	p.ResponseWriter.WriteHeader(code)
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	if !p.started {
		p.WriteHeader(http.StatusOK)
	}
	return p.ResponseWriter.Write(b)
}

func (p *pacedWriter) Flush() {
	if p.u.pad > 0 && strings.HasPrefix(p.Header().Get("Content-Type"), "text/event-stream") {
		p.ResponseWriter.Write([]byte(": " + strings.Repeat("x", p.u.pad) + "\n\n"))
	}
	// sleep: the upstream's pace between streamed chunks
	time.Sleep(p.u.chunkDelay)
	p.ResponseWriter.(http.Flusher).Flush()
}

func withTap(u *upstreamTap) envOption {
	return withHandler(func(h http.Handler) http.Handler { u.h = h; return u })
}

// billed is what the sandbox billed the test workspace this month (prompt
// plus completion tokens).
func (e *testEnv) billed() int64 {
	var n int64
	for _, u := range e.sb.WorkspaceUsage(e.sb.Workspaces()[0].UUID, e.sb.Now().UTC().Format("2006-01")) {
		n += u.PromptTokens + u.CompletionTokens
	}
	return n
}

// eventually waits for cond, checking it every few milliseconds.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, 20*time.Second, what, cond)
}

// waitReceived waits until the upstream received n chat requests.
func waitReceived(t testing.TB, tap *upstreamTap, n int) {
	t.Helper()
	eventually(t, "the upstream to receive the request", func() bool { return len(tap.received(pathChat)) >= n })
}

// settledAll waits until the client of role has nothing reserved and returns
// its settled tokens and USD of the day. Requests are counted in flight
// from their authentication only for roles with a max_concurrent: a test
// starting a request asynchronously waits for it (waitReceived) first.
func (e *testEnv) settledAll(t testing.TB, role string) (int64, float64) {
	t.Helper()
	p := e.principal(role)
	var tok int64
	var usd float64
	eventually(t, role+"'s reservations to settle", func() bool {
		s, res, u, _ := p.ledger.snapshot()
		tok, usd = s, u
		return res == 0 && p.ledger.inflight.Load() == 0
	})
	return tok, usd
}

func (e *testEnv) hangups(outcome string) float64 { return e.counter(e.gw.m.hangups, outcome) }

// hungUp waits until n requests are counted as hung up, whatever their
// outcome: the gateway counts a hang-up after it settles the request, so a
// test that waited for the settling (settledAll) waits for this too.
func (e *testEnv) hungUp(t testing.TB, n float64) {
	t.Helper()
	eventually(t, "the hang-up to be counted", func() bool {
		return e.hangups("settled")+e.hangups("charged_reservation") >= n
	})
}

// TestAttackHangUpMidStream: a client that reads the first chunk of a
// stream and hangs up pays what the upstream billed for the whole answer:
// the gateway keeps reading the stream to its usage chunk.
func TestAttackHangUpMidStream(t *testing.T) {
	tap := &upstreamTap{chunkDelay: 40 * time.Millisecond}
	e := newEnv(t, withTap(tap))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := e.open(ctx, "developer", chatBody("codestral-latest", 150, true, strings.Repeat("tell me a long story ", 20)))
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: {") {
		t.Fatalf("first chunk %q %v", line, err)
	}
	cancel()
	resp.Body.Close()
	tokens, usd := e.settledAll(t, "developer")
	billed := e.billed()
	if billed == 0 || tokens != billed {
		t.Fatalf("gateway counted %d tokens, upstream billed %d", tokens, billed)
	}
	if usd <= 0 {
		t.Fatalf("usd %v", usd)
	}
	e.hungUp(t, 1)
	if n := e.hangups("settled"); n != 1 {
		t.Fatalf("hangups_total{settled} = %v, want 1", n)
	}
	if err := e.gw.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if jt, _, err := e.db.Usage(context.Background(), usageSubject("developer-app"), dayWindow(dayOf(time.Now()))); err != nil || jt != billed {
		t.Fatalf("journal has %d tokens (%v), upstream billed %d", jt, err, billed)
	}
}

// TestAttackHangUpBeforePlainAnswer: a client that gives up before a plain
// answer arrives pays what the upstream billed: the upstream call is not
// cancelled and the answer's usage is read.
func TestAttackHangUpBeforePlainAnswer(t *testing.T) {
	tap := &upstreamTap{firstDelay: 300 * time.Millisecond}
	e := newEnv(t, withTap(tap))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := e.do(ctx, "developer", "POST", pathChat, chatBody("codestral-latest", 100, false, "slow")); err == nil {
		t.Fatal("the client's deadline did not cut the request")
	}
	waitReceived(t, tap, 1)
	tokens, _ := e.settledAll(t, "developer")
	if billed := e.billed(); billed == 0 || tokens != billed {
		t.Fatalf("gateway counted %d tokens, upstream billed %d", tokens, billed)
	}
	e.hungUp(t, 1)
	if n := e.hangups("settled"); n != 1 {
		t.Fatalf("hangups_total{settled} = %v, want 1", n)
	}
}

// TestAttackHangUpsUnderBudget: the numbers. Clients that hang up
// cannot spend past a daily budget: ten hang-ups against an 800-token
// budget move the counters by what the upstream billed, and admission
// stops at the budget.
func TestAttackHangUpsUnderBudget(t *testing.T) {
	tap := &upstreamTap{firstDelay: 100 * time.Millisecond, chunkDelay: 20 * time.Millisecond}
	e := newEnv(t, withTap(tap), withRoles(map[string]Role{
		// max_concurrent only makes requests count in flight (settledAll).
		"budget": {Models: []string{"mistral-small-latest"}, MaxTokensPerRequest: 100, DailyTokens: 800, MaxConcurrent: 1000},
	}))
	body := chatBody("mistral-small-latest", 100, true, strings.Repeat("words ", 30))
	admitted := 0
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		resp, b, err := e.do(ctx, "budget", "POST", pathChat, body)
		cancel()
		if err == nil && resp.StatusCode == http.StatusTooManyRequests {
			continue
		}
		if err == nil {
			t.Fatalf("request %d answered %d before the hang-up: %s", i, resp.StatusCode, b)
		}
		admitted++
		e.settledAll(t, "budget") // sequential hang-ups, as in the issue
	}
	tokens, _ := e.settledAll(t, "budget")
	billed := e.billed()
	if tokens < billed || tokens > 800 || billed == 0 {
		t.Fatalf("gateway counted %d tokens for %d admitted hang-ups, upstream billed %d, budget 800", tokens, admitted, billed)
	}
	if admitted >= 10 {
		t.Fatalf("all 10 hang-ups admitted under an 800-token budget (%d tokens billed)", billed)
	}
}

// TestAttackConcurrentHangUps: 200 concurrent clients hang up at random
// (before the answer, mid-stream, or not at all) against an upstream that
// bills on acceptance, until the budget refuses them. What the gateway
// counted is at least what the upstream billed and never more than the
// daily budget (the package doc's promise for one instance), in memory and
// in the journal.
func TestAttackConcurrentHangUps(t *testing.T) {
	const budget = 15000
	tap := &upstreamTap{firstDelay: 15 * time.Millisecond, chunkDelay: 5 * time.Millisecond}
	e := newEnv(t, withTap(tap), withRoles(map[string]Role{
		"crowd": {Models: []string{"mistral-small-latest"}, MaxTokensPerRequest: 100, DailyTokens: budget, MaxConcurrent: 1000},
	}))
	var refused, answered, hungUp atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < 200; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for i := 0; i < 6; i++ {
				stream := rng.IntN(2) == 0
				body := chatBody("mistral-small-latest", 20+rng.IntN(81), stream, strings.Repeat("x", 10+rng.IntN(300)))
				stay := 30 * time.Second // a third stay, the others hang up at a random point
				if rng.IntN(3) > 0 {
					stay = time.Duration(5+rng.IntN(100)) * time.Millisecond
				}
				ctx, cancel := context.WithTimeout(context.Background(), stay)
				resp, _, err := e.do(ctx, "crowd", "POST", pathChat, body)
				cancel()
				switch {
				case err != nil:
					hungUp.Add(1)
				case resp.StatusCode == http.StatusTooManyRequests:
					refused.Add(1)
				case resp.StatusCode == http.StatusOK:
					answered.Add(1)
				default:
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	tokens, _ := e.settledAll(t, "crowd")
	billed := e.billed()
	t.Logf("hung up %d, answered %d, refused %d; counted %d tokens, upstream billed %d, budget %d",
		hungUp.Load(), answered.Load(), refused.Load(), tokens, billed, budget)
	if hungUp.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("the load did not exercise both hang-ups and the budget")
	}
	if tokens < billed {
		t.Fatalf("gateway counted %d tokens, less than the %d the upstream billed", tokens, billed)
	}
	if tokens > budget {
		t.Fatalf("gateway counted %d tokens, over the daily budget of %d", tokens, budget)
	}
	if err := e.gw.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if jt, _, err := e.db.Usage(context.Background(), usageSubject("crowd-app"), dayWindow(dayOf(time.Now()))); err != nil || jt != tokens {
		t.Fatalf("journal has %d tokens (%v), ledger %d", jt, err, tokens)
	}
}

// TestAttackNCompletions: n multiplies the output; max_tokens_per_request
// bounds n × max_tokens before anything reaches the upstream, and what is
// forwarded is counted as the upstream bills it (n completions).
func TestAttackNCompletions(t *testing.T) {
	tap := &upstreamTap{}
	e := newEnv(t, withTap(tap)) // analyst: max_tokens_per_request 50
	msgs := `"messages":[{"role":"user","content":"` + strings.Repeat("count to a hundred ", 10) + `"}]`
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantMsg    string
		// forwarded: the upstream must receive this n and max_tokens.
		forwarded      bool
		wantN, wantMax int
	}{
		{name: "n 10 under a cap of 50", body: `{"model":"mistral-small-latest","n":10,"max_tokens":50,` + msgs + `}`, wantStatus: 403, wantMsg: "n × max_tokens (10 × 50) exceeds the role's max_tokens_per_request of 50", forwarded: false, wantN: 0, wantMax: 0},
		{name: "n 2 × 25 fits", body: `{"model":"mistral-small-latest","n":2,"max_tokens":25,` + msgs + `}`, wantStatus: 200, wantMsg: "", forwarded: true, wantN: 2, wantMax: 25},
		{name: "n without max_tokens gets the cap divided", body: `{"model":"mistral-small-latest","n":10,` + msgs + `}`, wantStatus: 200, wantMsg: "", forwarded: true, wantN: 10, wantMax: 5},
		{name: "n over the cap without max_tokens", body: `{"model":"mistral-small-latest","n":51,` + msgs + `}`, wantStatus: 403, wantMsg: "n of 51 exceeds the role's max_tokens_per_request of 50", forwarded: false, wantN: 0, wantMax: 0},
		{name: "n zero", body: `{"model":"mistral-small-latest","n":0,"max_tokens":5,` + msgs + `}`, wantStatus: 400, wantMsg: "n must be an integer of at least 1", forwarded: false, wantN: 0, wantMax: 0},
		{name: "N in capitals", body: `{"model":"mistral-small-latest","N":10,"max_tokens":50,` + msgs + `}`, wantStatus: 400, wantMsg: `key \"N\" is ambiguous`, forwarded: false, wantN: 0, wantMax: 0},
		{name: "n twice", body: `{"model":"mistral-small-latest","n":1,"n":10,"max_tokens":50,` + msgs + `}`, wantStatus: 400, wantMsg: "n appears more than once", forwarded: false, wantN: 0, wantMax: 0},
		{name: "n escaped", body: `{"model":"mistral-small-latest","\u006e":10,"max_tokens":50,` + msgs + `}`, wantStatus: 403, wantMsg: "10 × 50", forwarded: false, wantN: 0, wantMax: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sent := len(tap.received(pathChat))
			billedBefore := e.billed()
			countedBefore, _ := e.settledAll(t, "analyst")
			resp, b, err := e.do(context.Background(), "analyst", "POST", pathChat, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(b), tc.wantMsg) {
				t.Fatalf("status %d body %s, want %d saying %q", resp.StatusCode, b, tc.wantStatus, tc.wantMsg)
			}
			got := tap.received(pathChat)
			if !tc.forwarded {
				if len(got) != sent || e.billed() != billedBefore {
					t.Fatalf("a refused request reached the upstream (%d→%d requests, billed %d→%d)", sent, len(got), billedBefore, e.billed())
				}
				return
			}
			var up struct {
				N         int `json:"n"`
				MaxTokens int `json:"max_tokens"`
			}
			if len(got) != sent+1 || json.Unmarshal(got[len(got)-1], &up) != nil || up.N != tc.wantN || up.MaxTokens != tc.wantMax {
				t.Fatalf("upstream received %+v (%d requests), want n %d max_tokens %d", up, len(got)-sent, tc.wantN, tc.wantMax)
			}
			var a chatAnswer
			if err := json.Unmarshal(b, &a); err != nil || len(a.Choices) != tc.wantN {
				t.Fatalf("answer with %d choices (%v), want %d", len(a.Choices), err, tc.wantN)
			}
			counted, _ := e.settledAll(t, "analyst")
			if d, bd := counted-countedBefore, e.billed()-billedBefore; d != bd || d != a.Usage.total() {
				t.Fatalf("counted %d, upstream billed %d, answer's usage %d", d, bd, a.Usage.total())
			}
		})
	}
}

// TestAttackCachedTokens: prompt tokens the upstream served from its cache
// are counted at 10% of the input price in the USD charged, the spending
// guard and the metrics.
func TestAttackCachedTokens(t *testing.T) {
	e := newEnv(t)
	body := `{"model":"mistral-large-latest","max_tokens":20,"prompt_cache_key":"report-42","messages":[{"role":"system","content":"` +
		strings.Repeat("a long shared system prompt ", 40) + `"},{"role":"user","content":"question %d"}]}`
	pr, _ := e.opts.Price("mistral-large-latest")
	var wantUSD float64
	var sawCached bool
	for i := 0; i < 2; i++ {
		resp, b, err := e.do(context.Background(), "spender", "POST", pathChat, fmt.Sprintf(body, i))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v %s", err, resp, b)
		}
		u, ok := findUsage(b)
		if !ok {
			t.Fatalf("no usage in %s", b)
		}
		if i == 1 && (u.Cached <= 0 || u.Cached >= u.PromptTokens) {
			t.Fatalf("second answer's cached tokens %d of %d: the upstream did not serve the shared prefix from its cache", u.Cached, u.PromptTokens)
		}
		sawCached = sawCached || u.Cached > 0
		wantUSD += (float64(u.PromptTokens-u.Cached)*pr.InputPerM + 0.1*float64(u.Cached)*pr.InputPerM + float64(u.CompletionTokens)*pr.OutputPerM) / 1e6
	}
	_, usd := e.settledAll(t, "spender")
	_, _, _, hourUSD := e.principal("spender").ledger.snapshot()
	metric := e.counter(e.gw.m.usd, "spender-app", testWorkspace)
	if c := e.counter(e.gw.m.cached, "spender-app", testWorkspace); c <= 0 {
		t.Errorf("cached_tokens_total %v", c)
	}
	for name, got := range map[string]float64{"daily usd": usd, "hourly usd (guard)": hourUSD, "usd_total metric": metric} {
		if !sawCached || !closeTo(got, wantUSD) {
			t.Errorf("%s %v, want %v (cached tokens at 10%%)", name, got, wantUSD)
		}
	}
}

// TestAttackUpstreamErrorScrubbed: an upstream error that echoes a key
// reaches the client with the key removed.
func TestAttackUpstreamErrorScrubbed(t *testing.T) {
	e := newEnv(t)
	upKey := e.gw.snap.Load().keys[testWorkspace].get().apiKey
	other := "Zk3" + strings.Repeat("q8", 15)
	for _, body := range []string{
		`{"object":"error","message":"key ` + upKey + ` is invalid; did you mean ` + other + `?","type":"invalid_request_error"}`,
		`upstream says: ` + upKey,
	} {
		e.sb.InjectFault(sandbox.Fault{Route: "POST /v1/chat/completions", Status: 400, Body: body, Times: 1})
		resp, b, err := e.do(context.Background(), "developer", "POST", pathChat, chatBody("codestral-latest", 10, false, "x"))
		if err != nil || resp.StatusCode != 400 {
			t.Fatalf("%v %v %s", err, resp, b)
		}
		if strings.Contains(string(b), upKey) || strings.Contains(string(b), other) || !strings.Contains(string(b), "[REDACTED]") || !json.Valid(b) {
			t.Fatalf("relayed error not scrubbed: %s", b)
		}
	}
}

// rawRequest opens a connection and writes req as is.
func rawRequest(t testing.TB, url, req string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return c
}

// readUntilClosed reads what the server answers until it closes the
// connection, failing after limit.
func readUntilClosed(c net.Conn, limit time.Duration) (string, error) {
	c.SetReadDeadline(time.Now().Add(limit))
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestAttackSlowClients: a client that sends headers and then stalls (a
// Content-Length of 1000 and one byte, with and without a token, or half
// its headers) is cut off after read_timeout; 300 of them at once all are,
// and nothing reaches the upstream.
func TestAttackSlowClients(t *testing.T) {
	tap := &upstreamTap{}
	e := newEnv(t, withTap(tap), withOptions(func(o *Options) { o.ReadTimeout = 300 * time.Millisecond }))
	head := func(token string) string {
		h := "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
		if token != "" {
			h += "Authorization: Bearer " + token + "\r\n"
		}
		return h + "\r\n{"
	}
	tests := []struct {
		name, req, wantStatus string
	}{
		{name: "stalled body with a token", req: head(e.tokens["developer"]), wantStatus: "408"},
		{name: "stalled body without a token", req: head(""), wantStatus: "401"},
		{name: "stalled headers", req: "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n", wantStatus: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := rawRequest(t, e.url, tc.req)
			defer c.Close()
			got, err := readUntilClosed(c, 10*time.Second)
			if err != nil {
				t.Fatalf("connection still open after 10s (read_timeout 300ms): %v", err)
			}
			if tc.wantStatus != "" && !strings.HasPrefix(got, "HTTP/1.1 "+tc.wantStatus) {
				t.Fatalf("answer %q, want %s", got, tc.wantStatus)
			}
		})
	}
	t.Run("300 connections", func(t *testing.T) {
		var wg sync.WaitGroup
		var open atomic.Int64
		for i := 0; i < 300; i++ {
			tok := ""
			if i%2 == 0 {
				tok = e.tokens["developer"]
			}
			c := rawRequest(t, e.url, head(tok))
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := readUntilClosed(c, 15*time.Second); err != nil {
					open.Add(1)
				}
			}()
		}
		wg.Wait()
		if n := open.Load(); n > 0 {
			t.Fatalf("%d of 300 stalled connections still open after 15s", n)
		}
	})
	if n := len(tap.received(pathChat)); n != 0 {
		t.Fatalf("the upstream received %d requests from stalled clients", n)
	}
	if _, res, _, _ := e.principal("developer").ledger.snapshot(); res != 0 || e.principal("developer").ledger.inflight.Load() != 0 {
		t.Fatalf("stalled clients hold reservations or slots")
	}
}

// TestAttackIdleKeepAlive: a keep-alive connection left idle after its
// answer is closed by the gateway (after twice read_timeout).
func TestAttackIdleKeepAlive(t *testing.T) {
	e := newEnv(t, withOptions(func(o *Options) { o.ReadTimeout = 200 * time.Millisecond }))
	c := rawRequest(t, e.url, "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "+e.tokens["developer"]+"\r\n\r\n")
	defer c.Close()
	got, err := readUntilClosed(c, 10*time.Second)
	if err != nil {
		t.Fatalf("idle connection still open after 10s: %v", err)
	}
	if !strings.HasPrefix(got, "HTTP/1.1 200") {
		t.Fatalf("answer %.40q", got)
	}
}

// TestAttackSlowReaderStreamFlows: a long stream is never cut while it
// flows, even when it lasts many read_timeouts; a client that stops
// reading is cut, and its request settles to what the upstream billed.
func TestAttackSlowReaderStreamFlows(t *testing.T) {
	tap := &upstreamTap{chunkDelay: 120 * time.Millisecond} // 6 chunks: ~4 read_timeouts
	e := newEnv(t, withTap(tap), withOptions(func(o *Options) { o.ReadTimeout = 200 * time.Millisecond }))
	resp, err := e.open(context.Background(), "developer", chatBody("codestral-latest", 150, true, "a slow, long answer please"))
	if err != nil {
		t.Fatal(err)
	}
	events := readSSE(t, resp)
	resp.Body.Close()
	if len(events) < 4 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream cut: %q", events)
	}
	tokens, _ := e.settledAll(t, "developer")
	if billed := e.billed(); tokens != billed {
		t.Fatalf("counted %d, billed %d", tokens, billed)
	}
}

// TestAttackClientStopsReading: a client that opens a long stream and
// stops reading (its connection open, its buffers full) is cut after
// read_timeout without progress; the gateway reads the rest of the answer
// and settles to what the upstream billed.
func TestAttackClientStopsReading(t *testing.T) {
	tap := &upstreamTap{pad: 4 << 20} // ~24 MiB in all: more than the sockets buffer
	e := newEnv(t, withTap(tap), withOptions(func(o *Options) { o.ReadTimeout = 300 * time.Millisecond }))
	body := chatBody("codestral-latest", 150, true, "a long one")
	c := rawRequest(t, e.url, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "+e.tokens["developer"]+
		"\r\nContent-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	defer c.Close() // open, never read, until the request settled
	waitReceived(t, tap, 1)
	tokens, _ := e.settledAll(t, "developer")
	if billed := e.billed(); tokens != billed || billed == 0 {
		t.Fatalf("counted %d, billed %d", tokens, billed)
	}
	e.hungUp(t, 1)
	if n := e.hangups("settled"); n != 1 {
		t.Fatalf("hangups_total{settled} = %v, want 1", n)
	}
}

// TestAttackMaxConcurrent: a client's requests in flight are capped; a
// request whose client hung up holds its slot until its answer is read.
func TestAttackMaxConcurrent(t *testing.T) {
	tap := &upstreamTap{gate: make(chan struct{})}
	e := newEnv(t, withTap(tap), withRoles(map[string]Role{"pair": {Models: []string{"*"}, MaxTokensPerRequest: 50, MaxConcurrent: 2}}))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.do(ctx, "pair", "POST", pathChat, chatBody("mistral-small-latest", 10, false, "hold"))
		}()
	}
	eventually(t, "two requests at the upstream", func() bool { return len(tap.received(pathChat)) == 2 })
	cancel() // both clients hang up; their answers are still awaited
	wg.Wait()
	resp, b, err := e.do(context.Background(), "pair", "POST", pathChat, chatBody("mistral-small-latest", 10, false, "third"))
	if err != nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(b), "max_concurrent limit of 2") {
		t.Fatalf("third request: %v %v %s", err, resp, b)
	}
	if n := len(tap.received(pathChat)); n != 2 {
		t.Fatalf("the refused request reached the upstream (%d requests)", n)
	}
	close(tap.gate)
	tokens, _ := e.settledAll(t, "pair")
	if billed := e.billed(); tokens != billed || billed == 0 {
		t.Fatalf("counted %d, billed %d", tokens, billed)
	}
	resp, b, err = e.do(context.Background(), "pair", "POST", pathChat, chatBody("mistral-small-latest", 10, false, "again"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the slots freed: %v %v %s", err, resp, b)
	}
}

// TestAttackLargeBody: a body over the limit gets its 413, read by the
// client rather than a connection reset, every time; nothing reaches the
// upstream.
func TestAttackLargeBody(t *testing.T) {
	tap := &upstreamTap{}
	e := newEnv(t, withTap(tap)) // 64 KiB limit
	big := chatBody("codestral-latest", 10, false, strings.Repeat("x", 900<<10))
	for i := 0; i < 20; i++ {
		resp, b, err := e.do(context.Background(), "developer", "POST", pathChat, big)
		if err != nil {
			t.Fatalf("attempt %d: %v (want the 413, not a reset)", i, err)
		}
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "body_too_large") {
			t.Fatalf("attempt %d: %d %s", i, resp.StatusCode, b)
		}
	}
	if n := len(tap.received(pathChat)); n != 0 {
		t.Fatalf("the upstream received %d requests", n)
	}
}

// TestAttackUpstreamUnreachable: a request that never reached the upstream
// (no connection) releases its reservation: nothing was billed.
func TestAttackUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	e := newEnv(t, withOptions(func(o *Options) { o.UpstreamURL = dead }))
	resp, b, err := e.do(context.Background(), "developer", "POST", pathChat, chatBody("codestral-latest", 10, false, "x"))
	if err != nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("%v %v %s", err, resp, b)
	}
	if tokens, _ := e.settledAll(t, "developer"); tokens != 0 {
		t.Fatalf("charged %d tokens for a request that never left", tokens)
	}
}

// gzipped compresses s.
func gzipped(s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.String()
}

// TestAttackRefusedTricks: the model- and max_tokens-smuggling tricks,
// each checked against what the upstream received and billed: a refused
// request never reaches it; an admitted one reaches it with the very model
// and max_tokens the gateway checked (as the upstream's own decoder reads
// them), and is counted as billed.
func TestAttackRefusedTricks(t *testing.T) {
	tap := &upstreamTap{}
	e := newEnv(t, withTap(tap)) // analyst: mistral-small-latest and mistral-embed, max_tokens_per_request 50
	const small = "mistral-small-latest"
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name        string
		path        string
		body        string
		header      map[string]string
		chunked     bool
		wantStatus  int
		wantModel   string // for admitted requests: what the upstream must read
		wantMaxToks int
	}{
		{name: "model twice", path: pathChat, body: `{"model":"` + small + `","model":"mistral-large-latest","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "max_tokens twice", path: pathChat, body: `{"model":"` + small + `","max_tokens":5,"max_tokens":5000,` + msgs + `}`, header: nil, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "model in capitals", path: pathChat, body: `{"model":"` + small + `","MODEL":"mistral-large-latest","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "max_tokens in another case", path: pathChat, body: `{"model":"` + small + `","Max_Tokens":5000,"max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "escaped max_tokens over the cap", path: pathChat, body: `{"model":"` + small + `","max_\u0074okens":51,` + msgs + `}`, header: nil, chunked: false, wantStatus: 403, wantModel: "", wantMaxToks: 0},
		{name: "escaped max_tokens at the cap", path: pathChat, body: `{"model":"` + small + `","max_\u0074okens":50,` + msgs + `}`, header: nil, chunked: false, wantStatus: 200, wantModel: small, wantMaxToks: 50},
		{name: "escaped model not allowed", path: pathChat, body: `{"model":"mistral-\u006carge-latest","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 403, wantModel: "", wantMaxToks: 0},
		{name: "escaped model allowed", path: pathChat, body: `{"model":"mistral-\u0073mall-latest","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 200, wantModel: small, wantMaxToks: 5},
		{name: "model with a trailing space", path: pathChat, body: `{"model":"` + small + ` ","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 403, wantModel: "", wantMaxToks: 0},
		{name: "max_tokens null gets the role's", path: pathChat, body: `{"model":"` + small + `","max_tokens":null,` + msgs + `}`, header: nil, chunked: false, wantStatus: 200, wantModel: small, wantMaxToks: 50},
		{name: "max_tokens as a float", path: pathChat, body: `{"model":"` + small + `","max_tokens":5.0,` + msgs + `}`, header: nil, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "max_tokens in exponent form", path: pathChat, body: `{"model":"` + small + `","max_tokens":1e3,` + msgs + `}`, header: nil, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "max_tokens as a string", path: pathChat, body: `{"model":"` + small + `","max_tokens":"5000",` + msgs + `}`, header: nil, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "stream as a string", path: pathChat, body: `{"model":"` + small + `","max_tokens":5,"stream":"true",` + msgs + `}`, header: nil, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "second document", path: pathChat, body: `{"model":"` + small + `","max_tokens":5,` + msgs + `} {"model":"mistral-large-latest"}`, header: nil, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "byte order mark", path: pathChat, body: "\ufeff" + `{"model":"` + small + `","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "nested model only", path: pathChat, body: `{"max_tokens":5,"messages":[{"role":"user","content":"x","model":"` + small + `"}]}`, header: nil, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "gzip body", path: pathChat, body: gzipped(`{"model":"mistral-large-latest","max_tokens":5000,` + msgs + `}`), header: map[string]string{"Content-Encoding": "gzip"}, chunked: false, wantStatus: 400, wantModel: "", wantMaxToks: 0},
		{name: "chunked body", path: pathChat, body: `{"model":"` + small + `","max_tokens":7,` + msgs + `}`, header: nil, chunked: true, wantStatus: 200, wantModel: small, wantMaxToks: 7},
		{name: "chunked body over the limit", path: pathChat, body: `{"model":"` + small + `","max_tokens":7,"messages":[{"role":"user","content":"` + strings.Repeat("x", 70<<10) + `"}]}`, header: nil, chunked: true, wantStatus: 413, wantModel: "", wantMaxToks: 0},
		{name: "headers over 64 KiB", path: pathChat, body: `{"model":"` + small + `","max_tokens":5,` + msgs + `}`, header: map[string]string{"X-Pad": strings.Repeat("p", 100<<10)}, chunked: false, wantStatus: 431, wantModel: "", wantMaxToks: 0},
		{name: "trailing slash", path: pathChat + "/", body: `{"model":"` + small + `","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 404, wantModel: "", wantMaxToks: 0},
		{name: "double slash", path: "/v1//chat/completions", body: `{"model":"` + small + `","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 404, wantModel: "", wantMaxToks: 0},
		{name: "encoded slash", path: "/v1/chat%2Fcompletions", body: `{"model":"` + small + `","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 404, wantModel: "", wantMaxToks: 0},
		{name: "encoded letter", path: "/v1/%63hat/completions", body: `{"model":"` + small + `","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 404, wantModel: "", wantMaxToks: 0},
		{name: "dot segment", path: "/v1/chat/./completions", body: `{"model":"` + small + `","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 404, wantModel: "", wantMaxToks: 0},
		{name: "upper case", path: "/V1/chat/completions", body: `{"model":"` + small + `","max_tokens":5,` + msgs + `}`, header: nil, chunked: false, wantStatus: 404, wantModel: "", wantMaxToks: 0},
		{name: "dot-dot to admin", path: "/v1/chat/../admin/api-keys", body: `{}`, header: nil, chunked: false, wantStatus: 404, wantModel: "", wantMaxToks: 0},
		{name: "admin route", path: "/v1/admin/api-keys", body: `{}`, header: nil, chunked: false, wantStatus: 404, wantModel: "", wantMaxToks: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sentChat, sentAll := len(tap.received(pathChat)), len(tap.bodies)
			billedBefore := e.billed()
			countedBefore, _ := e.settledAll(t, "analyst")
			var rd io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				rd = io.MultiReader(rd) // hides the length: sent chunked
			}
			req, err := http.NewRequest(http.MethodPost, e.url+tc.path, rd)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+e.tokens["analyst"])
			req.Header.Set("Content-Type", "application/json")
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := testHTTP.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, b)
			}
			got := tap.received(pathChat)
			if tc.wantStatus != 200 {
				tap.mu.Lock()
				all := len(tap.bodies)
				tap.mu.Unlock()
				if all != sentAll || e.billed() != billedBefore {
					t.Fatalf("refused, yet the upstream received %d requests and billed %d tokens", all-sentAll, e.billed()-billedBefore)
				}
				return
			}
			if len(got) != sentChat+1 {
				t.Fatalf("the upstream received %d requests, want 1", len(got)-sentChat)
			}
			var up struct {
				Model     string `json:"model"`
				MaxTokens int    `json:"max_tokens"`
			}
			if err := json.Unmarshal(got[len(got)-1], &up); err != nil || up.Model != tc.wantModel || up.MaxTokens != tc.wantMaxToks {
				t.Fatalf("the upstream read model %q max_tokens %d (%v), want %q %d", up.Model, up.MaxTokens, err, tc.wantModel, tc.wantMaxToks)
			}
			counted, _ := e.settledAll(t, "analyst")
			if d, bd := counted-countedBefore, e.billed()-billedBefore; d != bd || d == 0 {
				t.Fatalf("counted %d tokens, upstream billed %d", d, bd)
			}
		})
	}
}

// TestCloseChargesInFlight: a request still in flight when the gateway
// closes (its answer not yet read) is charged its whole reservation in
// the journal: the upstream bills it, and its real usage would settle
// after the last flush.
func TestCloseChargesInFlight(t *testing.T) {
	tap := &upstreamTap{gate: make(chan struct{})}
	e := newEnv(t, withTap(tap))
	body := chatBody("codestral-latest", 100, false, "still running at shutdown")
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.do(context.Background(), "developer", "POST", pathChat, body)
	}()
	waitReceived(t, tap, 1)
	if err := e.gw.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(tap.gate)
	<-done
	want := int64(len(body)) + 100
	jt, _, err := e.db.Usage(context.Background(), usageSubject("developer-app"), dayWindow(dayOf(time.Now())))
	if err != nil || jt != want {
		t.Fatalf("journal has %d tokens (%v), want the whole reservation %d", jt, err, want)
	}
	if billed := e.billed(); jt < billed {
		t.Fatalf("journal %d < billed %d", jt, billed)
	}
}
