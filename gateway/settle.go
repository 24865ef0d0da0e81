package gateway

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// CachedInputFactor is the share of the input price Mistral bills for a
// cached prompt token (usage.prompt_tokens_details.cached_tokens).
const CachedInputFactor = 0.1

// maxHangupDrain bounds the bytes of a streamed answer read after its
// client hung up (a plain answer is bounded by maxUpstreamBody).
const maxHangupDrain = 64 << 20

// usage is Mistral's usage object; Cached is the prompt tokens served from
// the prompt cache (prompt_tokens_details.cached_tokens), part of
// PromptTokens.
type usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
	Cached           int64 `json:"-"`
}

func (u usage) total() int64 {
	if u.TotalTokens > 0 {
		return u.TotalTokens
	}
	return u.PromptTokens + u.CompletionTokens
}

// cost is the USD of in input and out output tokens at price pr (the
// reservation's worst case: no prompt token cached).
func cost(pr Price, in, out int64) float64 {
	return (float64(in)*pr.InputPerM + float64(out)*pr.OutputPerM) / 1e6
}

// usageCost is the USD of an answer's usage: cached prompt tokens at
// CachedInputFactor of the input price, the rest at the full prices.
func usageCost(pr Price, u usage) float64 {
	c := min(max(u.Cached, 0), max(u.PromptTokens, 0))
	return (float64(u.PromptTokens-c)*pr.InputPerM + float64(c)*pr.InputPerM*CachedInputFactor +
		float64(u.CompletionTokens)*pr.OutputPerM) / 1e6
}

// outputBound is n × maxTokens, saturating instead of overflowing.
func outputBound(n, maxTokens int64) int64 {
	if maxTokens <= 0 {
		return maxTokens
	}
	if n > math.MaxInt64/maxTokens {
		return math.MaxInt64
	}
	return n * maxTokens
}

// admit makes the role and workspace decision (principal.check) and
// reserves the worst case: promptEst plus n × maxTokens. It writes the
// refusal. maxTokens < 0: no output (embeddings).
func (g *Gateway) admit(w http.ResponseWriter, st *reqState, model string, maxTokens, n, promptEst int64) bool {
	p := st.p
	r := p.role
	out := outputBound(n, maxTokens)
	switch p.check(model, out) {
	case denyModel:
		writeError(w, http.StatusForbidden, typePermission, "model_not_allowed", "model not allowed: the role "+r.name+" does not allow it")
		return false
	case denyWorkspaceModel:
		writeError(w, http.StatusForbidden, typePermission, "model_not_allowed", "model not allowed: the workspace "+p.workspace+" does not allow it")
		return false
	case denyMaxTokens:
		st.model = model
		what := "max_tokens " + itoa(maxTokens)
		if n > 1 {
			what = "n × max_tokens (" + itoa(n) + " × " + itoa(maxTokens) + ")"
		}
		writeError(w, http.StatusForbidden, typePermission, "max_tokens_per_request",
			what+" exceeds the role's max_tokens_per_request of "+itoa(int64(r.MaxTokensPerRequest)))
		return false
	}
	st.model = model // only allowed models become metric labels
	pr, known := st.snap.price(model)
	usdGuard := r.HourlyUSD > 0 || r.DailyUSD > 0
	if usdGuard && !known {
		writeError(w, http.StatusForbidden, typePermission, "price_unknown",
			"no price is configured for model "+truncate(model, 100)+" and the role has a spending guard")
		return false
	}
	out = max(out, 0)
	tokens, usd := satAdd(promptEst, out), cost(pr, promptEst, out)
	res, hit := p.ledger.reserve(g.now(), r, p.ws, tokens, usd)
	if hit != nil && hit.short != nil {
		res, hit = g.reserveLeased(st, tokens, usd, hit)
	}
	if hit != nil {
		g.refuse(w, st, hit)
		return false
	}
	st.res, st.pr, st.reserved = res, pr, true
	return true
}

