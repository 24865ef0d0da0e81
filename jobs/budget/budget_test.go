package budget

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
)

// queue is a Notifier with the outbox's dedupe semantics, kept in memory.
type queue struct {
	mu     sync.Mutex
	seen   map[string]bool
	alerts []Alert
}

func (q *queue) NotifyBudget(_ context.Context, a Alert) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.seen == nil {
		q.seen = map[string]bool{}
	}
	if a.Dedupe == "" {
		panic("alert without dedupe")
	}
	if !q.seen[a.Dedupe] {
		q.seen[a.Dedupe] = true
		q.alerts = append(q.alerts, a)
	}
	return nil
}

func (q *queue) take() []Alert {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.alerts
	q.alerts = nil
	return out
}

type world struct {
	sb      *sandbox.Server
	client  *mistral.Client
	journal *journal.DB
	cfg     *config.Config
	now     time.Time
	q       *queue
	logs    bytes.Buffer
}

const budgetSeed = `
now: 2026-11-15T00:00:00Z
workspaces:
  - {uuid: 0d1c6a52-7c1e-4b8e-9a41-3f7f5c0e1a01, name: dev-workspace}
  - {uuid: 0d1c6a52-7c1e-4b8e-9a41-3f7f5c0e1a02, name: ml-workspace, spend_limit: 500}
  - {uuid: 0d1c6a52-7c1e-4b8e-9a41-3f7f5c0e1a03, name: free-workspace}
usage:
  # dev: 20M in, 65M out of mistral-small-latest = $3 + $39 = $42 of $50 (84%)
  - {workspace: dev-workspace, month: "2026-11", model: mistral-small-latest, prompt_tokens: 20000000, completion_tokens: 65000000}
  # ml: 1M in and out of codestral-latest = $0.30 + $0.90 = $1.20 of $500
  - {workspace: ml-workspace, month: "2026-11", model: codestral-latest, prompt_tokens: 1000000, completion_tokens: 1000000}
  # last month's spend does not count
  - {workspace: ml-workspace, month: "2026-10", model: mistral-medium-latest, prompt_tokens: 900000000, completion_tokens: 0}
  # free has no budget
  - {workspace: free-workspace, month: "2026-11", model: mistral-embed, prompt_tokens: 10000000}
`

const budgetConfig = `
mistral: {admin_key_env: SANDBOX_ADMIN_KEY}
workspaces:
  - {name: dev-workspace, monthly_budget_usd: 50}
  - {name: ml-workspace, uuid: 0d1c6a52-7c1e-4b8e-9a41-3f7f5c0e1a02, monthly_budget_usd: 500}
  - {name: free-workspace}
`

