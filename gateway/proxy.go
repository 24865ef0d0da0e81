package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Routes the gateway serves.
const (
	pathChat       = "/v1/chat/completions"
	pathEmbeddings = "/v1/embeddings"
	pathModels     = "/v1/models"
)

// maxUpstreamBody bounds a non-streamed upstream answer kept in memory.
const maxUpstreamBody = 64 << 20

// reqState is one request's bookkeeping for metrics and the access log.
type reqState struct {
	snap     *snapshot
	route    string
	p        *principal
	model    string
	stream   bool
	upstream time.Duration
	tokens   int64
	cached   int64
	usd      float64
	retried  bool
	// res and pr are the request's reservation and price once admitted.
	res reservation
	pr  Price
	// reserved: res holds a reservation; resDone: it was settled or released.
	reserved, resDone bool
	// wrote: the request was written to the upstream in full (it may have
	// started generating); accepted: the upstream answered 2xx.
	wrote, accepted bool
	// hungUp: the client went away (or stopped reading) before the answer
	// was relayed in full.
	hungUp bool
	// slot: the request holds one of its client's max_concurrent slots.
	slot bool
	// rc sets the client connection's deadlines (nil when the writer has
	// none, as in tests); deadlines: some were set.
	rc        deadliner
	deadlines bool
	// sentKey is the upstream key sent (scrubbed from relayed errors).
	sentKey string
}

// respWriter records the status written.
type respWriter struct {
	http.ResponseWriter
	status int
}

