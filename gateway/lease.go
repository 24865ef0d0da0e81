package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// Budget leases: with a journal, an instance counts a request against a
// budget (daily tokens, daily and hourly USD, the role's and the
// workspace's rpm) only out of what it holds on lease from the journal, so
// any number of instances on one journal never admit more than the budget
// together. A holding is one (subject, window) budget's slice; requests draw
// from it locally, and the instance fetches more ahead of need in the
// background (one fetch in flight per holding), reports what it spent with
// each renewal, and gives back what it will not use.

// Lease defaults (Options fields left zero).
const (
	// DefaultLeaseTTL is a grant's life without renewal; an instance renews
	// its grants well before (every FlushInterval when it spends).
	DefaultLeaseTTL = 15 * time.Second
	// DefaultLeaseWait bounds how long a request waits for a fetch when
	// the instance's holding does not cover it.
	DefaultLeaseWait = time.Second
	// leaseCallTimeout bounds one journal call.
	leaseCallTimeout = 5 * time.Second
)

// holdKey names a holding: a usage subject and a window.
type holdKey struct{ subject, window string }

// holding is the instance's slice of one (subject, window) budget.
type holding struct {
	key holdKey
	end time.Time // the window's end

	mu    sync.Mutex
	limit journal.Amounts // the budget (zero amounts: not limited)
	// free may still be drawn; held is the journal's grant as of the last
	// call (free + drawn and not settled + spent not yet reported).
	free, held journal.Amounts
	// spentReq is requests admitted and not yet reported (minute windows;
	// tokens and USD settle through the write-behind's pending counters).
	spentReq int64
	// target is what a fetch aims to hold free; drawn is what was drawn
	// since the last refresh (traffic).
	target, drawn journal.Amounts
	used          journal.Amounts // the journal's counter at the last call
	expires       time.Time       // of the journal's grant
	lastFetch     time.Time       // the last call's end
	lastAsk       time.Time       // the last fetch's start
	// refused: the last call asked for refusedMin and got nothing.
	refused    bool
	refusedMin journal.Amounts
	err        error // the last call failed
	fetching   chan struct{}
}

// leaser holds the instance's holdings and talks to the journal.
type leaser struct {
	store UsageStore
	wb    *writeBehind
	owner string
	ttl   time.Duration
	every time.Duration // refresh interval
	now   func() time.Time
	log   *slog.Logger
	bg    context.Context
	m     *leaseMetrics // nil: not counted

	mu    sync.Mutex
	holds map[holdKey]*holding
	// fetches counts fetches in flight (Close waits for them).
	fetches sync.WaitGroup
}

// wait waits for the fetches in flight.
func (lz *leaser) wait() {
	if lz != nil {
		lz.fetches.Wait()
	}
}

// newOwner names this instance in the journal's grants: host, pid and a
// random part, so a restarted process never takes over its predecessor's.
func newOwner() string {
	host, _ := os.Hostname()
	b := make([]byte, 6)
	rand.Read(b)
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b))
}

// holding returns the holding of k, creating it with limit.
func (lz *leaser) holding(k holdKey, end time.Time, limit journal.Amounts) *holding {
	lz.mu.Lock()
	defer lz.mu.Unlock()
	h := lz.holds[k]
	if h == nil {
		h = &holding{key: k, end: end, limit: limit}
		lz.holds[k] = h
	}
	return h
}

func (lz *leaser) covers(k usageKey) bool {
	lz.mu.Lock()
	defer lz.mu.Unlock()
	return lz.holds[holdKey(k)] != nil
}

// need is an amount limited by limit: its unlimited parts zeroed.
func limited(a, limit journal.Amounts) journal.Amounts {
	if limit.Tokens <= 0 {
		a.Tokens = 0
	}
	if limit.USD <= 0 {
		a.USD = 0
	}
	if limit.Requests <= 0 {
		a.Requests = 0
	}
	return a
}

// covers reports whether a holds at least need of every amount.
func covers(a, need journal.Amounts) bool {
	return a.Tokens >= need.Tokens && a.USD+usdEpsilon >= need.USD && a.Requests >= need.Requests
}

const usdEpsilon = 1e-12

// shortfall is need minus a, floored at zero.
func shortfall(a, need journal.Amounts) journal.Amounts {
	return journal.Amounts{Tokens: max(need.Tokens-a.Tokens, 0), USD: max(need.USD-a.USD, 0), Requests: max(need.Requests-a.Requests, 0)}
}