func newWorld(t *testing.T) *world {
	t.Helper()
	seed, err := sandbox.ParseSeed([]byte(budgetSeed))
	if err != nil {
		t.Fatal(err)
	}
	sb := sandbox.New(sandbox.Options{Seed: seed})
	srv := sandboxtest.Serve(t, sb, true)
	c, err := mistral.New(mistral.Options{BaseURL: srv.URL, AdminKey: mistral.Secret(sb.AdminKey()), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	db, err := journal.Open(context.Background(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg, err := config.Parse("budget.yaml", []byte(budgetConfig))
	if err != nil {
		t.Fatal(err)
	}
	return &world{sb: sb, client: c, journal: db, cfg: cfg, now: time.Date(2026, 11, 15, 0, 0, 0, 0, time.UTC), q: &queue{}}
}

func (w *world) run(t *testing.T) (jobs.Result, *Report) {
	t.Helper()
	w.sb.SetNow(w.now)
	j := &Job{Config: w.cfg, Platform: w.client, Journal: w.journal, Notifier: w.q,
		Logger: slog.New(slog.NewTextHandler(&w.logs, nil)), Now: func() time.Time { return w.now }}
	res, err := j.Run(context.Background(), jobs.Request{RunID: 1, Trigger: "cron"})
	if err != nil {
		t.Fatalf("budget run: %v", err)
	}
	return res, res.Details.(*Report)
}

func (w *world) addUsage(t *testing.T, ws, model string, in, out int64) {
	t.Helper()
	if err := w.sb.AddUsage(sandbox.UsageRecord{Workspace: ws, Model: model, PromptTokens: in, CompletionTokens: out}); err != nil {
		t.Fatal(err)
	}
}

func dedupes(as []Alert) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Dedupe)
	}
	slices.Sort(out)
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestBudgetMonth(t *testing.T) {
	w := newWorld(t)

	// Mid-month, dev has spent 84%: one alert for the 80% threshold (the
	// 50% one is subsumed) and a forecast over budget.
	res, rep := w.run(t)
	if res.Failed {
		t.Fatalf("failed: %v", rep.Errors)
	}
	if rep.Month != "2026-11" || len(rep.Workspaces) != 3 {
		t.Fatalf("report month %s, %d workspaces", rep.Month, len(rep.Workspaces))
	}
	dev, ml, free := rep.Workspaces[0], rep.Workspaces[1], rep.Workspaces[2]
	if !near(dev.SpendUSD, 42) || !near(dev.Fraction, 0.84) || !slices.Equal(dev.Crossed, []float64{0.5, 0.8}) {
		t.Fatalf("dev = %+v", dev)
	}
	if !near(dev.ForecastUSD, 42/(14.0/30)) {
		t.Errorf("dev forecast = %v, want %v", dev.ForecastUSD, 42/(14.0/30))
	}
	if !near(ml.SpendUSD, 1.2) || len(ml.Crossed) != 0 || ml.WorkspaceID != "0d1c6a52-7c1e-4b8e-9a41-3f7f5c0e1a02" {
		t.Fatalf("ml = %+v", ml)
	}
	if !near(free.SpendUSD, 1.0) || free.BudgetUSD != 0 || len(free.Crossed) != 0 {
		t.Fatalf("free = %+v", free)
	}
	want := []string{"budget-forecast/dev-workspace/2026-11", "budget/dev-workspace/2026-11/0.8"}
	got := w.q.take()
	if !slices.Equal(dedupes(got), want) {
		t.Fatalf("alerts = %v, want %v", dedupes(got), want)
	}
	for _, a := range rep.Alerts {
		if !a.First {
			t.Errorf("alert %s not marked first", a.Dedupe)
		}
		if a.Kind == AlertThreshold && (a.Severity != "warning" || !strings.Contains(a.Text, "dev-workspace") || !strings.Contains(a.Text, "$42.00") || !strings.Contains(a.Text, "80%")) {
			t.Errorf("threshold alert = %+v", a)
		}
	}
	if len(rep.OrgLimits) != 1 || rep.OrgLimits[0].Category != "completion" {
		t.Errorf("org limits = %+v", rep.OrgLimits)
	}

	// Half an hour later, nothing new.
	w.now = w.now.Add(30 * time.Minute)
	_, rep = w.run(t)
	if got := w.q.take(); len(got) != 0 {
		t.Fatalf("re-alerted: %v", dedupes(got))
	}
	for _, a := range rep.Alerts {
		if a.First {
			t.Errorf("alert %s marked first twice", a.Dedupe)
		}
	}

	// Dev passes its budget: the 100% alert, critical; no forecast alert again.
	w.addUsage(t, "dev-workspace", "mistral-small-latest", 0, 15_000_000) // +$9
	w.now = w.now.Add(24 * time.Hour)
	w.run(t)
	got = w.q.take()
	if !slices.Equal(dedupes(got), []string{"budget/dev-workspace/2026-11/1"}) || got[0].Severity != "critical" {
		t.Fatalf("alerts after passing the budget = %+v", got)
	}

	// A new month starts clean; the same spend alerts again, once.
	w.now = time.Date(2026, 12, 10, 0, 0, 0, 0, time.UTC)
	w.sb.SetNow(w.now)
	w.addUsage(t, "dev-workspace", "mistral-small-latest", 0, 45_000_000) // $27 = 54%
	_, rep = w.run(t)
	got = w.q.take()
	want = []string{"budget-forecast/dev-workspace/2026-12", "budget/dev-workspace/2026-12/0.5"}
	if !slices.Equal(dedupes(got), want) {
		t.Fatalf("december alerts = %v, want %v", dedupes(got), want)
	}
	if got[1].Severity != "info" && got[0].Severity != "info" {
		t.Errorf("50%% alert is not info: %+v", got)
	}
	if rep.Workspaces[0].SpendUSD != 27 {
		t.Errorf("december spend = %v", rep.Workspaces[0].SpendUSD)
	}
}

func TestBudgetDryRun(t *testing.T) {
	w := newWorld(t)
	w.sb.SetNow(w.now)
	j := &Job{Config: w.cfg, Platform: w.client, Journal: w.journal, Notifier: w.q, Now: func() time.Time { return w.now }}
	res, err := j.Run(context.Background(), jobs.Request{RunID: 1, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep := res.Details.(*Report); len(rep.Alerts) != 2 || !strings.Contains(res.Summary, "dry run") {
		t.Fatalf("dry run report: %s %+v", res.Summary, rep.Alerts)
	}
	if got := w.q.take(); len(got) != 0 {
		t.Fatalf("dry run queued %v", dedupes(got))
	}
	// The real run afterwards still alerts: the dry run marked nothing.
	_, rep := w.run(t)
	if len(w.q.take()) != 2 || !rep.Alerts[0].First {
		t.Fatalf("alerts after a dry run: %+v", rep.Alerts)
	}
}

func TestBudgetForecastWaitsForData(t *testing.T) {
	w := newWorld(t)
	w.now = time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC) // one day into December
	w.sb.SetNow(w.now)
	w.addUsage(t, "dev-workspace", "mistral-small-latest", 0, 10_000_000) // $6: forecast $186
	_, rep := w.run(t)
	if rep.Workspaces[0].ForecastUSD < 100 {
		t.Fatalf("forecast = %v", rep.Workspaces[0].ForecastUSD)
	}
	for _, a := range w.q.take() {
		if a.Kind == AlertForecast {
			t.Fatalf("forecast alert after one day: %+v", a)
		}
	}
}

func TestBudgetOrgLimitAndPrices(t *testing.T) {
	w := newWorld(t)
	// Custom price: mistral-small-latest at 10x.
	w.cfg.Prices = map[string]config.ModelPrice{"mistral-small-latest": {InputPerM: 1.5, OutputPerM: 6}}
	if err := w.client.SetSpendLimit(context.Background(), 40, false); err != nil {
		t.Fatal(err)
	}
	w.addUsage(t, "ml-workspace", "mystery-model", 5, 5)
	w.addUsage(t, "ml-workspace", "codestral-latest::2508", 1_000_000, 0)
	res, rep := w.run(t)
	if res.Failed {
		t.Errorf("an unpriced model failed the run: %v", rep.Errors)
	}
	if dev := rep.Workspaces[0]; !near(dev.SpendUSD, 420) {
		t.Errorf("dev spend with config prices = %v, want 420", dev.SpendUSD)
	}
	if ml := rep.Workspaces[1]; !near(ml.SpendUSD, 1.5) {
		t.Errorf("ml spend = %v, want 1.50 (versioned model priced by its base name)", ml.SpendUSD)
	}
	if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "mystery-model") {
		t.Errorf("errors = %v, want one about mystery-model", rep.Errors)
	}
	var org []Alert
	for _, a := range w.q.take() {
		if a.Kind == AlertOrgLimit {
			org = append(org, a)
		}
	}
	if len(org) != 1 || org[0].Severity != "critical" || org[0].Dedupe != "budget/org-limit/completion/2026-11" {
		t.Fatalf("org limit alerts = %+v", org)
	}
	if !rep.OrgLimits[0].Reached || rep.OrgLimits[0].LimitUSD == nil || *rep.OrgLimits[0].LimitUSD != 40 {
		t.Errorf("org limit = %+v", rep.OrgLimits[0])
	}
}

func TestBudgetFailures(t *testing.T) {
	cases := []struct {
		name    string
		mutate  func(w *world)
		failed  bool
		errPart string
		alerted bool // dev's 80% alert still raised
	}{
		{name: "declared workspace missing on the platform", mutate: func(w *world) {
			w.cfg.Workspaces = append(w.cfg.Workspaces, config.Workspace{Name: "research", MonthlyBudgetUSD: 10})
		}, failed: true, errPart: "workspace research: workspace not found", alerted: true},
		{name: "usage endpoint failing for one workspace", mutate: func(w *world) {
			w.sb.InjectFault(sandbox.Fault{Route: "GET /v1/admin/usage", Status: 500, Times: 1})
		}, failed: true, errPart: "workspace dev-workspace: usage", alerted: false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			c.mutate(w)
			res, rep := w.run(t)
			if res.Failed != c.failed {
				t.Fatalf("failed = %v, want %v (%v)", res.Failed, c.failed, rep.Errors)
			}
			if len(rep.Errors) == 0 || !strings.Contains(strings.Join(rep.Errors, "\n"), c.errPart) {
				t.Fatalf("errors = %v, want one containing %q", rep.Errors, c.errPart)
			}
			// The other workspaces are still polled and alerted.
			if got := slices.Contains(dedupes(w.q.take()), "budget/dev-workspace/2026-11/0.8"); got != c.alerted {
				t.Fatalf("dev alerted = %v, want %v", got, c.alerted)
			}
			if len(rep.Workspaces) != len(w.cfg.Workspaces) {
				t.Fatalf("%d workspaces reported, want %d", len(rep.Workspaces), len(w.cfg.Workspaces))
			}
		})
	}
}

func TestForecastAndBounds(t *testing.T) {
	cases := []struct {
		now      time.Time
		spend    float64
		forecast float64
	}{
		{now: time.Date(2026, 11, 16, 0, 0, 0, 0, time.UTC), spend: 10, forecast: 20},
		{now: time.Date(2026, 2, 15, 0, 0, 0, 0, time.UTC), spend: 14, forecast: 28},
		{now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), spend: 5, forecast: 5},
	}
	for _, c := range cases {
		if f, _ := Forecast(c.spend, c.now); !near(f, c.forecast) {
			t.Errorf("Forecast(%v, %v) = %v, want %v", c.spend, c.now, f, c.forecast)
		}
	}
	s, e := MonthBounds(time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC))
	if !s.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) || !e.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("MonthBounds = %v, %v", s, e)
	}
}