func (w *respWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *respWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// flush flushes the answer to the client and reports a failed write (a
// client gone or not reading).
func (w *respWriter) flush() error {
	if f, ok := w.ResponseWriter.(interface{ FlushError() error }); ok {
		return f.FlushError()
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var statePool = sync.Pool{New: func() any {
	return &struct {
		rw respWriter
		st reqState
	}{}
}}

// ServeHTTP routes a request; anything but the three routes is 404.
func (g *Gateway) ServeHTTP(hw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ps := statePool.Get().(*struct {
		rw respWriter
		st reqState
	})
	ps.rw = respWriter{ResponseWriter: hw}
	ps.st = reqState{}
	w, st := &ps.rw, &ps.st
	st.snap = g.snap.Load()
	g.armRead(hw, r, st, start)
	path := r.URL.Path
	if r.URL.RawPath != "" {
		// Percent-encoded path characters ("chat%2Fcompletions"): routed
		// by no rule, so the path the gateway checks is the one written.
		path = r.URL.RawPath
	}
	switch path {
	case pathChat:
		st.route = "chat"
		if g.method(w, r, http.MethodPost) {
			g.chat(w, r, st)
		}
	case pathEmbeddings:
		st.route = "embeddings"
		if g.method(w, r, http.MethodPost) {
			g.embeddings(w, r, st)
		}
	case pathModels:
		st.route = "models"
		if g.method(w, r, http.MethodGet) {
			g.models(w, r, st)
		}
	default:
		st.route = "other"
		writeError(w, http.StatusNotFound, typeNotFound, "", "no route for "+r.Method+" "+truncate(r.URL.Path, 200))
	}
	g.finish(r, w, st, start)
	g.endClient(st)
	ps.rw = respWriter{}
	ps.st = reqState{}
	statePool.Put(ps)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func (g *Gateway) method(w http.ResponseWriter, r *http.Request, m string) bool {
	if r.Method == m {
		return true
	}
	w.Header().Set("Allow", m)
	writeError(w, http.StatusMethodNotAllowed, typeInvalid, "", "method "+r.Method+" not allowed on "+r.URL.Path+"; use "+m)
	return false
}

// finish records metrics, the overhead histogram and the access log.
func (g *Gateway) finish(r *http.Request, w *respWriter, st *reqState, start time.Time) {
	total := time.Since(start)
	status := w.status
	if status == 0 {
		status = 499 // client went away before anything was written
	}
	client, ws := "unknown", ""
	if st.p != nil {
		client, ws = st.p.name, st.p.workspace
	}
	route := st.route
	if st.stream {
		route = "chat_stream"
	}
	over := total - st.upstream
	g.m.observeOverhead(route, over.Seconds())
	g.m.request(client, st.model, status)
	if st.p != nil && (st.tokens != 0 || st.usd != 0) {
		g.m.spent(client, ws, st.tokens, st.cached, st.usd)
	}
	if g.onOverhead != nil {
		g.onOverhead(route, total, st.upstream)
	}
	if g.log.Enabled(r.Context(), slog.LevelDebug) {
		g.log.LogAttrs(r.Context(), slog.LevelDebug, "gateway request",
			slog.String("client", client), slog.String("workspace", ws), slog.String("route", route),
			slog.String("model", st.model), slog.Int("status", status), slog.Int64("tokens", st.tokens),
			slog.Float64("usd", st.usd), slog.Bool("retried", st.retried),
			slog.Duration("duration", total), slog.Duration("upstream", st.upstream),
			slog.String("remote", r.RemoteAddr))
	}
}

// authenticate finds the request's principal or writes 401.
func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request, st *reqState) bool {
	st.p = st.snap.authz.lookup(bearer(r.Header.Get("Authorization")))
	if st.p == nil {
		writeError(w, http.StatusUnauthorized, typeAuth, "invalid_token", "Unauthorized: missing or unknown bearer token")
		return false
	}
	return g.takeSlot(w, st)
}

// optInt is an optional JSON integer that tells absent, null and a value apart.
type optInt struct {
	set, null bool
	v         int64
}

// chatRequest is what the gateway reads of a chat or embeddings body; the
// rest goes upstream untouched.
type chatRequest struct {
	Model     string
	MaxTokens optInt
	// N is the number of completions (chat); each may use max_tokens.
	N      optInt
	Stream bool
}

// parseRequest reads the fields the gateway needs or writes 400. The body is
// validated (json.Valid) and then scanned for its top-level model,
// max_tokens and stream (scanRequest), not decoded.
func parseRequest(w http.ResponseWriter, body []byte, req *chatRequest) bool {
	if !json.Valid(body) {
		writeError(w, http.StatusBadRequest, typeInvalid, "invalid_json", "request body is not valid JSON")
		return false
	}
	f, msg := scanRequest(body)
	if msg == "" {
		msg = decodeRequest(f, req)
	}
	if msg != "" {
		writeError(w, http.StatusBadRequest, typeInvalid, "invalid_json", string(msg))
		return false
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, typeInvalid, "missing_model", "model is required")
		return false
	}
	return true
}

// injectMaxTokens returns body with max_tokens set to n: inserted after the
// opening brace when absent, or the object re-encoded when it was null.
func injectMaxTokens(body []byte, n int64, wasNull bool) ([]byte, error) {
	if wasNull {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, err
		}
		m["max_tokens"] = json.RawMessage(itoa(n))
		return json.Marshal(m)
	}
	i := bytes.IndexByte(body, '{')
	if i < 0 {
		return nil, errors.New("not an object")
	}
	ins := `"max_tokens":` + itoa(n) + `,`
	out := make([]byte, 0, len(body)+len(ins))
	out = append(out, body[:i+1]...)
	out = append(out, ins...)
	out = append(out, body[i+1:]...)
	return out, nil
}

// readRequest authenticates the caller, reads the bounded body and parses
// it into req (chat and embeddings share the request shape). It writes the
// error answer and returns false on failure.
func (g *Gateway) readRequest(w *respWriter, r *http.Request, st *reqState, req *chatRequest) ([]byte, bool) {
	if !g.authenticate(w, r, st) {
		return nil, false
	}
	body, ok := g.readBody(w, r, st)
	if !ok {
		return nil, false
	}
	if !parseRequest(w, body, req) {
		return nil, false
	}
	return body, true
}

// timedReader adds the time spent in Read to *d (time waiting on upstream).
type timedReader struct {
	r io.Reader
	d *time.Duration
}

func (t timedReader) Read(p []byte) (int, error) {
	s := time.Now()
	n, err := t.r.Read(p)
	*t.d += time.Since(s)
	return n, err
}

// errUpstreamTooLarge: a non-streamed upstream answer reached maxUpstreamBody.
var errUpstreamTooLarge = errors.New("upstream answer too large")

// readTimed appends r to buf until EOF, adding the time spent in Read to *d
// (time waiting on upstream). An answer that reaches limit bytes before EOF
// is errUpstreamTooLarge (never relayed truncated).
func readTimed(buf *bytes.Buffer, r io.Reader, limit int, d *time.Duration) error {
	for buf.Len() < limit {
		if buf.Available() == 0 {
			buf.Grow(min(max(buf.Cap(), 4<<10), limit-buf.Len()))
		}
		b := buf.AvailableBuffer()
		b = b[:min(cap(b), limit-buf.Len())]
		s := time.Now()
		n, err := r.Read(b)
		*d += time.Since(s)
		buf.Write(b[:n]) // b is buf's own free space: no copy beyond itself
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return errUpstreamTooLarge
}

// respBufPool holds buffers for whole upstream answers; buffers grown past
// maxPooledBuf are left to the collector.
var respBufPool = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 8<<10)) }}

