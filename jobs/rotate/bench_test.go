package rotate

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
)

// BenchmarkRotate200 rotates 200 keys with a 2 s propagation wait against the
// sandbox and a file store, at the default concurrency. A propagation wait
// must not hold a worker, so a pass should take about one wait plus API time:
// it reports pass time / propagation wait (target <= 1.5) and the platform API
// calls per rotated key (from the sandbox's counters).
//
//	go test -run '^$' -bench BenchmarkRotate200 -benchtime 1x ./jobs/rotate/
func BenchmarkRotate200(b *testing.B) {
	const n = 200
	const wait = 2 * time.Second
	e := newEnv(b)
	e.level = slog.LevelInfo // as deployed
	var specs []KeySpec
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("bench-%03d", i)
		e.seed(name, time.Hour, true)
		s := e.spec(name)
		s.PropagationWait = wait
		specs = append(specs, s)
	}
	eng := e.engine(Options{VerifyTimeout: 30 * time.Second, PublishTimeout: 30 * time.Second}, specs...)
	var total time.Duration
	var calls int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.sb.ResetStats()
		start := time.Now()
		res, err := eng.Run(context.Background(), jobs.Request{Force: true})
		total += time.Since(start)
		if err != nil || res.Failed {
			b.Fatalf("run: %v %+v", err, res.Summary)
		}
		for _, r := range res.Details.([]KeyReport) {
			if r.Outcome != OutcomeRotated {
				b.Fatalf("report %+v", r)
			}
		}
		stats := e.sb.Stats()
		for _, c := range stats {
			calls += c
		}
		if i == b.N-1 {
			b.Logf("platform calls by route in the last pass: %v", stats)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/float64(b.N)/float64(wait), "pass/wait")
	b.ReportMetric(float64(calls)/float64(b.N*n), "calls/key")
}
