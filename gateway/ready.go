package gateway

import (
	"context"
	"sort"

	probe "github.com/mrbacd/mrbacd/metrics"
)

// pinger is a journal that can say whether it answers (*journal.DB does).
type pinger interface {
	Ping(ctx context.Context) error
}

// Ready is the gateway's readiness check (metrics.Ready): nil when it can
// serve a request end to end. Otherwise it returns a *metrics.NotReadyError
// whose reason names what is missing, never a secret: "draining" once
// shutdown began (Serve's context ended, or Close), "no upstream key for
// workspace W" while a workspace's key has not been read from its store
// yet (a key being re-read after a 401 still counts as held), "journal
// unreachable" when the journal (Options.Usage) does not answer a ping.
// It reads only state the gateway holds, plus one ping.
func (g *Gateway) Ready(ctx context.Context) error {
	if g.draining.Load() || g.bg.Err() != nil {
		return probe.NotReady("draining", nil)
	}
	sn := g.snap.Load()
	wss := make([]string, 0, len(sn.keys))
	for ws, kc := range sn.keys {
		if kc.get() == nil {
			wss = append(wss, ws)
		}
	}
	if len(wss) > 0 {
		sort.Strings(wss) // the same reason on every probe
		return probe.NotReady("no upstream key for workspace "+wss[0], errNoKey)
	}
	if p, ok := g.opts.Usage.(pinger); ok {
		if err := p.Ping(ctx); err != nil {
			return probe.NotReady("journal unreachable", err)
		}
	}
	return nil
}