const maxPooledBuf = 1 << 20

// copyBufPool holds the buffers streams are relayed through, one per open
// stream for its whole life: 8 KiB holds many chunks (a chunk is a few
// hundred bytes) and keeps the memory of thousands of streams low.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}

// maxSSELine bounds the partial line kept while looking for usage.
const maxSSELine = 1 << 20

// sseUsage scans a server-sent event stream for the usage object without
// buffering the stream: only the current partial line is kept.
type sseUsage struct {
	carry []byte
	skip  bool // current line exceeded maxSSELine
	found bool
	u     usage
}

func (s *sseUsage) feed(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if !s.skip {
				if len(s.carry)+len(p) > maxSSELine {
					s.skip, s.carry = true, s.carry[:0]
				} else {
					s.carry = append(s.carry, p...)
				}
			}
			return
		}
		line := p[:i]
		if !s.skip {
			if len(s.carry) > 0 {
				s.carry = append(s.carry, line...)
				line = s.carry
			}
			s.line(line)
		}
		s.carry, s.skip = s.carry[:0], false
		p = p[i+1:]
	}
}

var (
	dataPrefix = []byte("data:")
	usageField = []byte(`"usage"`)
)

func (s *sseUsage) line(l []byte) {
	l = bytes.TrimRight(l, "\r")
	if !bytes.HasPrefix(l, dataPrefix) {
		return
	}
	d := bytes.TrimSpace(l[len(dataPrefix):])
	if !bytes.Contains(d, usageField) {
		return
	}
	if u, ok := findUsage(d); ok {
		s.u, s.found = u, true
	}
}