// reserveLeased retries a reservation the instance's leased holding could
// not cover: while the journal grants (its holding is not refused nor cut
// off), it waits for a fetch and tries again, for at most LeaseWait in all;
// then the refusal is final (holding.verdict).
func (g *Gateway) reserveLeased(st *reqState, tokens int64, usd float64, hit *limitHit) (reservation, *limitHit) {
	p := st.p
	var res reservation
	g.leaseWaits.Add(1)
	t := time.NewTimer(g.opts.LeaseWait)
	defer t.Stop()
wait:
	for hit != nil && hit.short != nil {
		select {
		case <-g.leases.fetch(hit.short, hit.need):
		case <-t.C:
			break wait
		}
		if hit.short.answered() {
			break // refused, or the journal is cut off: no use asking again now
		}
		res, hit = p.ledger.reserve(g.now(), p.role, p.ws, tokens, usd)
	}
	if hit != nil && hit.short != nil {
		hit = hit.short.verdict(hit, g.now())
	}
	return res, hit
}

// refuse writes a refusal: 503 when the budget's journal is unreachable
// and the instance holds too little of it, else 429 or 403 (writeRetry).
func (g *Gateway) refuse(w http.ResponseWriter, st *reqState, hit *limitHit) {
	if !hit.unavailable {
		writeRetry(w, hit)
		return
	}
	g.lm.refusedUnavailable()
	if t := g.now(); t.Sub(g.unavailLogged.Load().(time.Time)) > 10*time.Second {
		g.unavailLogged.Store(t)
		g.log.Warn("gateway refusing requests with 503: the budget journal is unreachable and the budget held is spent",
			"client", st.p.name, "limit", hit.name)
	}
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, typeUnavailable, "budget_unavailable",
		"the gateway cannot reach its budget journal and holds no more of the "+hit.name+" budget for this client; retry later")
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// settle charges the real usage and queues it for the journal.
func (g *Gateway) settle(st *reqState, u usage) {
	if !st.reserved || st.resDone {
		return
	}
	s := st.p.ledger.settle(st.res, u.total(), usageCost(st.pr, u), st.p.queue)
	st.tokens, st.usd, st.resDone = s.tokens, s.usd, true
	st.cached = min(max(u.Cached, 0), max(u.PromptTokens, 0))
}

// settleReserved charges the whole reservation: the upstream accepted the
// request (it bills from then on) but its usage could not be learnt.
func (g *Gateway) settleReserved(st *reqState) {
	if !st.reserved || st.resDone {
		return
	}
	s := st.p.ledger.settle(st.res, st.res.tokens, st.res.usd, st.p.queue)
	st.tokens, st.usd, st.resDone = s.tokens, s.usd, true
}

// release gives the reservation back: the upstream never accepted the
// request (refused it with an error status, or it was never sent).
func (g *Gateway) release(st *reqState) {
	if st.reserved && !st.resDone {
		st.p.ledger.release(st.res)
		st.resDone = true
	}
}

// endReservation runs when an admitted request ends, a panic included:
// what was not settled yet is charged in full when the upstream may have
// accepted the request, and released only when it certainly did not.
func (g *Gateway) endReservation(st *reqState) {
	if !st.reserved || st.resDone {
		return
	}
	if st.accepted || st.wrote {
		g.settleReserved(st)
		return
	}
	g.release(st)
}

// neverSent reports whether a round trip error means the request never
// reached the upstream (no connection could be made), so it cannot have
// been billed. Anything else (a connection lost after the request was
// written, a timeout) may follow an accepted request.
func neverSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// upstreamContext is the context of an admitted request's upstream call.
// It does not end when the client hangs up: the upstream bills a request
// it accepted whether the client stays or not, so its answer is still read
// to learn the usage, for at most HangupDrainTimeout after the hang-up.
// stop releases it.
func (g *Gateway) upstreamContext(client context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(client))
	var timer atomic.Pointer[time.Timer]
	d := g.opts.HangupDrainTimeout
	stopAfter := context.AfterFunc(client, func() { timer.Store(time.AfterFunc(d, cancel)) })
	return ctx, func() {
		stopAfter()
		if t := timer.Load(); t != nil {
			t.Stop()
		}
		cancel()
	}
}

