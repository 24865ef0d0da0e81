package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/mistral"
)

// plain relays a whole JSON answer and settles its usage. The answer is
// read even when the client hung up (the upstream bills it anyway): its
// usage is what the request is charged.
func (g *Gateway) plain(w *respWriter, r *http.Request, st *reqState, resp *http.Response) {
	buf := respBufPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBuf {
			buf.Reset()
			respBufPool.Put(buf)
		}
	}()
	if n := resp.ContentLength; n > 0 && n < maxUpstreamBody {
		buf.Grow(int(n) + 1)
	}
	err := readTimed(buf, resp.Body, maxUpstreamBody, &st.upstream)
	gone := r.Context().Err() != nil
	if err != nil {
		// Accepted but its usage is unknown: endReservation charges the
		// whole reservation.
		g.settleReserved(st)
		if gone || errors.Is(err, context.Canceled) {
			st.hungUp = true
			g.m.hangup("charged_reservation")
			return
		}
		writeError(w, http.StatusBadGateway, typeUpstream, "", "reading the upstream answer failed")
		return
	}
	b := buf.Bytes()
	if u, ok := findUsage(b); ok {
		g.settle(st, u)
	} else {
		g.settleReserved(st)
	}
	if gone {
		st.hungUp = true
		g.m.hangup("settled")
		return
	}
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	var next time.Time
	g.armWrite(st, &next)
	w.WriteHeader(resp.StatusCode)
	w.Write(b)
}

// armWrite sets the client connection's write deadline to ReadTimeout from
// now when the one set before is more than a quarter of it old: a write
// that makes no progress for that long (a client that stopped reading) is
// cut, while an answer that keeps flowing never is.
func (g *Gateway) armWrite(st *reqState, next *time.Time) {
	d := g.opts.ReadTimeout
	if d <= 0 || st.rc == nil {
		return
	}
	now := time.Now()
	if now.Before(*next) {
		return
	}
	if st.rc.SetWriteDeadline(now.Add(d)) == nil {
		st.deadlines = true
	}
	*next = now.Add(d / 4)
}

// stream relays server-sent events chunk by chunk, flushing each read, and
// settles to the usage of the last chunk. When the client goes away (or
// stops reading) the rest of the stream is still read, without relaying,
// up to maxHangupDrain bytes and HangupDrainTimeout, to learn the usage the
// upstream bills; a stream whose usage never arrives is charged its whole
// reservation.
func (g *Gateway) stream(w *respWriter, r *http.Request, st *reqState, resp *http.Response) {
	h := w.Header()
	h["Content-Type"] = hdrSSE
	h["Cache-Control"] = hdrNoCache
	h["X-Accel-Buffering"] = hdrNo
	var next time.Time
	g.armWrite(st, &next)
	// The headers go out at once, as the upstream's did: a client with a
	// response-header timeout must not wait for a slow first token.
	w.WriteHeader(resp.StatusCode)
	if w.flush() != nil {
		st.hungUp = true
	}
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	var sc sseUsage
	var drained int
	complete := false
	for {
		s := time.Now()
		n, err := resp.Body.Read(buf)
		st.upstream += time.Since(s)
		if n > 0 {
			sc.feed(buf[:n])
			if !st.hungUp && r.Context().Err() != nil {
				st.hungUp = true // the client closed its connection
			}
			if st.hungUp {
				if drained += n; drained > maxHangupDrain {
					break
				}
			} else {
				g.armWrite(st, &next)
				if _, werr := w.Write(buf[:n]); werr != nil || w.flush() != nil {
					st.hungUp = true // keep reading: the upstream bills the rest
				}
			}
		}
		if err == io.EOF {
			complete = true
			break
		}
		if err != nil {
			break
		}
	}
	st.hungUp = st.hungUp || r.Context().Err() != nil
	switch {
	case sc.found: // the usage chunk arrived, even if the client left before it
		g.settle(st, sc.u)
		if st.hungUp {
			g.m.hangup("settled")
		}
	default:
		g.settleReserved(st)
		if st.hungUp {
			g.m.hangup("charged_reservation")
		}
		if !complete && !st.hungUp {
			g.log.Warn("gateway upstream stream broke; charged the whole reservation", "client", st.p.name, "workspace", st.p.workspace, "model", st.model)
		}
	}
}

// relayError passes an upstream error through in Mistral's shape, with
// anything that looks like a key (and the upstream key itself) scrubbed.
func (g *Gateway) relayError(w http.ResponseWriter, st *reqState, resp *http.Response) {
	b, _ := io.ReadAll(io.LimitReader(timedReader{resp.Body, &st.upstream}, 1<<20))
	passError(w, resp.StatusCode, resp.Header, scrubSecrets(b, st.sentKey))
}

// scrubSecrets removes key material from an upstream error body before it
// is relayed: the key the gateway sent, and any key-looking token
// (mistral.ScrubKeyLike). The replacement keeps a JSON body valid.
func scrubSecrets(b []byte, sent string) []byte {
	s := string(b)
	if sent != "" {
		s = strings.ReplaceAll(s, sent, mistral.Redacted)
	}
	return []byte(mistral.ScrubKeyLike(s))
}
