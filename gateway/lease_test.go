package gateway

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// BenchmarkReserveSettle: one reservation and its settlement, the request
// path's accounting, without a budget lease and drawing from two leased
// holdings (daily tokens and USD, hourly USD) that cover it: the cost
// leases add per request, in process (the fetches run in the background).
func BenchmarkReserveSettle(b *testing.B) {
	r := compileRole("bench", benchRoles["bench"])
	for _, tc := range []struct {
		name   string
		leased bool
	}{{name: "no-lease", leased: false}, {name: "leased", leased: true}} {
		b.Run(tc.name, func(b *testing.B) {
			l := &ledger{}
			if tc.leased {
				db, err := journal.Open(context.Background(), b.TempDir()+"/state.db")
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { db.Close() })
				bg, cancel := context.WithCancel(context.Background())
				lz := &leaser{store: db, owner: newOwner(), ttl: time.Minute, every: time.Second, now: time.Now,
					log: slog.New(slog.DiscardHandler), bg: bg, holds: map[holdKey]*holding{}}
				b.Cleanup(func() { cancel(); lz.wait() })
				l.lease = &clientLease{lz: lz, sub: usageSubject("bench-app")}
			}
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				res, hit := l.reserve(now, r, nil, 100, 0.0001)
				for hit != nil && hit.short != nil { // the first draws wait for their lease
					<-l.lease.lz.fetch(hit.short, hit.need)
					res, hit = l.reserve(now, r, nil, 100, 0.0001)
				}
				if hit != nil {
					b.Fatalf("refused: %+v", hit)
				}
				l.settle(res, 80, 0.00008, nil)
			}
		})
	}
}
