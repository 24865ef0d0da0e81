// Package metrics holds mrbacd's Prometheus metrics and the HTTP listener
// that serves them with /healthz.
//
// Counters and histograms are fed by hooks the daemon calls (ObserveRun,
// ObserveRotation, ObserveReload); gauges that describe the current state
// (age of each managed key, next scheduled run per job, notifications
// pending) are read from Sources at scrape time, so they are never stale.
// No metric carries key material: labels are job, result, outcome and key
// names only.
package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Sources are read at scrape time. Any of them may be nil.
type Sources struct {
	// KeyCreated returns, per managed key name, when its current platform key
	// was created (keys of unknown age are left out).
	KeyCreated func(ctx context.Context) (map[string]time.Time, error)
	// NextRuns returns the next scheduled fire per job (zero: not scheduled).
	NextRuns func() map[string]time.Time
	// PendingNotifications counts outbox messages not yet delivered.
	PendingNotifications func(ctx context.Context) (int, error)
}

// Metrics is mrbacd's registry and instruments.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger
	now func() time.Time

	jobRuns     *prometheus.CounterVec
	jobDuration *prometheus.HistogramVec
	rotations   *prometheus.CounterVec
	reloads     *prometheus.CounterVec
	scrapeErrs  *prometheus.CounterVec
	leader      *leaderMetrics

	mu  sync.RWMutex
	src Sources

	// collectors are mrbacd's own, for Descs.
	collectors []prometheus.Collector
}

var (
	keyAgeDesc = prometheus.NewDesc("mrbacd_key_age_days",
		"Age in days of each managed key's current platform key.", []string{"key"}, nil)
	nextRunDesc = prometheus.NewDesc("mrbacd_job_next_run_timestamp_seconds",
		"Unix time of each job's next scheduled run.", []string{"job"}, nil)
	pendingDesc = prometheus.NewDesc("mrbacd_notifications_pending",
		"Notifications in the outbox not yet delivered.", nil, nil)
)

// New returns the metrics of a daemon of the given version; logger may be nil.
func New(version string, logger *slog.Logger) *Metrics {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: logger,
		now: time.Now,
		jobRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mrbacd_job_runs_total", Help: "Job runs by job and result (ok, failed, panicked, canceled).",
		}, []string{"job", "result"}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mrbacd_job_duration_seconds", Help: "Duration of job runs by job and result.",
			Buckets: []float64{0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600},
		}, []string{"job", "result"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mrbacd_rotations_total", Help: "Key rotations that ended, by outcome (rotated, bootstrapped, failed).",
		}, []string{"outcome"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mrbacd_config_reloads_total", Help: "Config reload attempts by result (ok, invalid).",
		}, []string{"result"}),
		scrapeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mrbacd_metrics_source_errors_total", Help: "Errors reading a metrics source at scrape time.",
		}, []string{"source"}),
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mrbacd_build_info", Help: "Always 1; the version label says which build runs.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	info.Set(1)
	m.collectors = []prometheus.Collector{m.jobRuns, m.jobDuration, m.rotations, m.reloads, m.scrapeErrs, info, stateCollector{m}}
	m.reg.MustRegister(m.jobRuns, m.jobDuration, m.rotations, m.reloads, m.scrapeErrs, info,
		stateCollector{m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.leader = newLeaderMetrics(m.reg)
	m.collectors = append(m.collectors, m.leader.collectors()...)
	return m
}

// Registry returns the registry (for tests and extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetSources replaces the scrape-time sources (at start and on reload).
func (m *Metrics) SetSources(src Sources) {
	m.mu.Lock()
	m.src = src
	m.mu.Unlock()
}

// ObserveRun counts a finished job run.
func (m *Metrics) ObserveRun(job, result string, d time.Duration) {
	m.jobRuns.WithLabelValues(job, result).Inc()
	m.jobDuration.WithLabelValues(job, result).Observe(d.Seconds())
}

// ObserveRotation counts a rotation that ended with outcome.
func (m *Metrics) ObserveRotation(outcome string) {
	m.rotations.WithLabelValues(outcome).Inc()
}

// ObserveReload counts a reload attempt.
func (m *Metrics) ObserveReload(ok bool) {
	r := "ok"
	if !ok {
		r = "invalid"
	}
	m.reloads.WithLabelValues(r).Inc()
}

// stateCollector reads Sources at scrape time.
type stateCollector struct{ m *Metrics }

// Describe implements prometheus.Collector.
func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keyAgeDesc
	ch <- nextRunDesc
	ch <- pendingDesc
}

// Collect implements prometheus.Collector: it reads the sources now.
func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.RLock()
	src := c.m.src
	c.m.mu.RUnlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if src.KeyCreated != nil {
		created, err := src.KeyCreated(ctx)
		if err != nil {
			c.m.sourceError("key_created", err)
		}
		now := c.m.now()
		for key, t := range created {
			if t.IsZero() {
				continue
			}
			ch <- prometheus.MustNewConstMetric(keyAgeDesc, prometheus.GaugeValue, now.Sub(t).Hours()/24, key)
		}
	}
	if src.NextRuns != nil {
		for job, t := range src.NextRuns() {
			if t.IsZero() {
				continue
			}
			ch <- prometheus.MustNewConstMetric(nextRunDesc, prometheus.GaugeValue, float64(t.UnixNano())/1e9, job)
		}
	}
	if src.PendingNotifications != nil {
		n, err := src.PendingNotifications(ctx)
		if err != nil {
			c.m.sourceError("notifications_pending", err)
		} else {
			ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(n))
		}
	}
}

func (m *Metrics) sourceError(source string, err error) {
	m.scrapeErrs.WithLabelValues(source).Inc()
	m.log.Warn("metrics source failed", "source", source, "err", err)
}
