package gateway

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus series. Labels never carry tokens.
type metrics struct {
	requests *prometheus.CounterVec   // client, model, status
	tokens   *prometheus.CounterVec   // client, workspace
	usd      *prometheus.CounterVec   // client, workspace
	cached   *prometheus.CounterVec   // client, workspace
	overhead *prometheus.HistogramVec // route
	upstream *prometheus.CounterVec   // workspace, event (key_refresh_401, retry)
	hangups  *prometheus.CounterVec   // outcome (settled, charged_reservation)

	// Children resolved once and reused: a request's metrics then cost a
	// map lookup each instead of hashing and validating its label values.
	overheadBy map[string]prometheus.Observer // route → child
	reqs       sync.Map                       // reqLabels → prometheus.Counter
	spend      sync.Map                       // spendLabels → *spendCounters
}

// routes are the overhead histogram's route label values.
var routes = []string{"chat", "chat_stream", "embeddings", "models", "other"}

type reqLabels struct {
	client, model string
	status        int
}

type spendLabels struct{ client, workspace string }

type spendCounters struct{ tokens, usd, cached prometheus.Counter }

// observeOverhead records one request's own time under its route.
func (m *metrics) observeOverhead(route string, seconds float64) {
	o, ok := m.overheadBy[route]
	if !ok {
		o = m.overhead.WithLabelValues(route)
	}
	o.Observe(seconds)
}

// request counts one request.
func (m *metrics) request(client, model string, status int) {
	k := reqLabels{client, model, status}
	c, ok := m.reqs.Load(k)
	if !ok {
		c, _ = m.reqs.LoadOrStore(k, m.requests.WithLabelValues(client, model, statusLabel(status)))
	}
	c.(prometheus.Counter).Inc()
}

// spent adds settled tokens (cached: the prompt tokens among them served
// from the upstream's cache) and USD.
func (m *metrics) spent(client, workspace string, tokens, cached int64, usd float64) {
	k := spendLabels{client, workspace}
	c, ok := m.spend.Load(k)
	if !ok {
		c, _ = m.spend.LoadOrStore(k, &spendCounters{m.tokens.WithLabelValues(client, workspace), m.usd.WithLabelValues(client, workspace),
			m.cached.WithLabelValues(client, workspace)})
	}
	sc := c.(*spendCounters)
	sc.tokens.Add(float64(tokens))
	sc.usd.Add(usd)
	if cached > 0 {
		sc.cached.Add(float64(cached))
	}
}

// hangup counts a request whose client went away after the upstream
// accepted it: "settled" when its usage was still learnt, else
// "charged_reservation".
func (m *metrics) hangup(outcome string) { m.hangups.WithLabelValues(outcome).Inc() }

// statusLabels holds the status label of every HTTP status code.
var statusLabels = func() (t [600]string) {
	for i := 100; i < len(t); i++ {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusLabel(code int) string {
	if code >= 100 && code < len(statusLabels) {
		return statusLabels[code]
	}
	return strconv.Itoa(code)
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
			Help: "Spend in USD at configured prices (settled; cached prompt tokens at 10% of the input price) by client and workspace.",
		}, []string{"client", "workspace"}),
		cached: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "cached_tokens_total",
			Help: "Prompt tokens the upstream served from its prompt cache (part of tokens_total), by client and workspace.",
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
		hangups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "hangups_total",
			Help: "Requests whose client went away after the upstream accepted them, by outcome: settled (usage learnt from the rest of the answer) or charged_reservation (usage unknown: the whole reservation charged).",
		}, []string{"outcome"}),
	}
	m.overheadBy = make(map[string]prometheus.Observer, len(routes))
	for _, r := range routes {
		m.overheadBy[r] = m.overhead.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.tokens, m.usd, m.cached, m.overhead, m.upstream, m.hangups} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
