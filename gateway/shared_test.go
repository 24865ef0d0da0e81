package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/journal/postgres"
)

// withPostgres puts the env's journal on a database of its own on the
// machine's PostgreSQL (instead of a SQLite file).
func withPostgres(pg *testenv.PostgresDB) envOption {
	return func(e *testEnv) { e.pg = pg }
}

// instance is one more gateway process on the env's journal: its own
// journal handle (its own sessions), its own server.
type instance struct {
	gw     *Gateway
	db     *journal.DB
	srv    *httptest.Server
	killed bool
}

// cluster is n gateway instances on one PostgreSQL journal, in front of
// one sandbox: e's own gateway is the first.
type cluster struct {
	e    *testEnv
	pg   *testenv.PostgresDB
	inst []*instance
}

func newCluster(t *testing.T, n int, roles map[string]Role, opts ...envOption) *cluster {
	t.Helper()
	pg := testenv.Postgres(t)
	e := newEnv(t, append([]envOption{withRoles(roles), withPostgres(pg)}, opts...)...)
	c := &cluster{e: e, pg: pg, inst: []*instance{{gw: e.gw, db: e.db}}}
	for i := 1; i < n; i++ {
		c.add(t, nil)
	}
	return c
}

// add starts one more instance; wrap, when set, wraps its journal.
func (c *cluster) add(t *testing.T, wrap func(UsageStore) UsageStore) *instance {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, c.pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	o := c.e.opts
	o.Registerer = prometheus.NewRegistry()
	o.Usage = db
	if wrap != nil {
		o.Usage = wrap(db)
	}
	gw, err := New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{gw: gw, db: db, srv: httptest.NewServer(gw)}
	t.Cleanup(func() {
		in.srv.Close()
		if !in.killed {
			gw.Close(ctx)
		}
		db.Close()
	})
	c.inst = append(c.inst, in)
	return in
}

// url is instance i's base URL.
func (c *cluster) url(i int) string {
	if i == 0 {
		return c.e.url
	}
	return c.inst[i].srv.URL
}

// kill stops an instance as a crash would: it stops serving and renewing,
// and never reports nor returns what it holds.
func (c *cluster) kill(in *instance) {
	in.killed = true
	in.srv.Close()
	in.gw.cancel()
	in.gw.wg.Wait()
	in.gw.leases.wait()
}

