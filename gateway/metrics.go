package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus series. Labels never carry tokens.
type metrics struct {
	requests *prometheus.CounterVec   // client, model, status
	tokens   *prometheus.CounterVec   // client, workspace
	usd      *prometheus.CounterVec   // client, workspace
	overhead *prometheus.HistogramVec // route
	upstream *prometheus.CounterVec   // workspace, event (key_refresh_401, retry)
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "requests_total",
			Help: "Gateway requests by client, model and HTTP status.",
		}, []string{"client", "model", "status"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "tokens_total",
			Help: "Tokens used (settled) by client and workspace.",
		}, []string{"client", "workspace"}),
		usd: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "usd_total",
			Help: "Spend in USD at configured prices (settled) by client and workspace.",
		}, []string{"client", "workspace"}),
		overhead: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "overhead_seconds",
			Help:    "Time the gateway spends on a request besides waiting on upstream.",
			Buckets: prometheus.ExponentialBuckets(5e-6, 2, 14), // 5µs .. 41ms
		}, []string{"route"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "upstream_events_total",
			Help: "Upstream key events by workspace: unauthorized (401 seen), retried (request retried with a refreshed key).",
		}, []string{"workspace", "event"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.tokens, m.usd, m.overhead, m.upstream} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
