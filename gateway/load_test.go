package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// TestRotationUnderLoad rotates the workspace key the way the engine does
// (create, publish with CAS, wait, delete the old key) while 200 clients
// keep sending plain, streamed, embedding and model requests: no request
// may fail.
func TestRotationUnderLoad(t *testing.T) {
	tests := []struct {
		name      string
		poll      time.Duration
		wait      time.Duration // between publish and delete
		wantRetry bool          // the 401 path must have been taken
	}{
		{name: "poller picks up the new key", poll: 100 * time.Millisecond, wait: 600 * time.Millisecond, wantRetry: false},
		{name: "upstream 401 re-reads the store", poll: time.Hour, wait: 0, wantRetry: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, withOptions(func(o *Options) { o.KeyPollInterval = tc.poll }))
			oldKey := e.gw.snap.Load().keys[testWorkspace].get().apiKey
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stop, rotated atomic.Bool
			var total, failed, afterRotation atomic.Int64
			var firstFailure atomic.Value
			bodies := []struct{ path, body string }{
				{path: pathChat, body: chatBody("mistral-small-latest", 20, false, "rotate")},
				{path: pathChat, body: chatBody("mistral-small-latest", 20, true, "rotate streaming")},
				{path: pathEmbeddings, body: `{"model":"mistral-embed","input":"rotate"}`},
				{path: pathModels, body: ""},
			}
			var wg sync.WaitGroup
			for w := 0; w < 200; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 1000 && !stop.Load(); i++ {
						b := bodies[(w+i)%len(bodies)]
						method := "POST"
						if b.path == pathModels {
							method = "GET"
						}
						late := rotated.Load()
						resp, body, err := e.do(ctx, "unbounded", method, b.path, b.body)
						total.Add(1)
						if late {
							afterRotation.Add(1)
						}
						if err == nil && resp.StatusCode == 200 && strings.Contains(b.body, `"stream":true`) && !strings.Contains(string(body), "[DONE]") {
							err = fmt.Errorf("stream cut short")
						}
						if err != nil || resp.StatusCode != 200 {
							failed.Add(1)
							if err == nil {
								err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
							}
							firstFailure.CompareAndSwap(nil, err.Error())
						}
					}
				}()
			}
			// The load is on: 200 requests answered with the old key.
			testenv.WaitFor(t, 10*time.Second, "200 requests before the rotation", func() bool { return total.Load() >= 200 })
			if err := e.rotate(ctx, tc.wait); err != nil {
				t.Fatal(err)
			}
			rotated.Store(true)
			// Keep the load on until 400 requests started after the delete
			// (bounded by 10s; fewer fails the test below).
			after, stopAfter := context.WithTimeout(ctx, 10*time.Second)
			testenv.Until(after, func() bool { return afterRotation.Load() >= 400 })
			stopAfter()
			stop.Store(true)
			wg.Wait()
			if failed.Load() != 0 {
				t.Fatalf("%d of %d requests failed during rotation; first: %v", failed.Load(), total.Load(), firstFailure.Load())
			}
			if before := total.Load() - afterRotation.Load(); before < 200 || afterRotation.Load() < 400 {
				t.Fatalf("%d requests before the old key was deleted and %d after: the load did not span the rotation", before, afterRotation.Load())
			}
			if e.gw.snap.Load().keys[testWorkspace].get().apiKey == oldKey {
				t.Fatal("gateway still holds the old key")
			}
			retried := e.counter(e.gw.m.upstream, testWorkspace, "retried")
			if tc.wantRetry && retried == 0 {
				t.Fatal("no request went through the 401 re-read path")
			}
			t.Logf("%d requests, %v retried after a 401", total.Load(), retried)
		})
	}
}