// closeAll closes every live instance (each returns its leases).
func (c *cluster) closeAll(t *testing.T) {
	t.Helper()
	for _, in := range c.inst {
		if in.killed {
			continue
		}
		if err := in.gw.Close(context.Background()); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
}

// post sends one chat request as client through instance i.
func (c *cluster) post(ctx context.Context, i int, client, body string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", c.url(i)+pathChat, strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.e.tokens[client])
	req.Header.Set("Content-Type", "application/json")
	resp, err := testHTTP.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// crowdResult is what a crowd of clients was answered.
type crowdResult struct {
	ok, refused, unavailable atomic.Int64
	tokens                   atomic.Int64 // answers' usage
	windowFull               atomic.Int64 // 429s whose Retry-After is past a second
}

// crowd runs clients goroutines, spread over the instances, each sending up
// to per requests as client (stopping once refused until the window ends).
func (c *cluster) crowd(t *testing.T, clients, per int, client string, body func(g, i int) string) *crowdResult {
	return c.crowdOf(t, clients, per, func(int) string { return client }, body)
}

// crowdOf is crowd with goroutine g sending as client(g).
func (c *cluster) crowdOf(t *testing.T, clients, per int, client func(g int) string, body func(g, i int) string) *crowdResult {
	t.Helper()
	var r crowdResult
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < clients; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < per; i++ {
				resp, b, err := c.post(context.Background(), (g+i)%len(c.inst), client(g), body(g, i))
				if err != nil {
					if !c.anyKilled() {
						t.Error(err)
					}
					return
				}
				switch resp.StatusCode {
				case 200:
					r.ok.Add(1)
					r.tokens.Add(answerTokens(t, b))
				case 429:
					r.refused.Add(1)
					if resp.Header.Get("Retry-After") != "1" {
						r.windowFull.Add(1)
						return
					}
				case 503:
					r.unavailable.Add(1)
				default:
					t.Errorf("status %d: %s", resp.StatusCode, b)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	return &r
}

func (c *cluster) anyKilled() bool {
	for _, in := range c.inst {
		if in.killed {
			return true
		}
	}
	return false
}

// TestSharedBudgetPostgres: three instances on one PostgreSQL journal, one
// budget, 200 concurrent clients spread over them against an upstream that
// bills on acceptance: together they admit no more than the budget (daily
// tokens, daily USD, hourly USD), the journal counts at least what the
// upstream billed, and the budget is spent nearly to its end.
func TestSharedBudgetPostgres(t *testing.T) {
	tests := []struct {
		name  string
		role  Role
		check func(t *testing.T, used journal.Amounts, r *crowdResult)
	}{
		{name: "daily tokens", role: Role{Models: []string{"mistral-small-latest"}, MaxTokensPerRequest: 60, DailyTokens: 8000},
			check: func(t *testing.T, used journal.Amounts, r *crowdResult) {
				if used.Tokens > 8000 || r.tokens.Load() > 8000 {
					t.Fatalf("counted %d, answers used %d: over the budget of 8000", used.Tokens, r.tokens.Load())
				}
				if used.Tokens < 6000 {
					t.Fatalf("only %d of 8000 tokens admitted", used.Tokens)
				}
			}},
		{name: "daily usd", role: Role{Models: []string{"mistral-large-latest"}, MaxTokensPerRequest: 60, DailyUSD: 0.05},
			check: func(t *testing.T, used journal.Amounts, r *crowdResult) {
				if used.USD > 0.05+1e-9 {
					t.Fatalf("counted %v USD: over the budget of 0.05", used.USD)
				}
				if used.USD < 0.035 {
					t.Fatalf("only %v of 0.05 USD admitted", used.USD)
				}
			}},
		{name: "hourly usd", role: Role{Models: []string{"mistral-large-latest"}, MaxTokensPerRequest: 60, HourlyUSD: 0.04},
			check: func(t *testing.T, used journal.Amounts, r *crowdResult) {
				if used.USD > 0.04+1e-9 {
					t.Fatalf("counted %v USD in the hour: over the budget of 0.04", used.USD)
				}
				if used.USD < 0.028 {
					t.Fatalf("only %v of 0.04 USD admitted", used.USD)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 3, map[string]Role{"shared": tc.role})
			model := tc.role.Models[0]
			r := c.crowd(t, 200, 15, "shared", func(g, i int) string {
				return chatBody(model, 20+(g*7+i)%41, g%2 == 0, fmt.Sprint("client ", g, strings.Repeat(" word", g%20)))
			})
			c.closeAll(t)
			now := time.Now()
			win := dayWindow(dayOf(now))
			if tc.role.HourlyUSD > 0 {
				win = hourWindow(hourOf(now))
			}
			used, err := c.e.db.BudgetUsed(context.Background(), usageSubject("shared-app"), win)
			if err != nil {
				t.Fatal(err)
			}
			if billed := c.e.billed(); used.Tokens < billed {
				t.Fatalf("journal counted %d tokens, the upstream billed %d", used.Tokens, billed)
			}
			if gs, _ := c.e.db.BudgetGrants(context.Background(), usageSubject("shared-app"), win); r.unavailable.Load() > 0 || len(gs) > 0 {
				for _, l := range strings.Split(c.e.logs.String(), "\n") {
					if strings.Contains(l, "WARN") {
						t.Log(l)
					}
				}
			}
			if r.unavailable.Load() > 0 || r.refused.Load() == 0 {
				t.Fatalf("%d answered 503; %d refused: the budget was not reached", r.unavailable.Load(), r.refused.Load())
			}
			tc.check(t, used, r)
			// Every instance returned what it held, unless a call's outcome
			// was unknown (it failed after the journal committed it): its
			// grant then stays until it expires, counted in full.
			if gs, _ := c.e.db.BudgetGrants(context.Background(), usageSubject("shared-app"), win); len(gs) != 0 &&
				!strings.Contains(c.e.logs.String(), "budget journal unreachable") {
				t.Fatalf("grants left after every instance closed: %+v", gs)
			}
			t.Logf("%d admitted, %d refused; counted %d tokens %.5f USD", r.ok.Load(), r.refused.Load(), used.Tokens, used.USD)
		})
	}
}

// TestSharedRPMPostgres: a role's rpm and a workspace's rpm hold across
// three instances, per UTC minute: each minute's counter stays within the
// limit and counts every request admitted.
func TestSharedRPMPostgres(t *testing.T) {
	tests := []struct {
		name    string
		rpm     int64
		subject string
		opts    []envOption
		client  func(g int) string
	}{
		{name: "role", rpm: 40, subject: usageSubject("shared-app"), opts: nil, client: func(int) string { return "shared" }},
		{name: "workspace", rpm: 30, subject: workspaceSubject("team"),
			opts:   []envOption{withWorkspace("team", Workspace{RPM: 30}, map[string]string{"w1": "open", "w2": "open"})},
			client: func(g int) string { return []string{"w1", "w2"}[g%2] }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 3, map[string]Role{"shared": {Models: []string{"mistral-small-latest"}, RPM: int(tc.rpm)}, "open": {Models: []string{"*"}}}, tc.opts...)
			m0 := minuteOf(time.Now())
			r := c.crowdOf(t, 200, 3, tc.client, func(g, i int) string { return chatBody("mistral-small-latest", 5, false, "hi") })
			c.closeAll(t)
			m1 := minuteOf(time.Now())
			var counted int64
			for m := m0; m <= m1; m++ {
				used, err := c.e.db.BudgetUsed(context.Background(), tc.subject, minuteWindow(m))
				if err != nil {
					t.Fatal(err)
				}
				if used.Requests > tc.rpm {
					t.Fatalf("minute %s: %d requests admitted, rpm %d", minuteWindow(m), used.Requests, tc.rpm)
				}
				counted += used.Requests
			}
			if counted != r.ok.Load() || r.ok.Load() > tc.rpm*(m1-m0+1) || r.ok.Load() < tc.rpm/2 {
				t.Fatalf("%d admitted, %d counted over %d minutes, rpm %d", r.ok.Load(), counted, m1-m0+1, tc.rpm)
			}
			t.Logf("%d admitted over %d minute(s), %d refused", r.ok.Load(), m1-m0+1, r.refused.Load())
		})
	}
}

// TestSharedBudgetInstanceKilled: an instance killed while holding a lease
// never returns it; the others keep serving from the rest of the budget,
// its grant expires and is charged in full (it may have spent it), and
// together they never admit more than the budget.
func TestSharedBudgetInstanceKilled(t *testing.T) {
	const budget = 6000
	c := newCluster(t, 3, map[string]Role{"shared": {Models: []string{"mistral-small-latest"}, MaxTokensPerRequest: 60, DailyTokens: budget}},
		withOptions(func(o *Options) { o.LeaseTTL = time.Second }))
	ctx := context.Background()
	sub, win := usageSubject("shared-app"), dayWindow(dayOf(time.Now()))
	body := chatBody("mistral-small-latest", 60, false, "crash me")
	var answered int64
	// The victim (instance 2) serves a burst and holds a lease.
	for i := 0; i < 20; i++ {
		resp, b, err := c.post(ctx, 2, "shared", body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v %s", err, resp, b)
		}
		answered += answerTokens(t, b)
	}
	victim := c.inst[2]
	heldBy := func(owner string) (int64, bool) {
		gs, err := c.e.db.BudgetGrants(ctx, sub, win)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gs {
			if g.Owner == owner {
				return g.Held.Tokens, true
			}
		}
		return 0, false
	}
	held, ok := heldBy(victim.gw.leases.owner)
	if !ok || held == 0 {
		t.Fatal("the victim holds no lease")
	}
	c.kill(victim)
	c.inst = c.inst[:2]
	// The others go on: the budget minus what the victim held.
	r := c.crowd(t, 50, 40, "shared", func(g, i int) string {
		return chatBody("mistral-small-latest", 20+(g+i)%41, false, fmt.Sprint("survivor ", g))
	})
	answered += r.tokens.Load()
	if r.ok.Load() == 0 || r.refused.Load() == 0 || r.unavailable.Load() > 0 {
		t.Fatalf("survivors: %d ok, %d refused, %d 503", r.ok.Load(), r.refused.Load(), r.unavailable.Load())
	}
	// Past its TTL the victim's grant is charged by the next grant on the budget.
	eventually(t, "the victim's grant to expire and be charged", func() bool {
		c.post(ctx, 0, "shared", body)
		_, still := heldBy(victim.gw.leases.owner)
		return !still
	})
	c.closeAll(t)
	used, err := c.e.db.BudgetUsed(ctx, sub, win)
	if err != nil {
		t.Fatal(err)
	}
	billed := c.e.billed()
	if used.Tokens > budget || answered > budget {
		t.Fatalf("counted %d, answers used %d: over the budget of %d", used.Tokens, answered, budget)
	}
	if used.Tokens < billed {
		t.Fatalf("counted %d tokens, the upstream billed %d", used.Tokens, billed)
	}
	t.Logf("victim held %d when killed; survivors admitted %d tokens; counted %d, billed %d, budget %d", held, r.tokens.Load(), used.Tokens, billed, budget)
}

// failingJournal is a journal a test can cut off: every call fails while
// down, as when the network to the database is lost.
type failingJournal struct {
	UsageStore
	down atomic.Bool
}

var errJournalDown = errors.New("dial tcp 10.0.0.5:5432: connect: connection refused")

func (f *failingJournal) LeaseBudget(ctx context.Context, r journal.LeaseRequest) (journal.LeaseResult, error) {
	if f.down.Load() {
		return journal.LeaseResult{}, errJournalDown
	}
	return f.UsageStore.LeaseBudget(ctx, r)
}

func (f *failingJournal) AddUsage(ctx context.Context, subject, window string, tokens int64, usd float64) error {
	if f.down.Load() {
		return errJournalDown
	}
	return f.UsageStore.AddUsage(ctx, subject, window, tokens, usd)
}

func (f *failingJournal) LoadUsage(ctx context.Context, prefix string) (map[journal.UsageKey]journal.UsageTotal, error) {
	if f.down.Load() {
		return nil, errJournalDown
	}
	return f.UsageStore.LoadUsage(ctx, prefix)
}

// TestSharedBudgetJournalUnreachable: cut off from the journal, an instance
// serves from the budget it holds, then refuses with 503 (a clear body, a
// log line), and serves again once the journal is back, without a restart;
// the budget is never exceeded.
func TestSharedBudgetJournalUnreachable(t *testing.T) {
	const budget = 20000
	c := newCluster(t, 1, map[string]Role{"shared": {Models: []string{"mistral-small-latest"}, MaxTokensPerRequest: 60, DailyTokens: budget}})
	var fj *failingJournal
	c.add(t, func(s UsageStore) UsageStore { fj = &failingJournal{UsageStore: s}; return fj })
	ctx := context.Background()
	body := chatBody("mistral-small-latest", 60, false, "are you there")
	// Warm up: the instance holds a lease sized to its traffic.
	for i := 0; i < 30; i++ {
		if resp, b, err := c.post(ctx, 1, "shared", body); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v %s", err, resp, b)
		}
	}
	fj.down.Store(true)
	served, status, msg := 0, 0, ""
	for i := 0; i < 2000 && status != 503; i++ {
		resp, b, err := c.post(ctx, 1, "shared", body)
		if err != nil {
			t.Fatal(err)
		}
		status, msg = resp.StatusCode, string(b)
		if status == 200 {
			served++
		}
	}
	if served == 0 || status != 503 {
		t.Fatalf("with the journal down: %d served from holdings, then status %d", served, status)
	}
	var eb errBody
	if json.Unmarshal([]byte(msg), &eb) != nil || eb.Code == nil || *eb.Code != "budget_unavailable" || !strings.Contains(string(eb.Message), "journal") {
		t.Fatalf("503 body %s", msg)
	}
	if !strings.Contains(c.e.logs.String(), "budget journal unreachable") {
		t.Fatal("no log line says the journal is unreachable")
	}
	// Instance 0, on the journal, is unaffected.
	if resp, b, err := c.post(ctx, 0, "shared", body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the other instance: %v %v %s", err, resp, b)
	}
	fj.down.Store(false)
	eventually(t, "the cut-off instance to serve again", func() bool {
		resp, _, err := c.post(ctx, 1, "shared", body)
		return err == nil && resp.StatusCode == 200
	})
	c.closeAll(t)
	used, err := c.e.db.BudgetUsed(ctx, usageSubject("shared-app"), dayWindow(dayOf(time.Now())))
	if err != nil || used.Tokens < c.e.billed() || used.Tokens > budget {
		t.Fatalf("counted %d (%v), billed %d, budget %d", used.Tokens, err, c.e.billed(), budget)
	}
	t.Logf("served %d requests from holdings with the journal down, then 503", served)
}

// TestSharedBudgetSessionsTerminated: PostgreSQL ends every session of the
// journal (as a restart does) again and again under load from three
// instances: no budget is exceeded and the instances recover without a
// restart.
func TestSharedBudgetSessionsTerminated(t *testing.T) {
	const budget = 12000
	c := newCluster(t, 3, map[string]Role{"shared": {Models: []string{"mistral-small-latest"}, MaxTokensPerRequest: 60, DailyTokens: budget}})
	stop := make(chan struct{})
	var terminated atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				terminated.Add(int64(c.pg.TerminateSessions(t)))
			}
		}
	}()
	r := c.crowd(t, 200, 15, "shared", func(g, i int) string {
		return chatBody("mistral-small-latest", 20+(g*3+i)%41, g%3 == 0, fmt.Sprint("restart ", g))
	})
	close(stop)
	wg.Wait()
	if terminated.Load() == 0 {
		t.Fatal("no session was terminated")
	}
	// The journal rode over every ended session: no request was refused
	// for want of it, and each instance still decides (200 or 429).
	if r.unavailable.Load() > 0 {
		t.Fatalf("%d requests answered 503 while sessions were ended", r.unavailable.Load())
	}
	for i := range c.inst {
		resp, b, err := c.post(context.Background(), i, "shared", chatBody("mistral-small-latest", 20, false, "after"))
		if err != nil || (resp.StatusCode != 200 && resp.StatusCode != 429) {
			t.Fatalf("instance %d after the restarts: %v %v %s", i, err, resp, b)
		}
		if resp.StatusCode == 200 {
			r.tokens.Add(answerTokens(t, b))
		}
	}
	c.closeAll(t)
	used, err := c.e.db.BudgetUsed(context.Background(), usageSubject("shared-app"), dayWindow(dayOf(time.Now())))
	if err != nil {
		t.Fatal(err)
	}
	if used.Tokens > budget || r.tokens.Load() > budget || used.Tokens < c.e.billed() {
		t.Fatalf("counted %d, answers used %d, billed %d, budget %d", used.Tokens, r.tokens.Load(), c.e.billed(), budget)
	}
	if r.refused.Load() == 0 || used.Tokens < budget*3/4 {
		t.Fatalf("the load did not reach the budget: %d refused, %d of %d counted", r.refused.Load(), used.Tokens, budget)
	}
	t.Logf("%d sessions terminated; %d admitted (%d tokens), %d refused, %d answered 503; counted %d of %d",
		terminated.Load(), r.ok.Load(), r.tokens.Load(), r.refused.Load(), r.unavailable.Load(), used.Tokens, budget)
}
