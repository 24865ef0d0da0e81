package gateway

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// limitHit names the limit that refused a reservation.
type limitHit struct {
	name  string        // rpm, workspace_rpm, daily_tokens, hourly_usd, daily_usd
	limit string        // the configured value, for the message
	retry time.Duration // until the window frees
	// never: the request alone exceeds the limit; no window will admit it.
	never bool
	// short: the instance's holding of the budget (leased from the
	// journal) lacks need; a fetch may bring it (Gateway.admit).
	short *holding
	need  journal.Amounts
	// unavailable: the journal could not be reached and the instance holds
	// too little of the budget: 503.
	unavailable bool
}

// ledger holds one client's windows. Reserved and settled amounts are kept
// apart so a refusal can tell "until the window rolls" from "until requests in
// flight settle".
type ledger struct {
	mu sync.Mutex

	day                     int64 // days since the Unix epoch, UTC
	dayTokens, dayTokensRes int64
	dayUSD, dayUSDRes       float64
	hour                    int64 // hours since the Unix epoch
	hourUSD, hourUSDRes     float64
	rpm                     rpmWindow // the role's rpm, per client
	// inflight counts the client's requests in flight (max_concurrent).
	inflight atomic.Int64
	// closed: the gateway closed; what settles later is not queued (it
	// was charged in full by chargeOutstanding).
	closed bool
	// lease, with a journal, holds the budgets leased from it: a
	// reservation must also be drawn from them.
	lease *clientLease
}

// rpmWindow is a sliding minute: the admission times of the last RPM
// requests in a ring. A client's sits in its ledger (under the ledger's
// lock); a workspace's is shared by its clients and locked with mu.
type rpmWindow struct {
	mu   sync.Mutex // for a workspace's window only
	ring []int64    // admission times (Unix ns) of the last RPM requests
	next int
}

// wait returns how long until a request may be admitted under limit (0:
// now). A changed limit restarts the window. Caller holds the lock.
func (w *rpmWindow) wait(nowNS int64, limit int) time.Duration {
	if len(w.ring) != limit {
		w.ring, w.next = make([]int64, limit), 0
	}
	oldest := w.ring[w.next]
	if oldest != 0 && nowNS-oldest < int64(time.Minute) {
		return time.Duration(oldest + int64(time.Minute) - nowNS)
	}
	return 0
}

// admit records an admission; wait must have returned 0. Caller holds the lock.
func (w *rpmWindow) admit(nowNS int64) {
	w.ring[w.next] = nowNS
	w.next = (w.next + 1) % len(w.ring)
}

// reservation is what one admitted request holds until it settles.
type reservation struct {
	day, hour int64
	tokens    int64
	usd       float64
	draw      leaseDraw
}

// settled is usage to persist: the windows it belongs to and the amounts.
type settled struct {
	day, hour int64
	tokens    int64
	usd       float64
}

