package metrics

import (
	"context"
	"encoding/json"
	"regexp"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/journal"
)

// GaugeJournal is what the state gauges read from the journal at scrape
// time. *journal.DB implements it.
type GaugeJournal interface {
	LastDoneRotation(ctx context.Context, keyName string) (journal.Rotation, bool, error)
	RotationsForKey(ctx context.Context, keyName string, limit int) ([]journal.Rotation, error)
	OpenFindings(ctx context.Context, scope string) ([]journal.Finding, error)
	Runs(ctx context.Context, f journal.RunFilter) ([]journal.Run, error)
}

// GaugeSources feed StateGauges. Config and Journal are required.
type GaugeSources struct {
	Journal GaugeJournal
	// Config returns the configuration in force (it changes on reload).
	Config func() *config.Config
	// KeyCreated optionally returns when each managed key's current
	// platform key was created (the platform's answer); without it, or for
	// a key it leaves out, the journal's last done rotation says.
	KeyCreated func(ctx context.Context) (map[string]time.Time, error)
	// FindingScopes are the findings scopes counted (default "audit").
	FindingScopes []string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Metric names of the state gauges (the dashboard and the alert rules use
// them; a test checks every name they query is exported).
var (
	managedKeyAgeDesc = prometheus.NewDesc("mrbacd_managed_key_age_seconds",
		"Age of each managed key's current platform key.", []string{"key", "workspace"}, nil)
	managedKeyPeriodDesc = prometheus.NewDesc("mrbacd_managed_key_rotation_period_seconds",
		"Each managed key's rotate_every.", []string{"key", "workspace"}, nil)
	managedKeyNextDesc = prometheus.NewDesc("mrbacd_managed_key_next_rotation_timestamp_seconds",
		"Unix time at which each managed key is due for rotation.", []string{"key", "workspace"}, nil)
	managedKeyExpiryDesc = prometheus.NewDesc("mrbacd_managed_key_expiry_timestamp_seconds",
		"Unix time at which each managed key's current platform key expires (mrbacd sets rotate_every + expiration_grace).", []string{"key", "workspace"}, nil)
	managedKeyFailingDesc = prometheus.NewDesc("mrbacd_managed_key_rotation_failing",
		"1 when the latest rotation attempt of the key failed, else 0.", []string{"key", "workspace"}, nil)
	findingsDesc = prometheus.NewDesc("mrbacd_findings_open",
		"Open findings by kind and severity.", []string{"kind", "severity"}, nil)
	budgetUsedDesc = prometheus.NewDesc("mrbacd_budget_used_ratio",
		"Spend this month over the workspace's monthly budget, at the last budget run.", []string{"workspace"}, nil)
	budgetForecastDesc = prometheus.NewDesc("mrbacd_budget_forecast_ratio",
		"Forecast spend at the month's end over the monthly budget, at the last budget run.", []string{"workspace"}, nil)
	budgetSpendDesc = prometheus.NewDesc("mrbacd_budget_spend_usd",
		"Spend this month in USD, at the last budget run.", []string{"workspace"}, nil)
	lastSuccessDesc = prometheus.NewDesc("mrbacd_job_last_success_timestamp_seconds",
		"Unix time at which each job last finished successfully.", []string{"job"}, nil)
	jobPeriodDesc = prometheus.NewDesc("mrbacd_job_period_seconds",
		"Interval between two scheduled runs of each job.", []string{"job"}, nil)
)

// StateGauges is a collector of the gauges that describe mrbacd's state,
// read from the journal and the config at each scrape, so never stale.
type StateGauges struct {
	src GaugeSources
	m   *Metrics
}

// RegisterStateGauges registers the state gauges fed by src.
func (m *Metrics) RegisterStateGauges(src GaugeSources) *StateGauges {
	if src.Now == nil {
		src.Now = time.Now
	}
	if len(src.FindingScopes) == 0 {
		src.FindingScopes = []string{"audit"}
	}
	g := &StateGauges{src: src, m: m}
	m.reg.MustRegister(g)
	m.collectors = append(m.collectors, g)
	return g
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// Names returns the names of the metrics mrbacd's own collectors export
// (whether or not they have a value yet), sorted; histograms are named
// without their _bucket, _sum and _count suffixes.
func (m *Metrics) Names() []string {
	return DescribedNames(m.collectors...)
}

// DescribedNames returns the sorted metric names the collectors describe.
func DescribedNames(cs ...prometheus.Collector) []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range cs {
			c.Describe(ch)
		}
		close(ch)
	}()
	seen := map[string]bool{}
	for d := range ch {
		if mm := fqNameRE.FindStringSubmatch(d.String()); mm != nil {
			seen[mm[1]] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Describe implements prometheus.Collector.
func (g *StateGauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{managedKeyAgeDesc, managedKeyPeriodDesc, managedKeyNextDesc, managedKeyExpiryDesc,
		managedKeyFailingDesc, findingsDesc, budgetUsedDesc, budgetForecastDesc, budgetSpendDesc, lastSuccessDesc, jobPeriodDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (g *StateGauges) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if g.src.Config == nil || g.src.Journal == nil {
		return
	}
	cfg := g.src.Config()
	if cfg == nil {
		return
	}
	now := g.src.Now()
	g.keys(ctx, ch, cfg, now)
	g.findings(ctx, ch)
	g.budget(ctx, ch)
	g.jobs(ctx, ch, cfg, now)
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func (g *StateGauges) keys(ctx context.Context, ch chan<- prometheus.Metric, cfg *config.Config, now time.Time) {
	var created map[string]time.Time
	if g.src.KeyCreated != nil {
		var err error
		if created, err = g.src.KeyCreated(ctx); err != nil {
			g.m.sourceError("key_created", err)
		}
	}
	for _, k := range cfg.Keys {
		every := k.RotateEvery.D()
		if every <= 0 {
			every = config.DefaultRotateEvery
		}
		ch <- gauge(managedKeyPeriodDesc, every.Seconds(), k.Name, k.Workspace)
		if recent, err := g.src.Journal.RotationsForKey(ctx, k.Name, 1); err != nil {
			g.m.sourceError("rotations", err)
		} else {
			ch <- gauge(managedKeyFailingDesc, b2f(len(recent) == 1 && recent[0].Status == journal.StatusFailed), k.Name, k.Workspace)
		}
		at, ok := created[k.Name]
		if !ok || at.IsZero() {
			r, done, err := g.src.Journal.LastDoneRotation(ctx, k.Name)
			if err != nil {
				g.m.sourceError("rotations", err)
				continue
			}
			if !done {
				continue // age unknown: never rotated by mrbacd and the platform not asked
			}
			at = r.StartedAt
		}
		ch <- gauge(managedKeyAgeDesc, now.Sub(at).Seconds(), k.Name, k.Workspace)
		ch <- gauge(managedKeyNextDesc, unix(at.Add(every)), k.Name, k.Workspace)
		grace := k.ExpirationGrace.D()
		if grace <= 0 {
			grace = config.DefaultExpirationGrace
		}
		ch <- gauge(managedKeyExpiryDesc, unix(at.Add(every+grace)), k.Name, k.Workspace)
	}
}

func (g *StateGauges) findings(ctx context.Context, ch chan<- prometheus.Metric) {
	type ks struct{ kind, sev string }
	counts := map[ks]int{}
	for _, scope := range g.src.FindingScopes {
		fs, err := g.src.Journal.OpenFindings(ctx, scope)
		if err != nil {
			g.m.sourceError("findings", err)
			return
		}
		for _, f := range fs {
			counts[ks{f.Kind, f.Severity}]++
		}
	}
	for k, n := range counts {
		ch <- gauge(findingsDesc, float64(n), k.kind, k.sev)
	}
}

// budgetRun is the part of a budget run's journaled result the gauges read.
type budgetRun struct {
	Details struct {
		Workspaces []struct {
			Workspace   string  `json:"workspace"`
			SpendUSD    float64 `json:"spend_usd"`
			BudgetUSD   float64 `json:"budget_usd"`
			ForecastUSD float64 `json:"forecast_usd"`
			Error       string  `json:"error"`
		} `json:"workspaces"`
	} `json:"details"`
}

func (g *StateGauges) budget(ctx context.Context, ch chan<- prometheus.Metric) {
	runs, err := g.src.Journal.Runs(ctx, journal.RunFilter{Job: "budget", Status: journal.RunOK, Limit: 1})
	if err != nil {
		g.m.sourceError("budget_runs", err)
		return
	}
	if len(runs) == 0 {
		return
	}
	var br budgetRun
	if err := json.Unmarshal([]byte(runs[0].Summary), &br); err != nil {
		g.m.sourceError("budget_runs", err)
		return
	}
	for _, w := range br.Details.Workspaces {
		if w.Error != "" {
			continue
		}
		ch <- gauge(budgetSpendDesc, w.SpendUSD, w.Workspace)
		if w.BudgetUSD > 0 {
			ch <- gauge(budgetUsedDesc, w.SpendUSD/w.BudgetUSD, w.Workspace)
			ch <- gauge(budgetForecastDesc, w.ForecastUSD/w.BudgetUSD, w.Workspace)
		}
	}
}

// Jobs the daemon schedules.
var scheduledJobs = []string{"rotate", "audit", "budget"}

func (g *StateGauges) jobs(ctx context.Context, ch chan<- prometheus.Metric, cfg *config.Config, now time.Time) {
	specs := map[string]struct {
		schedule string
		disabled bool
	}{
		"rotate": {cfg.Jobs.Rotate.Schedule, cfg.Jobs.Rotate.Disabled},
		"audit":  {cfg.Jobs.Audit.Schedule, cfg.Jobs.Audit.Disabled},
		"budget": {cfg.Jobs.Budget.Schedule, cfg.Jobs.Budget.Disabled},
	}
	loc, err := time.LoadLocation(cfg.Jobs.Timezone)
	if err != nil {
		loc = time.UTC
	}
	for _, job := range scheduledJobs {
		s := specs[job]
		if s.disabled || s.schedule == "" {
			continue
		}
		if p := period(s.schedule, now.In(loc)); p > 0 {
			ch <- gauge(jobPeriodDesc, p.Seconds(), job)
		}
	}
	for _, job := range scheduledJobs {
		runs, err := g.src.Journal.Runs(ctx, journal.RunFilter{Job: job, Status: journal.RunOK, Limit: 1})
		if err != nil {
			g.m.sourceError("runs", err)
			return
		}
		if len(runs) == 1 && !runs[0].FinishedAt.IsZero() {
			ch <- gauge(lastSuccessDesc, unix(runs[0].FinishedAt), job)
		}
	}
}

// period is the longest gap between the schedule's next few fires after now
// (a job due "twice within its period" is judged against the longest).
func period(spec string, now time.Time) time.Duration {
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return 0
	}
	var gaps []time.Duration
	t := s.Next(now)
	for range 8 {
		n := s.Next(t)
		if n.IsZero() {
			break
		}
		gaps = append(gaps, n.Sub(t))
		t = n
	}
	if len(gaps) == 0 {
		return 0
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] > gaps[j] })
	return gaps[0]
}