func scale(a journal.Amounts, f float64) journal.Amounts {
	return journal.Amounts{Tokens: int64(float64(a.Tokens) * f), USD: a.USD * f, Requests: int64(float64(a.Requests) * f)}
}

func maxAmounts(a, b journal.Amounts) journal.Amounts {
	return journal.Amounts{Tokens: max(a.Tokens, b.Tokens), USD: max(a.USD, b.USD), Requests: max(a.Requests, b.Requests)}
}

func minAmounts(a, b journal.Amounts) journal.Amounts {
	return journal.Amounts{Tokens: min(a.Tokens, b.Tokens), USD: min(a.USD, b.USD), Requests: min(a.Requests, b.Requests)}
}

// capTarget bounds a target to an eighth of the budget (a quarter for
// rpm), so instances sharing a budget leave each other room, and at least
// need.
func capTarget(t, limit, need journal.Amounts) journal.Amounts {
	c := journal.Amounts{Tokens: limit.Tokens / 8, USD: limit.USD / 8, Requests: max(limit.Requests/4, 1)}
	return maxAmounts(minAmounts(t, c), need)
}

// draw takes need from the holding when it holds it free. When it does not,
// short says so; a fetch is then due unless a recent call already failed or
// was refused for as much (conclusive).
// low: after the draw the holding is below half its target (time to refill).
func (h *holding) draw(need journal.Amounts, limit journal.Amounts, requests bool) (ok, conclusive, low bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.limit = limit
	if h.target.IsZero() {
		h.target = capTarget(scale(need, 4), limit, need)
	}
	if covers(h.free, need) {
		h.free = h.free.Sub(need)
		h.drawn = h.drawn.Add(need)
		if requests {
			h.spentReq += need.Requests
		}
		return true, false, h.fetching == nil && !covers(h.free, scale(h.target, 0.5))
	}
	return false, h.conclusiveLocked(need), false
}

// conclusiveLocked: a call in the last second failed, or was refused at
// least this shortfall: asking again now would not help.
func (h *holding) conclusiveLocked(need journal.Amounts) bool {
	short := shortfall(h.free, need)
	recent := time.Since(h.lastFetch) < time.Second
	return recent && ((h.err != nil) || (h.refused && covers(short, h.refusedMin)))
}

// answered: the last call failed or granted nothing it was asked (a request
// short of the holding then gets the final verdict).
func (h *holding) answered() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err != nil || h.refused
}

// undraw gives back a draw (another holding of the same request refused).
func (h *holding) undraw(need journal.Amounts, requests bool) {
	h.mu.Lock()
	h.free = h.free.Add(need)
	h.drawn = h.drawn.Sub(need)
	if requests {
		h.spentReq -= need.Requests
	}
	h.mu.Unlock()
}

// settle gives back what a reservation drew and did not spend.
func (h *holding) giveBack(a journal.Amounts) {
	if h == nil || a.IsZero() {
		return
	}
	h.mu.Lock()
	h.free = h.free.Add(a)
	h.mu.Unlock()
}

// fetch asks the journal for more, ahead of need or for a request short
// of it (need: what it must hold free; zero for a refill), unless a fetch
// is in flight. It returns a channel closed when the fetch in flight ends.
func (lz *leaser) fetch(h *holding, need journal.Amounts) <-chan struct{} {
	h.mu.Lock()
	if h.fetching != nil {
		ch := h.fetching
		h.mu.Unlock()
		return ch
	}
	ch := make(chan struct{})
	h.fetching = ch
	// Drained quickly: fetching again within a refresh interval of the
	// last fetch doubles the target (ramping up faster than refresh, which
	// measures the traffic, would).
	if !h.lastAsk.IsZero() && time.Since(h.lastAsk) < lz.every {
		h.target = capTarget(scale(h.target, 2), h.limit, need)
	}
	h.lastAsk = time.Now()
	h.target = maxAmounts(h.target, limited(need, h.limit))
	short := limited(shortfall(h.free, need), h.limit)
	want := maxAmounts(limited(shortfall(h.free, h.target), h.limit), short)
	h.mu.Unlock()
	lz.fetches.Add(1)
	go func() {
		defer lz.fetches.Done()
		defer lz.done(h, ch)
		ctx, cancel := context.WithTimeout(lz.bg, leaseCallTimeout)
		defer cancel()
		lz.callRetry(ctx, h, short, want, journal.Amounts{}, false)
	}()
	return ch
}