func dayOf(t time.Time) int64  { return floorDiv(t.Unix(), 86400) }
func hourOf(t time.Time) int64 { return floorDiv(t.Unix(), 3600) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// roll resets windows that ended. Caller holds mu.
func (l *ledger) roll(now time.Time) {
	if d := dayOf(now); d != l.day {
		l.day, l.dayTokens, l.dayTokensRes, l.dayUSD, l.dayUSDRes = d, 0, 0, 0, 0
	}
	if h := hourOf(now); h != l.hour {
		l.hour, l.hourUSD, l.hourUSDRes = h, 0, 0
	}
}

// retryAfterInFlight is the Retry-After given when only reservations of
// requests in flight stand in the way.
const retryAfterInFlight = time.Second

// reserve admits a request of at most tokens / usd under r's limits and the
// workspace's rpm (ws may be nil), or says which limit refuses it. Like the
// role's rpm, the workspace's counts admissions: a request admitted and then
// failed or released still counts in its minute. Lock order: the client's
// ledger, then the workspace's window.
func (l *ledger) reserve(now time.Time, r *role, ws *workspace, tokens int64, usd float64) (reservation, *limitHit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.roll(now)
	nowNS := now.UnixNano()
	// A request that alone exceeds a limit is refused for good (403).
	switch {
	case r.DailyTokens > 0 && tokens > r.DailyTokens:
		return reservation{}, &limitHit{name: "daily_tokens", limit: itoa(r.DailyTokens), never: true}
	case r.HourlyUSD > 0 && usd > r.HourlyUSD:
		return reservation{}, &limitHit{name: "hourly_usd", limit: ftoa(r.HourlyUSD), never: true}
	case r.DailyUSD > 0 && usd > r.DailyUSD:
		return reservation{}, &limitHit{name: "daily_usd", limit: ftoa(r.DailyUSD), never: true}
	}
	// Otherwise every exhausted limit is checked and the refusal names the
	// one that frees last, so Retry-After is when the request can pass.
	var hit *limitHit
	worse := func(h *limitHit) {
		if hit == nil || h.retry > hit.retry {
			hit = h
		}
	}
	if r.RPM > 0 {
		if d := l.rpm.wait(nowNS, r.RPM); d > 0 {
			worse(&limitHit{name: "rpm", limit: itoa(int64(r.RPM)), retry: d})
		}
	}
	if ws != nil && ws.RPM > 0 {
		ws.rpm.mu.Lock()
		defer ws.rpm.mu.Unlock()
		if d := ws.rpm.wait(nowNS, ws.RPM); d > 0 {
			worse(&limitHit{name: "workspace_rpm", limit: itoa(int64(ws.RPM)) + " (workspace " + ws.name + ")", retry: d})
		}
	}
	if r.DailyTokens > 0 && l.dayTokens+l.dayTokensRes+tokens > r.DailyTokens {
		worse(l.hit("daily_tokens", itoa(r.DailyTokens), now, l.dayTokens+tokens > r.DailyTokens, untilDay))
	}
	if r.HourlyUSD > 0 && l.hourUSD+l.hourUSDRes+usd > r.HourlyUSD {
		worse(l.hit("hourly_usd", ftoa(r.HourlyUSD), now, l.hourUSD+usd > r.HourlyUSD, untilHour))
	}
	if r.DailyUSD > 0 && l.dayUSD+l.dayUSDRes+usd > r.DailyUSD {
		worse(l.hit("daily_usd", ftoa(r.DailyUSD), now, l.dayUSD+usd > r.DailyUSD, untilDay))
	}
	if hit != nil {
		return reservation{}, hit
	}
	var d leaseDraw
	if l.lease != nil {
		if d, hit = l.lease.draw(now, r, ws, tokens, usd); hit != nil {
			return reservation{}, hit
		}
	}
	if r.RPM > 0 {
		l.rpm.admit(nowNS)
	}
	if ws != nil && ws.RPM > 0 {
		ws.rpm.admit(nowNS)
	}
	l.dayTokensRes += tokens
	l.dayUSDRes += usd
	l.hourUSDRes += usd
	return reservation{day: l.day, hour: l.hour, tokens: tokens, usd: usd, draw: d}, nil
}

func untilDay(now time.Time) time.Duration {
	return time.Unix((dayOf(now)+1)*86400, 0).Sub(now)
}

func untilHour(now time.Time) time.Duration {
	return time.Unix((hourOf(now)+1)*3600, 0).Sub(now)
}

// hit builds a refusal: when settled usage alone leaves no room the window
// must roll; otherwise requests in flight will free room soon.
func (l *ledger) hit(name, limit string, now time.Time, windowFull bool, until func(time.Time) time.Duration) *limitHit {
	if windowFull {
		return &limitHit{name: name, limit: limit, retry: until(now)}
	}
	return &limitHit{name: name, limit: limit, retry: retryAfterInFlight}
}

// settle replaces a reservation by the real usage; onSettled (which queues
// it for the journal) runs under the ledger's lock so a concurrent sync sees
// the amount either in the ledger's base or in the queue, never twice or
// not at all.
func (l *ledger) settle(res reservation, tokens int64, usd float64, onSettled func(settled)) settled {
	s := settled{day: res.day, hour: res.hour, tokens: tokens, usd: usd}
	l.mu.Lock()
	defer l.mu.Unlock()
	// The leased holdings get back what the request drew and did not spend.
	res.draw.day.giveBack(journal.Amounts{Tokens: res.tokens - tokens, USD: res.usd - usd})
	res.draw.hour.giveBack(journal.Amounts{USD: res.usd - usd})
	if res.day == l.day {
		l.dayTokensRes -= res.tokens
		l.dayUSDRes -= res.usd
		l.dayTokens += tokens
		l.dayUSD += usd
	}
	if res.hour == l.hour {
		l.hourUSDRes -= res.usd
		l.hourUSD += usd
	}
	if onSettled != nil && !l.closed {
		onSettled(s)
	}
	return s
}

// chargeOutstanding queues every reservation still held as settled in
// full (onSettled) and closes the ledger (Gateway.Close): requests in
// flight when the gateway stops are charged their worst case.
func (l *ledger) chargeOutstanding(onSettled func(settled)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	if onSettled != nil && (l.dayTokensRes > 0 || l.dayUSDRes > 0 || l.hourUSDRes > 0) {
		onSettled(settled{day: l.day, hour: l.hour, tokens: l.dayTokensRes, usd: max(l.dayUSDRes, l.hourUSDRes)})
	}
}

// release gives a reservation back (failed or cancelled request).
func (l *ledger) release(res reservation) { l.settle(res, 0, 0, nil) }

// sync replaces the settled amounts of the current windows (day, hour, as
// of now) by totals(): the journal's plus this gateway's unwritten usage.
// Reservations in flight are kept.
func (l *ledger) sync(now time.Time, day, hour int64, totals func() (dayTokens int64, dayUSD, hourUSD float64)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.roll(now)
	dt, dusd, husd := totals()
	if l.day == day {
		l.dayTokens, l.dayUSD = dt, dusd
	}
	if l.hour == hour {
		l.hourUSD = husd
	}
}

// snapshot returns settled and reserved amounts (tests and status).
func (l *ledger) snapshot() (dayTokens, dayTokensRes int64, dayUSD, hourUSD float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dayTokens, l.dayTokensRes, l.dayUSD, l.hourUSD
}
