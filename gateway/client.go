package gateway

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// Bounds on what a hostile client can hold.
const (
	// maxTooLargeDrain is how much of a refused (413) body is read and
	// discarded before the connection closes, so that a client still
	// sending reads the 413 instead of a connection reset.
	maxTooLargeDrain = 1 << 20
	// tooLargeDrainTime bounds that drain.
	tooLargeDrainTime = 2 * time.Second
)

// deadliner is what net/http's ResponseWriter offers (and
// http.ResponseController calls) to set a connection's deadlines; asserted
// directly, it costs no allocation per request.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// armRead bounds the reading of the request (its body, and what net/http
// discards of it after an early answer) to ReadTimeout from the start of
// the handler: a client that sends headers and then stalls, or trickles
// its body, is cut off. The deadline is lifted once the body is read
// (bodyDone), so it never cuts an answer that is being relayed.
func (g *Gateway) armRead(hw http.ResponseWriter, _ *http.Request, st *reqState, start time.Time) {
	if g.opts.ReadTimeout <= 0 {
		return
	}
	rc, ok := hw.(deadliner)
	if !ok {
		return
	}
	st.rc = rc
	if rc.SetReadDeadline(start.Add(g.opts.ReadTimeout)) == nil {
		st.deadlines = true
	}
}

// bodyDone lifts the read deadline once the request is read.
func (g *Gateway) bodyDone(st *reqState) {
	if st.deadlines {
		st.rc.SetReadDeadline(time.Time{})
	}
}

// endClient frees the request's max_concurrent slot and clears the
// connection's write deadline (net/http keeps it for the next request on
// the connection otherwise).
func (g *Gateway) endClient(st *reqState) {
	if st.slot {
		st.p.ledger.inflight.Add(-1)
		st.slot = false
	}
	if st.deadlines {
		st.rc.SetWriteDeadline(time.Time{})
	}
}

// takeSlot takes one of the client's max_concurrent slots or writes 429.
func (g *Gateway) takeSlot(w http.ResponseWriter, st *reqState) bool {
	limit := int64(st.p.role.MaxConcurrent)
	if limit <= 0 {
		return true
	}
	if st.p.ledger.inflight.Add(1) > limit {
		st.p.ledger.inflight.Add(-1)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, typeRateLimit, "max_concurrent",
			"max_concurrent limit of "+itoa(limit)+" requests in flight reached; retry after 1s")
		return false
	}
	st.slot = true
	return true
}

// readBody reads the bounded body or writes 413 / 408 / 400.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request, st *reqState) ([]byte, bool) {
	maxBody := st.snap.maxBody
	if r.ContentLength > maxBody {
		g.tooLarge(w, r, st, "request body of "+itoa(r.ContentLength)+" bytes exceeds the limit of "+itoa(maxBody))
		return nil, false
	}
	if n := r.ContentLength; n >= 0 {
		// Known length (within the limit, checked above): read exactly
		// that, in one allocation; the server's body reader ends there.
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			g.bodyFailed(w, err)
			return nil, false
		}
		g.bodyDone(st)
		return b, true
	}
	buf := bytes.NewBuffer(make([]byte, 0, 1024))
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			g.tooLarge(w, r, st, "request body exceeds the limit of "+itoa(maxBody)+" bytes")
			return nil, false
		}
		g.bodyFailed(w, err)
		return nil, false
	}
	g.bodyDone(st)
	return buf.Bytes(), true
}

// bodyFailed answers a body that could not be read: 408 when the client
// stalled past ReadTimeout, 400 otherwise. The connection is closed after.
func (g *Gateway) bodyFailed(w http.ResponseWriter, err error) {
	w.Header().Set("Connection", "close")
	if errors.Is(err, os.ErrDeadlineExceeded) {
		writeError(w, http.StatusRequestTimeout, typeInvalid, "read_timeout",
			"the request body was not received within "+g.opts.ReadTimeout.String())
		return
	}
	writeError(w, http.StatusBadRequest, typeInvalid, "", "reading the request body failed")
}

// tooLarge writes 413, flushes it, then reads and discards a bounded part
// of the body (maxTooLargeDrain, tooLargeDrainTime) before the connection
// closes, so that a client still sending reads the answer instead of a
// reset.
func (g *Gateway) tooLarge(w http.ResponseWriter, r *http.Request, st *reqState, msg string) {
	w.Header().Set("Connection", "close")
	writeError(w, http.StatusRequestEntityTooLarge, typeInvalid, "body_too_large", msg)
	if http.NewResponseController(w).Flush() != nil || st.rc == nil {
		return
	}
	st.rc.SetReadDeadline(time.Now().Add(tooLargeDrainTime))
	io.CopyN(io.Discard, r.Body, maxTooLargeDrain)
}