func (lz *leaser) done(h *holding, ch chan struct{}) {
	h.mu.Lock()
	h.fetching = nil
	h.mu.Unlock()
	close(ch)
}

// callRetry is call, made once more shortly after a failure: a session the
// database ended fails the call that finds it, and the pool's next one is
// fresh. (A call whose commit was lost and is made again is counted twice:
// more counted, never less.)
func (lz *leaser) callRetry(ctx context.Context, h *holding, minA, want, ret journal.Amounts, settled bool) error {
	err := lz.call(ctx, h, minA, want, ret, settled)
	if err == nil || ctx.Err() != nil {
		return err
	}
	t := time.NewTimer(20 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return err
	case <-t.C:
	}
	return lz.call(ctx, h, minA, want, ret, settled)
}

// call is one LeaseBudget on h: report what was spent, give ret back, ask
// for min..want. The caller owns h.fetching (one call per holding at a
// time). Tokens and USD spent are reported only by refresh (settled: under
// the write-behind's flush lock, so that syncUsage never misses them).
func (lz *leaser) call(ctx context.Context, h *holding, minA, want, ret journal.Amounts, settled bool) error {
	var spent journal.Amounts
	if lz.wb != nil && settled {
		d := lz.wb.take(usageKey(h.key))
		spent.Tokens, spent.USD = d.tokens, d.usd
	}
	h.mu.Lock()
	ret = minAmounts(limited(ret, h.limit), maxAmounts(h.free, journal.Amounts{}))
	h.free = h.free.Sub(ret)
	spent.Requests = h.spentReq
	h.spentReq = 0
	req := journal.LeaseRequest{Owner: lz.owner, Subject: h.key.subject, Window: h.key.window, Limit: h.limit,
		Held: h.held, Spent: spent, Return: ret, Min: minA, Want: want, TTL: lz.ttl}
	h.mu.Unlock()
	res, err := lz.store.LeaseBudget(ctx, req)
	if !want.IsZero() || !minA.IsZero() {
		lz.m.fetched(err, res.Granted, maxAmounts(want, minA))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastFetch = time.Now()
	if err != nil {
		// Nothing was done: the spend stays to report, the return is kept.
		h.free = h.free.Add(ret)
		h.spentReq += spent.Requests
		if lz.wb != nil {
			lz.wb.putBack(usageKey(h.key), usageDelta{tokens: spent.Tokens, usd: spent.USD})
		}
		if h.err == nil && lz.bg.Err() == nil { // not a fetch cut short by Close
			lz.log.Warn("gateway budget journal unreachable; serving from the budget held, then refusing with 503",
				"subject", h.key.subject, "window", h.key.window, "free_tokens", h.free.Tokens, "free_usd", h.free.USD,
				"free_requests", h.free.Requests, "err", err)
		}
		h.err = err
		return err
	}
	if h.err != nil {
		lz.log.Info("gateway budget journal reachable again", "subject", h.key.subject, "window", h.key.window)
	}
	h.err = nil
	if res.Lost {
		// The grant expired before this renewal and was charged in full:
		// what was left of it is gone (it is counted as spent).
		lz.log.Warn("gateway budget lease expired before its renewal; its remainder was charged as spent",
			"subject", h.key.subject, "window", h.key.window)
		lz.m.lostGrant()
		h.free = journal.Amounts{}
	}
	h.free = h.free.Add(res.Granted)
	lz.m.heldChanged(h.key, h.held, res.Held)
	h.held, h.used, h.expires = res.Held, res.Used, res.Expires
	h.refused = !minA.IsZero() && res.Granted.IsZero()
	h.refusedMin = minA
	return nil
}

// nextMinute returns the holding of the minute after h's (an active rpm
// holding about to end), created with h's limit and target. Caller holds h.mu.
func (lz *leaser) nextMinute(h *holding) *holding {
	m := h.end.Unix() / 60
	nh := lz.holding(holdKey{h.key.subject, minuteWindow(m)}, h.end.Add(time.Minute), h.limit)
	nh.mu.Lock()
	if nh.target.IsZero() {
		nh.target = h.target
	}
	nh.mu.Unlock()
	return nh
}

// refresh runs every interval (and at Close with final): each holding
// reports its spend, renews its grant, refills below half its target,
// shrinks when idle and gives its window's remainder back once the window
// ended (all of it when final). Holdings of ended windows holding nothing
// are dropped.
func (lz *leaser) refresh(ctx context.Context, final bool) error {
	now := lz.now()
	lz.mu.Lock()
	hs := make([]*holding, 0, len(lz.holds))
	for _, h := range lz.holds {
		hs = append(hs, h)
	}
	lz.mu.Unlock()
	var firstErr error
	for _, h := range hs {
		h.mu.Lock()
		if h.fetching != nil {
			h.mu.Unlock()
			continue // a fetch reports and renews
		}
		ch := make(chan struct{})
		h.fetching = ch
		over := final || !now.Before(h.end)
		var want, ret journal.Amounts
		var next *holding
		if over {
			ret = h.free
		} else {
			if !final && !h.drawn.IsZero() && h.end.Sub(now) < 2*lz.every && strings.HasPrefix(h.key.window, "minute:") {
				next = lz.nextMinute(h)
			}
			// Sized to the traffic: two intervals' worth of what was drawn in
			// the last one, halving at most per interval when it drops.
			h.target = capTarget(maxAmounts(scale(h.drawn, 2), scale(h.target, 0.5)), h.limit,
				journal.Amounts{Tokens: 1, Requests: 1})
			h.drawn = journal.Amounts{}
			ret = shortfall(scale(h.target, 2), h.free) // what is free beyond twice the target
			if !covers(h.free, scale(h.target, 0.5)) {
				want = limited(shortfall(h.free, h.target), h.limit)
			}
		}
		pending := h.spentReq != 0 || (lz.wb != nil && !lz.wb.pendingOf(usageKey(h.key)).isZero())
		renew := !h.held.IsZero() && time.Until(h.expires) < lz.ttl/2
		due := pending || renew || !limited(ret, h.limit).IsZero() || !want.IsZero() || (over && !h.held.IsZero())
		h.mu.Unlock()
		var err error
		if due {
			err = lz.callRetry(ctx, h, journal.Amounts{}, want, ret, true)
		}
		lz.done(h, ch)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if next != nil {
			lz.fetch(next, journal.Amounts{}) // the next minute's rpm, ahead of its first request
		}
		h.mu.Lock()
		drop := over && h.held.IsZero() && err == nil
		h.mu.Unlock()
		if drop {
			lz.mu.Lock()
			if lz.holds[h.key] == h {
				delete(lz.holds, h.key)
			}
			lz.mu.Unlock()
		}
	}
	return firstErr
}

// workspaceSubject names a workspace's counters (its rpm) in the journal.
func workspaceSubject(ws string) string { return "gateway-workspace:" + ws }

func minuteOf(t time.Time) int64 { return floorDiv(t.Unix(), 60) }

func minuteWindow(m int64) string {
	return "minute:" + time.Unix(m*60, 0).UTC().Format("2006-01-02T15:04")
}

// clientLease is a client's way to its holdings: its own (daily tokens and
// USD, hourly USD, rpm) and its workspace's rpm. The current windows'
// holdings are cached; the ledger's lock guards the cache.
type clientLease struct {
	lz  *leaser
	sub string

	day, hour, minute int64
	dayH, hourH, rpmH *holding
	wsMinute          int64
	wsName            string
	wsH               *holding
}

// leaseItem is one holding a reservation draws from.
type leaseItem struct {
	h           *holding
	need, limit journal.Amounts
	kind        uint8
}

// Kinds of leaseItem.
const (
	leaseDay uint8 = iota
	leaseHour
	leaseRPM
	leaseWorkspaceRPM
)

// hitName names the limit a short item hits, for the refusal.
func hitName(it *leaseItem, r *role, ws *workspace, free journal.Amounts) (name, limit string) {
	switch it.kind {
	case leaseDay:
		if r.DailyTokens > 0 && free.Tokens < it.need.Tokens {
			return "daily_tokens", itoa(r.DailyTokens)
		}
		return "daily_usd", ftoa(r.DailyUSD)
	case leaseHour:
		return "hourly_usd", ftoa(r.HourlyUSD)
	case leaseRPM:
		return "rpm", itoa(int64(r.RPM))
	default:
		return "workspace_rpm", itoa(int64(ws.RPM)) + " (workspace " + ws.name + ")"
	}
}

// draw takes a request's worst case (tokens, usd) and one request of each
// rpm from the holdings, all or nothing. A holding short of it refuses
// with a hit naming it (short): the caller fetches and tries again, or, when
// conclusive, the hit is final (verdict). Caller holds the ledger's lock
// (and the workspace window's when ws has an rpm).
func (c *clientLease) draw(now time.Time, r *role, ws *workspace, tokens int64, usd float64) (leaseDraw, *limitHit) {
	var items [4]leaseItem
	n := 0
	if r.DailyTokens > 0 || r.DailyUSD > 0 {
		if d := dayOf(now); c.dayH == nil || d != c.day {
			c.day, c.dayH = d, c.lz.holding(holdKey{c.sub, dayWindow(d)}, time.Unix((d+1)*86400, 0), journal.Amounts{})
		}
		lim := journal.Amounts{Tokens: r.DailyTokens, USD: r.DailyUSD}
		items[n] = leaseItem{h: c.dayH, need: limited(journal.Amounts{Tokens: tokens, USD: usd}, lim), limit: lim, kind: leaseDay}
		n++
	}
	if r.HourlyUSD > 0 {
		if h := hourOf(now); c.hourH == nil || h != c.hour {
			c.hour, c.hourH = h, c.lz.holding(holdKey{c.sub, hourWindow(h)}, time.Unix((h+1)*3600, 0), journal.Amounts{})
		}
		items[n] = leaseItem{h: c.hourH, need: journal.Amounts{USD: usd}, limit: journal.Amounts{USD: r.HourlyUSD}, kind: leaseHour}
		n++
	}
	m := minuteOf(now)
	if r.RPM > 0 {
		if c.rpmH == nil || m != c.minute {
			c.minute, c.rpmH = m, c.lz.holding(holdKey{c.sub, minuteWindow(m)}, time.Unix((m+1)*60, 0), journal.Amounts{})
		}
		items[n] = leaseItem{h: c.rpmH, need: journal.Amounts{Requests: 1}, limit: journal.Amounts{Requests: int64(r.RPM)}, kind: leaseRPM}
		n++
	}
	if ws != nil && ws.RPM > 0 {
		if c.wsH == nil || m != c.wsMinute || c.wsName != ws.name {
			c.wsMinute, c.wsName = m, ws.name
			c.wsH = c.lz.holding(holdKey{workspaceSubject(ws.name), minuteWindow(m)}, time.Unix((m+1)*60, 0), journal.Amounts{})
		}
		items[n] = leaseItem{h: c.wsH, need: journal.Amounts{Requests: 1}, limit: journal.Amounts{Requests: int64(ws.RPM)}, kind: leaseWorkspaceRPM}
		n++
	}
	var d leaseDraw
	var low [4]bool
	for i := 0; i < n; i++ {
		it := &items[i]
		requests := it.kind >= leaseRPM
		ok, conclusive, lw := it.h.draw(it.need, it.limit, requests)
		low[i] = lw
		if !ok {
			for j := 0; j < i; j++ {
				items[j].h.undraw(items[j].need, items[j].kind >= leaseRPM)
			}
			hit := &limitHit{short: it.h, need: it.need}
			hit.name, hit.limit = hitName(it, r, ws, it.h.freeNow())
			if conclusive {
				hit = it.h.verdict(hit, now)
			}
			return leaseDraw{}, hit
		}
		switch it.kind {
		case leaseDay:
			d.day = it.h
		case leaseHour:
			d.hour = it.h
		}
	}
	for i := 0; i < n; i++ {
		if low[i] {
			c.lz.fetch(items[i].h, journal.Amounts{}) // ahead of need, in the background
		}
	}
	return d, nil
}

// leaseDraw is the holdings a reservation drew tokens and USD from; they
// get back what it did not spend when it settles.
type leaseDraw struct {
	day, hour *holding
}

func (h *holding) freeNow() journal.Amounts {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.free
}

// verdict makes a short holding's refusal final: 503 when the journal could
// not be reached (its last call failed, or none ever answered), else 429 with Retry-After the
// window's end when the counter alone leaves no room, a second otherwise
// (the rest is held by other instances or requests in flight).
func (h *holding) verdict(hit *limitHit, now time.Time) *limitHit {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := &limitHit{name: hit.name, limit: hit.limit, retry: retryAfterInFlight}
	if h.err != nil || h.lastFetch.IsZero() {
		out.unavailable = true
		return out
	}
	if !covers(limited(h.limit.Sub(h.used), h.limit), hit.need) {
		out.retry = h.end.Sub(now)
	}
	return out
}