// forwardReserved POSTs an admitted request upstream under ctx (see
// upstreamContext), unless its client already left. An upstream error
// status releases the reservation and is relayed; a request that failed is
// left to endReservation.
func (g *Gateway) forwardReserved(ctx context.Context, w *respWriter, r *http.Request, st *reqState, path string, body []byte, stream bool) (*http.Response, bool) {
	if r.Context().Err() != nil {
		return nil, false // the client left before anything was sent: nothing billed
	}
	resp, ok := g.forward(ctx, w, r, st, http.MethodPost, path, body, stream)
	if !ok {
		return nil, false
	}
	if resp.StatusCode/100 != 2 {
		g.release(st) // the upstream refused it: nothing generated, nothing billed
		g.relayError(w, st, resp)
		resp.Body.Close()
		return nil, false
	}
	st.accepted = true
	return resp, true
}

// chatLimits reads n and max_tokens and injects max_tokens when the role
// has a maximum and the request none: the role's maximum divided by n, so
// that n × max_tokens stays within it. It writes the refusal.
func (g *Gateway) chatLimits(w *respWriter, st *reqState, req *chatRequest, body []byte) (newBody []byte, maxTokens, n int64, ok bool) {
	role := st.p.role
	n = 1
	if req.N.set && !req.N.null {
		n = req.N.v
	}
	maxTokens = req.MaxTokens.v
	if req.MaxTokens.set && !req.MaxTokens.null {
		return body, maxTokens, n, true
	}
	switch {
	case role.MaxTokensPerRequest > 0:
		if !role.allows(req.Model) || !st.p.ws.allows(req.Model) {
			return body, int64(role.MaxTokensPerRequest), 1, true // admit refuses the model
		}
		maxTokens = int64(role.MaxTokensPerRequest) / n
		if maxTokens < 1 {
			st.model = req.Model
			writeError(w, http.StatusForbidden, typePermission, "max_tokens_per_request",
				"n of "+itoa(n)+" exceeds the role's max_tokens_per_request of "+itoa(int64(role.MaxTokensPerRequest))+" (each completion needs at least one token)")
			return nil, 0, 0, false
		}
		nb, err := injectMaxTokens(body, maxTokens, req.MaxTokens.null)
		if err != nil {
			writeError(w, http.StatusBadRequest, typeInvalid, "invalid_json", "request body must be a JSON object")
			return nil, 0, 0, false
		}
		return nb, maxTokens, n, true
	case role.DailyTokens > 0 || role.HourlyUSD > 0 || role.DailyUSD > 0:
		if role.allows(req.Model) {
			writeError(w, http.StatusBadRequest, typeInvalid, "max_tokens_required",
				"max_tokens is required: role "+role.name+" has budgets but no max_tokens_per_request")
			return nil, 0, 0, false
		}
	}
	return body, maxTokens, n, true
}

// chat serves /v1/chat/completions.
func (g *Gateway) chat(w *respWriter, r *http.Request, st *reqState) {
	var req chatRequest
	body, ok := g.readRequest(w, r, st, &req)
	if !ok {
		return
	}
	st.stream = req.Stream
	body, maxTokens, n, ok := g.chatLimits(w, st, &req, body)
	if !ok || !g.admit(w, st, req.Model, maxTokens, n, int64(len(body))) {
		return
	}
	// Every path settles, charges or releases; this also covers a panic
	// (net/http recovers it, ErrAbortHandler included).
	defer g.endReservation(st)
	ctx, stop := g.upstreamContext(r.Context())
	defer stop()
	resp, ok := g.forwardReserved(ctx, w, r, st, pathChat, body, req.Stream)
	if !ok {
		return
	}
	defer resp.Body.Close()
	if req.Stream && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		g.stream(w, r, st, resp)
		return
	}
	g.plain(w, r, st, resp)
}

// embeddings serves /v1/embeddings.
func (g *Gateway) embeddings(w *respWriter, r *http.Request, st *reqState) {
	var req chatRequest
	body, ok := g.readRequest(w, r, st, &req)
	if !ok {
		return
	}
	if !g.admit(w, st, req.Model, -1, 1, int64(len(body))) {
		return
	}
	defer g.endReservation(st) // also on a panic; see chat
	ctx, stop := g.upstreamContext(r.Context())
	defer stop()
	resp, ok := g.forwardReserved(ctx, w, r, st, pathEmbeddings, body, false)
	if !ok {
		return
	}
	defer resp.Body.Close()
	g.plain(w, r, st, resp)
}