// TestConcurrentBudget: 200 goroutines race against one client's daily
// budget; the admitted tokens never exceed it, and the gateway's count
// matches what the platform recorded.
func TestConcurrentBudget(t *testing.T) {
	const budget = 5000
	e := newEnv(t, withRoles(map[string]Role{"race": {Models: []string{"mistral-small-latest"}, MaxTokensPerRequest: 60, DailyTokens: budget}}))
	var admitted, ok, refused atomic.Int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 200; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < 10; i++ {
				resp, b, err := e.do(context.Background(), "race", "POST", pathChat, chatBody("mistral-small-latest", 60, g%2 == 0, fmt.Sprint("race ", g, strings.Repeat(" word", g%20))))
				if err != nil {
					t.Error(err)
					return
				}
				switch resp.StatusCode {
				case 200:
					ok.Add(1)
					admitted.Add(answerTokens(t, b))
				case 429:
					refused.Add(1)
					if resp.Header.Get("Retry-After") != "1" {
						return // the window is full until midnight
					}
					// sleep: a refused client backs off before it retries (staggered, as real clients are)
					time.Sleep(time.Duration(g%10) * time.Millisecond)
				default:
					t.Errorf("status %d: %s", resp.StatusCode, b)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	p := e.principal("race")
	settled, reserved, _, _ := p.ledger.snapshot()
	if admitted.Load() > budget || settled > budget {
		t.Fatalf("budget overrun: answers used %d tokens, ledger %d, budget %d", admitted.Load(), settled, budget)
	}
	if settled != admitted.Load() || reserved != 0 {
		t.Fatalf("ledger settled %d reserved %d, answers used %d", settled, reserved, admitted.Load())
	}
	var platform int64
	for _, u := range e.sb.WorkspaceUsage(e.sb.Workspaces()[0].UUID, time.Now().UTC().Format("2006-01")) {
		platform += u.PromptTokens + u.CompletionTokens
	}
	if platform != settled {
		t.Fatalf("platform recorded %d tokens, gateway %d", platform, settled)
	}
	if refused.Load() == 0 || ok.Load() == 0 {
		t.Fatalf("ok %d refused %d: the race did not reach the budget", ok.Load(), refused.Load())
	}
	t.Logf("%d admitted (%d tokens of %d), %d refused", ok.Load(), settled, budget, refused.Load())
}

// answerTokens reads the usage of a plain or streamed answer.
func answerTokens(t *testing.T, b []byte) int64 {
	s := string(b)
	if strings.HasPrefix(s, "data:") {
		var su sseUsage
		su.feed(b)
		if !su.found {
			t.Errorf("stream without usage")
		}
		return su.u.total()
	}
	var a chatAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Errorf("answer %s: %v", b, err)
	}
	return a.Usage.total()
}

// TestUsagePersistsAcrossRestart: counters written behind to the journal are
// loaded by the next gateway, so a restart forgets nothing.
func TestUsagePersistsAcrossRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		resp, b, err := e.do(ctx, "spender", "POST", pathChat, chatBody("mistral-large-latest", 100, i%2 == 0, "persist me"))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v %s", err, resp, b)
		}
	}
	p := e.principal("spender")
	tokens, _, usd, hourUSD := p.ledger.snapshot()
	e.restart()
	p2 := e.principal("spender")
	if p2 == p {
		t.Fatal("restart kept the old gateway")
	}
	t2, res, usd2, hour2 := p2.ledger.snapshot()
	if t2 != tokens || res != 0 || !closeTo(usd2, usd) || !closeTo(hour2, hourUSD) {
		t.Fatalf("after restart tokens %d usd %v hour %v, before %d %v %v", t2, usd2, hour2, tokens, usd, hourUSD)
	}
	if tokens == 0 || usd == 0 {
		t.Fatal("nothing was counted")
	}
}

func closeTo(a, b float64) bool { d := a - b; return d < 1e-12 && d > -1e-12 }

