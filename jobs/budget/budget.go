// Package budget is mrbacd's spend polling (jobs.budget): per declared
// workspace, this month's spend from the usage endpoint (tokens × the
// configured prices) against monthly_budget_usd, threshold alerts once per
// (workspace, threshold, month), a month-end forecast from the run rate with
// an alert once per (workspace, month) when it exceeds the budget, and the
// organization's spend limit from the spend-limit endpoint.
//
// Alerts are queued through a Notifier with a dedupe id derived from the
// workspace, month and threshold, so a crash or a rerun never sends one twice
// and never loses one: the queue's dedupe is the guarantee, the journal's
// once-marks (MarkOnce) record which alerts a run raised first.
package budget

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/mistral"
)

// Platform is the part of the Mistral admin API the budget job uses
// (*mistral.Client implements it).
type Platform interface {
	ListAllWorkspaces(ctx context.Context) ([]mistral.Workspace, error)
	Usage(ctx context.Context, q mistral.UsageQuery) (mistral.Usage, error)
	SpendLimit(ctx context.Context) (mistral.SpendLimit, error)
}

// Journal records once-marks (*journal.DB implements it).
type Journal interface {
	MarkOnce(ctx context.Context, key string) (first bool, err error)
}

// Notifier durably queues an alert; enqueuing an alert whose Dedupe was
// queued before must be a no-op.
type Notifier interface {
	NotifyBudget(ctx context.Context, a Alert) error
}

// MinForecastElapsed is how much of the month must have passed before the
// run rate is trusted for a forecast alert: a few hours' spend extrapolated
// to a month is noise.
const MinForecastElapsed = 72 * time.Hour

