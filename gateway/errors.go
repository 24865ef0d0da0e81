package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"
)

// apiError is Mistral's error body.
type apiError struct {
	Object  string  `json:"object"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// Error types used in bodies.
const (
	typeAuth       = "authentication_error"
	typePermission = "permission_error"
	typeInvalid    = "invalid_request_error"
	typeRateLimit  = "rate_limited"
	typeNotFound   = "not_found"
	typeUpstream   = "upstream_error"
	// typeUnavailable: the gateway cannot decide on a budget now (503).
	typeUnavailable = "service_unavailable"
)

// writeError writes an error in Mistral's shape. code names the limit or
// rule (may be empty).
func writeError(w http.ResponseWriter, status int, typ, code, msg string) {
	e := apiError{Object: "error", Message: msg, Type: typ}
	if code != "" {
		e.Code = &code
	}
	b, _ := json.Marshal(e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// writeRetry writes a 429 with Retry-After in whole seconds, rounded up,
// or a 403 when the request alone exceeds the limit.
func writeRetry(w http.ResponseWriter, hit *limitHit) {
	if hit.never {
		writeError(w, http.StatusForbidden, typePermission, hit.name,
			"the request's worst case (prompt estimate plus max_tokens) exceeds the role's "+hit.name+" of "+hit.limit+" on its own; lower max_tokens or shorten the request")
		return
	}
	secs := int64((hit.retry + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	writeError(w, http.StatusTooManyRequests, typeRateLimit, hit.name,
		hit.name+" limit of "+hit.limit+" reached; retry after "+strconv.FormatInt(secs, 10)+"s")
}

// passError relays an upstream error: a body already in a Mistral shape (a
// JSON object) as is, anything else wrapped in one.
func passError(w http.ResponseWriter, status int, hdr http.Header, body []byte) {
	t := bytes.TrimSpace(body)
	if len(t) > 0 && t[0] == '{' && json.Valid(t) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		if ra := hdr.Get("Retry-After"); ra != "" {
			h.Set("Retry-After", ra)
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		w.Write(body)
		return
	}
	if ra := hdr.Get("Retry-After"); ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	msg := http.StatusText(status)
	if len(t) > 0 && len(t) <= 512 && utf8Printable(t) {
		msg = string(t)
	}
	writeError(w, status, typeUpstream, "", msg)
}

func utf8Printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return utf8.Valid(b)
}
