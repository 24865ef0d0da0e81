package metrics

import (
	"strings"
	"testing"
)

// The leader gauge follows this instance's tenures; transitions and
// failovers count them.
func TestLeaderMetrics(t *testing.T) {
	m := New("1.2.3", nil)
	base := serve(t, m, nil)
	steps := []struct {
		name             string
		leader, failover bool
		want             []string
	}{
		{name: "won a free lease", leader: true, failover: false, want: []string{"mrbacd_leader 1", `mrbacd_leader_transitions_total{direction="gained"} 1`, "mrbacd_leader_failovers_total 0"}},
		{name: "lost it", leader: false, failover: false, want: []string{"mrbacd_leader 0", `mrbacd_leader_transitions_total{direction="lost"} 1`}},
		{name: "took over an expired lease", leader: true, failover: true, want: []string{"mrbacd_leader 1", `mrbacd_leader_transitions_total{direction="gained"} 2`, "mrbacd_leader_failovers_total 1"}},
	}
	_, body := get(t, base+"/metrics")
	for _, w := range []string{"mrbacd_leader 0", `mrbacd_leader_transitions_total{direction="gained"} 0`, "mrbacd_leader_failovers_total 0"} {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("before any election: /metrics lacks %q", w)
		}
	}
	for _, s := range steps {
		m.ObserveLeadership(s.leader, s.failover)
		_, body := get(t, base+"/metrics")
		for _, w := range s.want {
			if !strings.Contains(body, w+"\n") {
				t.Errorf("%s: /metrics lacks %q", s.name, w)
			}
		}
	}
}
