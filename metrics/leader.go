package metrics

import "github.com/prometheus/client_golang/prometheus"

// leaderMetrics describe this instance's part in leader election among the
// daemons sharing a journal.
type leaderMetrics struct {
	leader      prometheus.Gauge
	transitions *prometheus.CounterVec
	failovers   prometheus.Counter
}

func newLeaderMetrics(reg prometheus.Registerer) *leaderMetrics {
	l := &leaderMetrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mrbacd_leader", Help: "1 while this instance leads the daemons sharing its journal (runs the schedule), else 0.",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mrbacd_leader_transitions_total", Help: "Times this instance gained or lost leadership, by direction (gained, lost).",
		}, []string{"direction"}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mrbacd_leader_failovers_total", Help: "Tenures this instance took over from another instance whose lease expired (it did not hand over).",
		}),
	}
	l.transitions.WithLabelValues("gained")
	l.transitions.WithLabelValues("lost")
	reg.MustRegister(l.collectors()...)
	return l
}

func (l *leaderMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{l.leader, l.transitions, l.failovers}
}

// ObserveLeadership records that this instance gained (failover: by taking
// over an expired lease of another instance) or lost leadership.
func (m *Metrics) ObserveLeadership(leader, failover bool) {
	if leader {
		m.leader.leader.Set(1)
		m.leader.transitions.WithLabelValues("gained").Inc()
		if failover {
			m.leader.failovers.Inc()
		}
		return
	}
	m.leader.leader.Set(0)
	m.leader.transitions.WithLabelValues("lost").Inc()
}