// forward sends the request upstream with the workspace's key; on a 401 it
// re-reads the key and retries once with the new one. It writes 502/503 on
// failure and returns false.
//
// ctx is the upstream call's context (upstreamContext for billed routes).
// When the round trip fails, st.wrote tells whether the request may have
// reached the upstream (see neverSent).
func (g *Gateway) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, st *reqState, method, path string, body []byte, stream bool) (*http.Response, bool) {
	kc := st.p.keys
	key := kc.get()
	if key == nil {
		var err error
		if key, err = kc.reload(ctx, nil); key == nil {
			g.log.Warn("gateway has no upstream key", "workspace", st.p.workspace, "err", err)
			writeError(w, http.StatusServiceUnavailable, typeUpstream, "upstream_key_unavailable",
				"the upstream key of workspace "+st.p.workspace+" is not available")
			return nil, false
		}
	}
	for attempt := 0; ; attempt++ {
		st.sentKey = key.apiKey
		resp, err := g.send(ctx, st, method, path, body, stream, key)
		if err != nil {
			st.wrote = !neverSent(err)
			if r.Context().Err() != nil {
				return nil, false // client gone
			}
			g.log.Warn("gateway upstream request failed", "workspace", st.p.workspace, "route", st.route, "err", err)
			writeError(w, http.StatusBadGateway, typeUpstream, "upstream_unreachable", "the upstream platform could not be reached")
			return nil, false
		}
		if resp.StatusCode != http.StatusUnauthorized || attempt > 0 {
			return resp, true
		}
		g.m.upstream.WithLabelValues(st.p.workspace, "unauthorized").Inc()
		nk, rerr := kc.reload(ctx, key)
		if nk == nil || nk.apiKey == key.apiKey {
			if rerr != nil {
				g.log.Warn("gateway key re-read after upstream 401 failed", "workspace", st.p.workspace, "err", rerr)
			}
			return resp, true // same key: the 401 stands
		}
		drain(resp.Body)
		key = nk
		st.retried = true
		g.m.upstream.WithLabelValues(st.p.workspace, "retried").Inc()
	}
}

// Header values the gateway sets, shared by every request (net/http never
// modifies a request's or handler's header values in place; their length
// equals their capacity, so an append elsewhere copies).
var (
	hdrJSON    = []string{"application/json"}
	hdrSSE     = []string{"text/event-stream"}
	hdrUA      = []string{"mrbacd-gateway"}
	hdrNoCache = []string{"no-cache"}
	hdrNo      = []string{"no"}
)

// send performs one upstream round trip, adding its time to st.upstream.
func (g *Gateway) send(ctx context.Context, st *reqState, method, path string, body []byte, stream bool, key *upKey) (*http.Response, error) {
	u := g.urls[path]
	req := http.Request{
		Method: method, URL: u, Host: u.Host,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: make(http.Header, 4),
	}
	if body != nil {
		// A bytes.Reader (behind NopCloser) lets the transport write the
		// headers and the body in one write.
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		req.Header["Content-Type"] = hdrJSON
	}
	req.Header["Authorization"] = key.authHdr
	if stream {
		req.Header["Accept"] = hdrSSE
	} else {
		req.Header["Accept"] = hdrJSON
	}
	req.Header["User-Agent"] = hdrUA
	s := time.Now()
	resp, err := g.rt.RoundTrip(req.WithContext(ctx))
	st.upstream += time.Since(s)
	return resp, err
}

// modelList is the upstream /v1/models answer.
type modelList struct {
	Object string            `json:"object"`
	Data   []json.RawMessage `json:"data"`
}

// models serves /v1/models filtered to the models both the role and the
// workspace allow.
func (g *Gateway) models(w *respWriter, r *http.Request, st *reqState) {
	if !g.authenticate(w, r, st) {
		return
	}
	g.bodyDone(st)
	resp, ok := g.forward(r.Context(), w, r, st, http.MethodGet, pathModels, nil, false)
	if !ok {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		g.relayError(w, st, resp)
		return
	}
	b, err := io.ReadAll(io.LimitReader(timedReader{resp.Body, &st.upstream}, maxUpstreamBody))
	var list modelList
	if err == nil {
		err = json.Unmarshal(b, &list)
	}
	if err != nil {
		writeError(w, http.StatusBadGateway, typeUpstream, "", "the upstream model list could not be read")
		return
	}
	out := modelList{Object: "list", Data: make([]json.RawMessage, 0, len(list.Data))}
	if list.Object != "" {
		out.Object = list.Object
	}
	for _, m := range list.Data {
		var id struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(m, &id) == nil && st.p.role.allows(id.ID) && st.p.ws.allows(id.ID) {
			out.Data = append(out.Data, m)
		}
	}
	ob, _ := json.Marshal(out)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(ob)))
	w.WriteHeader(http.StatusOK)
	w.Write(ob)
}