// TestWindowRollover: with the clock at 23:59:50 UTC a spent daily budget
// says retry in 10s; after midnight the new window admits again.
func TestWindowRollover(t *testing.T) {
	var now atomic.Pointer[time.Time]
	t0 := time.Date(2026, 11, 27, 23, 59, 50, 0, time.UTC)
	now.Store(&t0)
	e := newEnv(t, withRoles(map[string]Role{"d": {Models: []string{"*"}, MaxTokensPerRequest: 100, DailyTokens: 300}}),
		withOptions(func(o *Options) { o.Now = func() time.Time { return *now.Load() } }))
	ctx := context.Background()
	var last *http.Response
	for i := 0; i < 20; i++ {
		resp, _, err := e.do(ctx, "d", "POST", pathChat, chatBody("mistral-small-latest", 100, false, strings.Repeat("x", 100)))
		if err != nil {
			t.Fatal(err)
		}
		last = resp
		if resp.StatusCode == 429 {
			break
		}
	}
	if last.StatusCode != 429 || last.Header.Get("Retry-After") != "10" {
		t.Fatalf("status %d Retry-After %q, want 429 and 10", last.StatusCode, last.Header.Get("Retry-After"))
	}
	t1 := t0.Add(11 * time.Second)
	now.Store(&t1)
	resp, b, err := e.do(ctx, "d", "POST", pathChat, chatBody("mistral-small-latest", 100, false, "new day"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after midnight: %v %v %s", err, resp, b)
	}
}

// TestServeDrains: cancelling Run's context lets a request in flight finish,
// then flushes its usage to the journal.
func TestServeDrains(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.opts.Registerer = nil
	e.opts.FlushInterval = time.Hour // only Close may write
	gw, err := New(ctx, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln) }()
	e.sb.InjectFault(sandbox.Fault{Route: "POST /v1/chat/completions", Latency: 400 * time.Millisecond, Times: 1})
	type result struct {
		status int
		err    error
	}
	rc := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+pathChat, strings.NewReader(chatBody("mistral-small-latest", 10, false, "drain")))
		req.Header.Set("Authorization", "Bearer "+e.tokens["analyst"])
		resp, err := testHTTP.Do(req)
		if err != nil {
			rc <- result{0, err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		rc <- result{resp.StatusCode, nil}
	}()
	// Cancel once the request is in flight upstream.
	testenv.WaitFor(t, 5*time.Second, "the request to reach the upstream", func() bool {
		return e.sb.Stats()["POST /v1/chat/completions"] != 0
	})
	cancel()
	r := <-rc
	if r.err != nil || r.status != 200 {
		t.Fatalf("request in flight during drain: %d %v", r.status, r.err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	tok, _, err := e.db.Usage(context.Background(), usageSubject("analyst-app"), dayWindow(dayOf(time.Now())))
	if err != nil || tok == 0 {
		t.Fatalf("usage not flushed at close: %d %v", tok, err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still open after drain")
	}
}

// TestScaleOutSharesBudget: two gateways on one journal hold one budget
// through leases: B is refused (Retry-After 1) while A holds the rest on
// lease; A, idle, gives its holding back within a few refreshes, and B then
// spends it, until the budget itself is spent (Retry-After: midnight).
// Together they never admit more than the daily budget.
func TestScaleOutSharesBudget(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	o := e.opts
	o.Registerer = nil
	gwB, err := New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	srvB := httptest.NewServer(gwB)
	t.Cleanup(func() { srvB.Close(); gwB.Close(ctx) })
	urlA := e.url
	body := chatBody("mistral-small-latest", 100, false, "share the budget")
	total := int64(0)
	send := func(base string) (int, string) {
		e.url = base
		resp, b, err := e.do(ctx, "budget", "POST", pathChat, body)
		e.url = urlA
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == 200 {
			total += answerTokens(t, b)
		}
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	// Spend about 600 of the 1000 tokens through A.
	for total < 600 {
		if code, _ := send(urlA); code != 200 {
			t.Fatalf("A refused at %d tokens: %d", total, code)
		}
	}
	heldByA := func() int64 {
		gs, err := e.db.BudgetGrants(ctx, usageSubject("budget-app"), dayWindow(dayOf(time.Now())))
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gs {
			if g.Owner == e.gw.leases.owner {
				return g.Held.Tokens
			}
		}
		return 0
	}
	const need = 100 + 150 // max_tokens plus the body's bytes, about
	refusedWhileHeld := 0
	for i := 0; i < 100; i++ {
		code, ra := send(srvB.URL)
		if code == 200 {
			continue
		}
		if code != 429 {
			t.Fatalf("B: status %d", code)
		}
		t.Logf("B refused: Retry-After %s, A holds %d, admitted %d", ra, heldByA(), total)
		if ra != "1" {
			break // the budget is spent: until midnight
		}
		if heldByA() < need/4 {
			break // what is left is less than a request
		}
		refusedWhileHeld++
		eventually(t, "A to give back its idle holding", func() bool { return heldByA() < need/4 })
	}
	if total > 1000 {
		t.Fatalf("A and B admitted %d tokens together, budget 1000", total)
	}
	if total < 700 {
		t.Fatalf("only %d of 1000 tokens admitted: B refused too early", total)
	}
	t.Logf("%d of 1000 tokens admitted; B was refused %d times while A held budget", total, refusedWhileHeld)
}