// Job is the budget poll as a jobs.Runner.
type Job struct {
	Config   *config.Config
	Platform Platform
	// Journal may be nil: alerts are then still deduplicated by the
	// Notifier, but reports cannot say which are first.
	Journal Journal
	// Notifier may be nil: alerts are then only in the result.
	Notifier Notifier
	Logger   *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

var _ jobs.Runner = (*Job)(nil)

// AlertKind says what an alert is about.
type AlertKind string

// Alert kinds.
const (
	// AlertThreshold: spend crossed a fraction of the budget.
	AlertThreshold AlertKind = "threshold"
	// AlertForecast: the month-end forecast exceeds the budget.
	AlertForecast AlertKind = "forecast"
	// AlertOrgLimit: the organization reached its monthly spend limit.
	AlertOrgLimit AlertKind = "org_limit"
)

// Alert is one budget alert.
type Alert struct {
	Kind AlertKind `json:"kind"`
	// Severity is critical, warning or info.
	Severity  string `json:"severity"`
	Workspace string `json:"workspace,omitempty"`
	// Month is "YYYY-MM" (UTC).
	Month string `json:"month"`
	// Threshold is the fraction crossed (AlertThreshold).
	Threshold   float64 `json:"threshold,omitempty"`
	SpendUSD    float64 `json:"spend_usd"`
	BudgetUSD   float64 `json:"budget_usd,omitempty"`
	ForecastUSD float64 `json:"forecast_usd,omitempty"`
	// Dedupe is the alert's identity: the same alert is never sent twice.
	Dedupe string `json:"dedupe"`
	// OrgLimitUSD is the organization's monthly spend limit (0: none or unknown).
	OrgLimitUSD float64 `json:"org_limit_usd,omitempty"`
	// First is true when this run raised the alert first (journal once-mark).
	First bool `json:"first"`
	// Text is the human sentence.
	Text string `json:"text"`
}

// ModelSpend is one model's tokens and cost this month.
type ModelSpend struct {
	Model            string  `json:"model"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	USD              float64 `json:"usd"`
	// Priced is false when neither the config, the defaults nor the usage
	// answer know the model's price (its cost counts as 0).
	Priced bool `json:"priced"`
}

// WorkspaceSpend is one workspace's month.
type WorkspaceSpend struct {
	Workspace   string  `json:"workspace"`
	WorkspaceID string  `json:"workspace_id,omitempty"`
	SpendUSD    float64 `json:"spend_usd"`
	BudgetUSD   float64 `json:"budget_usd"`
	// Fraction is spend / budget (0 without a budget).
	Fraction    float64      `json:"fraction"`
	ForecastUSD float64      `json:"forecast_usd"`
	Models      []ModelSpend `json:"models,omitempty"`
	// Crossed lists the thresholds spend has crossed.
	Crossed []float64 `json:"crossed,omitempty"`
	// PlatformLimit is the workspace's monthly spend limit on the platform
	// (nil when the platform sent none or could not be listed); LimitDrift
	// says how it differs from BudgetUSD ("" when they agree).
	PlatformLimit *PlatformLimit `json:"platform_limit,omitempty"`
	LimitDrift    string         `json:"limit_drift,omitempty"`
	Error         string         `json:"error,omitempty"`
}

// OrgLimit is the organization's spend limit of one category.
type OrgLimit struct {
	Category       string   `json:"category"`
	UsageUSD       float64  `json:"usage"`
	LimitUSD       *float64 `json:"limit,omitempty"`
	NoMonthlyLimit bool     `json:"no_monthly_limit"`
	Reached        bool     `json:"reached"`
	Currency       string   `json:"currency,omitempty"`
}

// Report is the budget job's structured result (jobs.Result.Details).
type Report struct {
	At    time.Time `json:"at"`
	Month string    `json:"month"`
	// Elapsed is the fraction of the month gone.
	Elapsed    float64          `json:"elapsed"`
	Workspaces []WorkspaceSpend `json:"workspaces"`
	OrgLimits  []OrgLimit       `json:"org_limits,omitempty"`
	Alerts     []Alert          `json:"alerts,omitempty"`
	Errors     []string         `json:"errors,omitempty"`
}

func (j *Job) now() time.Time {
	if j.Now != nil {
		return j.Now().UTC()
	}
	return time.Now().UTC()
}

func (j *Job) logger() *slog.Logger {
	if j.Logger != nil {
		return j.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// MonthBounds returns the start of t's month and of the next one, in UTC.
func MonthBounds(t time.Time) (start, end time.Time) {
	t = t.UTC()
	start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 1, 0)
}

// Forecast extrapolates spend so far to the month's end from the run rate;
// it returns spend unchanged when no time has passed.
func Forecast(spend float64, now time.Time) (forecast, elapsed float64) {
	start, end := MonthBounds(now)
	elapsed = float64(now.Sub(start)) / float64(end.Sub(start))
	if elapsed <= 0 {
		return spend, 0
	}
	return spend / elapsed, elapsed
}

// Spend prices a month of usage: the config's prices (with the built-in
// defaults), else the prices the usage answer carries. A model name's
// "::version" suffix is ignored for pricing.
func Spend(cfg *config.Config, u mistral.Usage) (float64, []ModelSpend) {
	platform := map[string]mistral.Price{}
	for _, p := range u.Prices {
		platform[p.Model] = p
	}
	var total float64
	var out []ModelSpend
	totals := u.Totals()
	for _, model := range u.Models() {
		mu := totals[model]
		base, _, _ := strings.Cut(model, "::")
		ms := ModelSpend{Model: model, PromptTokens: mu.PromptTokens, CompletionTokens: mu.CompletionTokens}
		if p, ok := cfg.Price(base); ok {
			ms.USD = (float64(mu.PromptTokens)*p.InputPerM + float64(mu.CompletionTokens)*p.OutputPerM) / 1e6
			ms.Priced = true
		} else if p, ok := platform[model]; ok {
			ms.USD, ms.Priced = p.Cost(mu.PromptTokens, mu.CompletionTokens), true
		} else if p, ok := platform[base]; ok {
			ms.USD, ms.Priced = p.Cost(mu.PromptTokens, mu.CompletionTokens), true
		}
		total += ms.USD
		out = append(out, ms)
	}
	return total, out
}

// thresholds returns the configured thresholds, sorted, or the defaults.
func (j *Job) thresholds() []float64 {
	ts := append([]float64(nil), j.Config.Jobs.Budget.Thresholds...)
	if len(ts) == 0 {
		ts = config.DefaultThresholds()
	}
	sort.Float64s(ts)
	return ts
}

// Run polls once. An error means nothing could be polled (the workspace list
// or the config is unusable); a workspace that could not be polled makes
// the result failed.
func (j *Job) Run(ctx context.Context, req jobs.Request) (jobs.Result, error) {
	if j.Config == nil || j.Platform == nil {
		return jobs.Result{}, errors.New("budget: not configured (no config or platform)")
	}
	cfg := j.Config
	now := j.now()
	log := j.logger().With("job", jobs.Budget, "run_id", req.RunID)
	month := now.Format("2006-01")
	monthStart, _ := MonthBounds(now)
	forecastOK := now.Sub(monthStart) >= MinForecastElapsed
	rep := &Report{At: now, Month: month}
	_, rep.Elapsed = Forecast(0, now)

	uuids, platform, listErr, err := j.resolve(ctx)
	if err != nil {
		return jobs.Result{}, err
	}
	if listErr != nil {
		rep.Errors = append(rep.Errors, fmt.Sprintf("workspace spend limits: list workspaces: %v", listErr))
		log.Error("budget workspace listing failed", "err", listErr)
	}
	for _, cw := range cfg.Workspaces {
		ws := WorkspaceSpend{Workspace: cw.Name, BudgetUSD: cw.MonthlyBudgetUSD, WorkspaceID: uuids[cw.Name]}
		if w, ok := platform[ws.WorkspaceID]; ok {
			ws.PlatformLimit = PlatformLimitOf(w.SpendLimit)
			if diff, ok := LimitDiffers(cw.MonthlyBudgetUSD, w.SpendLimit); ok {
				ws.LimitDrift = diff
			}
		}
		if ws.WorkspaceID == "" {
			ws.Error = "workspace not found on the platform"
			rep.Errors = append(rep.Errors, fmt.Sprintf("workspace %s: %s", cw.Name, ws.Error))
			rep.Workspaces = append(rep.Workspaces, ws)
			continue
		}
		u, err := j.Platform.Usage(ctx, mistral.UsageQuery{Month: int(now.Month()), Year: now.Year(), WorkspaceID: ws.WorkspaceID})
		if err != nil {
			if ctx.Err() != nil {
				return jobs.Result{}, fmt.Errorf("budget: usage of %s: %w", cw.Name, err)
			}
			ws.Error = err.Error()
			rep.Errors = append(rep.Errors, fmt.Sprintf("workspace %s: usage: %v", cw.Name, err))
			rep.Workspaces = append(rep.Workspaces, ws)
			log.Error("budget usage failed", "workspace", cw.Name, "err", err)
			continue
		}
		ws.SpendUSD, ws.Models = Spend(cfg, u)
		ws.ForecastUSD, _ = Forecast(ws.SpendUSD, now)
		if ws.BudgetUSD > 0 {
			ws.Fraction = ws.SpendUSD / ws.BudgetUSD
			for _, t := range j.thresholds() {
				if ws.SpendUSD >= t*ws.BudgetUSD {
					ws.Crossed = append(ws.Crossed, t)
				}
			}
			rep.Alerts = append(rep.Alerts, workspaceAlerts(ws, month, forecastOK)...)
		}
		for _, m := range ws.Models {
			if !m.Priced {
				rep.Errors = append(rep.Errors, fmt.Sprintf("workspace %s: no price for model %s (set prices.%s in the config); its spend counts as 0", cw.Name, m.Model, m.Model))
			}
		}
		log.Info("budget workspace", "workspace", cw.Name, "spend_usd", round2(ws.SpendUSD), "budget_usd", ws.BudgetUSD,
			"forecast_usd", round2(ws.ForecastUSD))
		rep.Workspaces = append(rep.Workspaces, ws)
	}

	if sl, err := j.Platform.SpendLimit(ctx); err != nil {
		if ctx.Err() != nil {
			return jobs.Result{}, fmt.Errorf("budget: spend limit: %w", err)
		}
		rep.Errors = append(rep.Errors, fmt.Sprintf("organization spend limit: %v", err))
		log.Error("budget spend limit failed", "err", err)
	} else {
		limits := sl.Categories()
		cats := make([]string, 0, len(limits))
		for c := range limits {
			cats = append(cats, c)
		}
		sort.Strings(cats)
		for _, c := range cats {
			e := limits[c]
			ol := OrgLimit{Category: c, UsageUSD: e.Usage, LimitUSD: e.UsageLimit, NoMonthlyLimit: e.NoMonthlyLimit,
				Reached: e.MonthlyLimitReached, Currency: sl.Limits.Currency}
			rep.OrgLimits = append(rep.OrgLimits, ol)
			if ol.Reached {
				rep.Alerts = append(rep.Alerts, Alert{Kind: AlertOrgLimit, Severity: "critical", Month: month,
					SpendUSD: ol.UsageUSD, BudgetUSD: deref(ol.LimitUSD), Dedupe: "budget/org-limit/" + c + "/" + month,
					Text: fmt.Sprintf("The organization reached its monthly %s spend limit (%s of %s): requests are refused until the limit is raised or the month ends.",
						c, usd(ol.UsageUSD), usd(deref(ol.LimitUSD)))})
			}
		}
	}

	var orgLimit float64
	for _, ol := range rep.OrgLimits {
		if ol.Category == "completion" && !ol.NoMonthlyLimit {
			orgLimit = deref(ol.LimitUSD)
		}
	}
	for i := range rep.Alerts {
		rep.Alerts[i].OrgLimitUSD = orgLimit
	}
	if req.DryRun {
		// Report only: nothing queued, no once-marks.
		return jobs.Result{Failed: hasPollError(rep), Summary: summary(rep) + " (dry run: nothing sent)", Details: rep}, nil
	}
	if err := j.raise(ctx, log, rep); err != nil {
		return jobs.Result{Failed: true, Summary: summary(rep), Details: rep}, err
	}
	return jobs.Result{Failed: hasPollError(rep), Summary: summary(rep), Details: rep}, nil
}

// hasPollError reports whether a workspace or the spend limit could not be
// polled (an unpriced model alone is a warning, not a failure).
func hasPollError(rep *Report) bool {
	for _, e := range rep.Errors {
		if !strings.Contains(e, "no price for model") {
			return true
		}
	}
	return false
}

// resolve maps each config workspace to its platform uuid and returns the
// platform's workspaces by uuid (their spend_limit). The listing is read
// every run; when it fails and the config names every uuid, the poll goes
// on without the platform's limits (listErr says why).
func (j *Job) resolve(ctx context.Context) (uuids map[string]string, byUUID map[string]mistral.Workspace, listErr, err error) {
	uuids = map[string]string{}
	need := false
	for _, cw := range j.Config.Workspaces {
		if cw.UUID == "" {
			need = true
		}
	}
	ws, lerr := j.Platform.ListAllWorkspaces(ctx)
	if lerr != nil {
		if need || ctx.Err() != nil {
			return nil, nil, nil, fmt.Errorf("budget: list workspaces: %w", lerr)
		}
		for _, cw := range j.Config.Workspaces {
			uuids[cw.Name] = cw.UUID
		}
		return uuids, nil, lerr, nil
	}
	byName := map[string]string{}
	byUUID = map[string]mistral.Workspace{}
	for _, w := range ws {
		byUUID[w.UUID] = w
		if _, dup := byName[w.Name]; !dup {
			byName[w.Name] = w.UUID
		}
	}
	for _, cw := range j.Config.Workspaces {
		if cw.UUID != "" {
			if _, ok := byUUID[cw.UUID]; ok {
				uuids[cw.Name] = cw.UUID
			}
			continue
		}
		uuids[cw.Name] = byName[cw.Name]
	}
	return uuids, byUUID, nil, nil
}

// workspaceAlerts returns the alerts ws warrants: the highest threshold
// crossed (lower ones are subsumed: each threshold alerts at most once a
// month), and the forecast when it exceeds the budget before spend does.
func workspaceAlerts(ws WorkspaceSpend, month string, forecastOK bool) []Alert {
	var out []Alert
	if n := len(ws.Crossed); n > 0 {
		t := ws.Crossed[n-1]
		sev := "info"
		switch {
		case t >= 1:
			sev = "critical"
		case t >= 0.8:
			sev = "warning"
		}
		text := fmt.Sprintf("Workspace %s has spent %s of its %s monthly budget (%s) in %s, crossing %s.",
			ws.Workspace, usd(ws.SpendUSD), usd(ws.BudgetUSD), pct(ws.Fraction), month, pct(t))
		if ws.SpendUSD < ws.BudgetUSD {
			text += fmt.Sprintf(" At this rate the month ends at %s.", usd(ws.ForecastUSD))
		}
		out = append(out, Alert{Kind: AlertThreshold, Severity: sev, Workspace: ws.Workspace, Month: month, Threshold: t,
			SpendUSD: ws.SpendUSD, BudgetUSD: ws.BudgetUSD, ForecastUSD: ws.ForecastUSD,
			Dedupe: fmt.Sprintf("budget/%s/%s/%s", ws.Workspace, month, thresholdID(t)), Text: text})
	}
	if forecastOK && ws.SpendUSD < ws.BudgetUSD && ws.ForecastUSD > ws.BudgetUSD {
		out = append(out, Alert{Kind: AlertForecast, Severity: "warning", Workspace: ws.Workspace, Month: month,
			SpendUSD: ws.SpendUSD, BudgetUSD: ws.BudgetUSD, ForecastUSD: ws.ForecastUSD,
			Dedupe: fmt.Sprintf("budget-forecast/%s/%s", ws.Workspace, month),
			Text: fmt.Sprintf("Workspace %s is on course to spend %s in %s, over its %s budget (%s spent so far).",
				ws.Workspace, usd(ws.ForecastUSD), month, usd(ws.BudgetUSD), usd(ws.SpendUSD))})
	}
	return out
}

// raise queues every alert (the queue deduplicates) and then records its
// once-mark; a crash in between re-queues (a no-op) instead of losing it.
func (j *Job) raise(ctx context.Context, log *slog.Logger, rep *Report) error {
	for i := range rep.Alerts {
		a := &rep.Alerts[i]
		if j.Notifier != nil {
			if err := j.Notifier.NotifyBudget(ctx, *a); err != nil {
				return fmt.Errorf("budget: queue alert %s: %w", a.Dedupe, err)
			}
		}
		if j.Journal != nil {
			first, err := j.Journal.MarkOnce(ctx, a.Dedupe)
			if err != nil {
				return fmt.Errorf("budget: %w", err)
			}
			a.First = first
		}
		if a.First {
			log.Warn("budget alert", "kind", string(a.Kind), "workspace", a.Workspace, "month", a.Month,
				"threshold", a.Threshold, "spend_usd", round2(a.SpendUSD), "budget_usd", a.BudgetUSD, "forecast_usd", round2(a.ForecastUSD))
		}
	}
	return nil
}

// Totals sums spend and budgets over the report's workspaces and counts
// the alerts marked First (sent, or to be sent, for the first time).
func (r *Report) Totals() (spendUSD, budgetUSD float64, first int) {
	for _, w := range r.Workspaces {
		spendUSD += w.SpendUSD
		budgetUSD += w.BudgetUSD
	}
	for _, a := range r.Alerts {
		if a.First {
			first++
		}
	}
	return spendUSD, budgetUSD, first
}

func summary(r *Report) string {
	total, budget, first := r.Totals()
	s := fmt.Sprintf("%s: %s spent of %s budgeted across %d workspaces; %d alerts (%d new)",
		r.Month, usd(total), usd(budget), len(r.Workspaces), len(r.Alerts), first)
	if len(r.Errors) > 0 {
		s += fmt.Sprintf("; %d errors", len(r.Errors))
	}
	return s
}

// thresholdID formats a threshold for ids: 0.8 → "0.8", 1 → "1".
func thresholdID(t float64) string { return fmt.Sprintf("%g", t) }

func usd(v float64) string { return fmt.Sprintf("$%.2f", v) }

func pct(f float64) string { return fmt.Sprintf("%.0f%%", f*100) }

func round2(v float64) float64 { return math.Round(v*100) / 100 }

func deref(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}
