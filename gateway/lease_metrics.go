package gateway

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrbacd/mrbacd/journal"
)

// leaseMetrics are the budget leases' series. Their labels are bounded:
// budget is a journal subject (a configured client or workspace name),
// window_kind one of day, hour, minute (never a window's date).
type leaseMetrics struct {
	held        *prometheus.GaugeVec   // budget, window_kind, unit
	fetches     *prometheus.CounterVec // outcome
	waits       prometheus.CounterFunc // Gateway.leaseWaits
	unavailable prometheus.Counter
	lost        prometheus.Counter
}

// Outcomes of a fetch (fetches_total).
const (
	fetchGranted = "granted" // the journal granted all that was asked
	fetchShort   = "short"   // it granted less (or nothing): the budget is near its end or held elsewhere
	fetchError   = "error"   // the journal could not be reached
)

// newLeaseMetrics builds and registers the lease series; waits reads the
// count of requests that waited for a fetch.
func newLeaseMetrics(reg prometheus.Registerer, waits func() float64) (*leaseMetrics, error) {
	m := &leaseMetrics{
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "budget_held",
			Help: "Budget this instance holds on lease from the journal (free, drawn by requests in flight, or spent and not yet reported), by budget (journal subject), window_kind (day, hour, minute) and unit (tokens, usd, requests).",
		}, []string{"budget", "window_kind", "unit"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "budget_fetches_total",
			Help: "Calls asking the journal for more budget, by outcome: granted (all asked), short (less or nothing: the budget is near its end or held by other instances), error (journal unreachable).",
		}, []string{"outcome"}),
		waits: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "budget_waits_total",
			Help: "Requests the budget held did not cover, which waited for a fetch from the journal.",
		}, waits),
		unavailable: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "budget_unavailable_total",
			Help: "Requests refused with 503: the budget journal was unreachable and the budget held was spent.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "mrbacd", Subsystem: "gateway", Name: "budget_lost_grants_total",
			Help: "Budget grants found expired at their renewal (their remainder was charged as spent).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.held, m.fetches, m.waits, m.unavailable, m.lost} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// fetched counts one call asking for budget (err: it failed; else
// granted against want).
func (m *leaseMetrics) fetched(err error, granted, want journal.Amounts) {
	if m == nil {
		return
	}
	switch {
	case err != nil:
		m.fetches.WithLabelValues(fetchError).Inc()
	case covers(granted, want):
		m.fetches.WithLabelValues(fetchGranted).Inc()
	default:
		m.fetches.WithLabelValues(fetchShort).Inc()
	}
}

// heldChanged moves the held gauges of k's budget from old to now (the
// holdings of one budget and window kind, such as this minute's and the
// next's, add up).
func (m *leaseMetrics) heldChanged(k holdKey, old, now journal.Amounts) {
	if m == nil || old == now {
		return
	}
	kind, _, _ := strings.Cut(k.window, ":")
	if d := now.Tokens - old.Tokens; d != 0 {
		m.held.WithLabelValues(k.subject, kind, "tokens").Add(float64(d))
	}
	if d := now.USD - old.USD; d != 0 {
		m.held.WithLabelValues(k.subject, kind, "usd").Add(d)
	}
	if d := now.Requests - old.Requests; d != 0 {
		m.held.WithLabelValues(k.subject, kind, "requests").Add(float64(d))
	}
}

// lostGrant counts a grant found expired.
func (m *leaseMetrics) lostGrant() {
	if m != nil {
		m.lost.Inc()
	}
}

// refusedUnavailable counts a 503 for an unreachable journal.
func (m *leaseMetrics) refusedUnavailable() {
	if m != nil {
		m.unavailable.Inc()
	}
}
