package mistral

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrorKind classifies an API error so callers can branch on it.
type ErrorKind string

// The kinds of API error.
const (
	KindBadRequest   ErrorKind = "bad_request"  // 400 and other 4xx not listed below
	KindUnauthorized ErrorKind = "unauthorized" // 401: missing, invalid, expired or deleted key
	KindForbidden    ErrorKind = "forbidden"    // 403: no access to the route, model or tier
	KindNotFound     ErrorKind = "not_found"    // 404
	KindValidation   ErrorKind = "validation"   // 422
	KindRateLimited  ErrorKind = "rate_limited" // 429 (also a reached monthly spend limit)
	KindServer       ErrorKind = "server"       // 5xx
)

// Sentinel errors matched by errors.Is against an *APIError of that kind.
var (
	ErrBadRequest   = errors.New("mistral: bad request")
	ErrUnauthorized = errors.New("mistral: unauthorized")
	ErrForbidden    = errors.New("mistral: forbidden")
	ErrNotFound     = errors.New("mistral: not found")
	ErrValidation   = errors.New("mistral: validation error")
	ErrRateLimited  = errors.New("mistral: rate limited")
	ErrServer       = errors.New("mistral: server error")
)

var kindSentinel = map[ErrorKind]error{
	KindBadRequest:   ErrBadRequest,
	KindUnauthorized: ErrUnauthorized,
	KindForbidden:    ErrForbidden,
	KindNotFound:     ErrNotFound,
	KindValidation:   ErrValidation,
	KindRateLimited:  ErrRateLimited,
	KindServer:       ErrServer,
}

// KindOf returns the kind for an HTTP status (>= 400).
func KindOf(status int) ErrorKind {
	switch {
	case status == http.StatusUnauthorized:
		return KindUnauthorized
	case status == http.StatusForbidden:
		return KindForbidden
	case status == http.StatusNotFound:
		return KindNotFound
	case status == http.StatusUnprocessableEntity:
		return KindValidation
	case status == http.StatusTooManyRequests:
		return KindRateLimited
	case status >= 500:
		return KindServer
	default:
		return KindBadRequest
	}
}

// ValidationDetail is one entry of a 422 "detail" list. The offending input
// value the server may echo is deliberately not kept.
type ValidationDetail struct {
	Loc  []string `json:"loc"`
	Msg  string   `json:"msg"`
	Type string   `json:"type"`
}

// String renders the detail as "body.name: Field required (missing)".
func (d ValidationDetail) String() string {
	s := strings.Join(d.Loc, ".")
	if s != "" {
		s += ": "
	}
	s += d.Msg
	if d.Type != "" {
		s += " (" + d.Type + ")"
	}
	return s
}

// APIError is a non-2xx answer from the platform.
type APIError struct {
	StatusCode int
	Kind       ErrorKind
	// Message is the server's message, or the status text when the body
	// had none. Any key the client sent is scrubbed from it.
	Message   string
	RequestID string
	// Type and Code are the error object's "type" and "code" when present.
	Type, Code string
	// RetryAfter is the server's Retry-After (0 when absent).
	RetryAfter time.Duration
	// Details are the entries of a 422 body.
	Details      []ValidationDetail
	Method, Path string
}

// Error implements error.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mistral: %s %s: %d %s", e.Method, e.Path, e.StatusCode, e.Kind)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	for i, d := range e.Details {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(d.String())
	}
	if e.RequestID != "" {
		b.WriteString(" (request_id ")
		b.WriteString(e.RequestID)
		b.WriteString(")")
	}
	return b.String()
}

// Is matches the sentinel of e's kind (errors.Is(err, ErrNotFound)).
func (e *APIError) Is(target error) bool {
	s, ok := kindSentinel[e.Kind]
	return ok && s == target
}

// TransportError is a request that got no HTTP answer: a refused or dropped
// connection, a timeout. It is retryable.
type TransportError struct {
	Method, Path string
	Err          error
}

// Error implements error.
func (e *TransportError) Error() string {
	return fmt.Sprintf("mistral: %s %s: %v", e.Method, e.Path, e.Err)
}

// Unwrap returns the underlying network error.
func (e *TransportError) Unwrap() error { return e.Err }

// Retryable reports whether err is worth retrying: a 429, a 5xx, a timeout
// or a connection error. Context cancellation is not retryable.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Kind == KindRateLimited || ae.Kind == KindServer || ae.StatusCode == http.StatusRequestTimeout
	}
	// A TransportError is an attempt that failed on its own (an HTTP client
	// timeout included); the caller's context ending is reported otherwise.
	var te *TransportError
	if errors.As(err, &te) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// keyLike matches tokens that look like API keys: 24+ letters and digits.
var keyLike = regexp.MustCompile(`[A-Za-z0-9]{24,}`)

// ScrubKeyLike replaces key-looking tokens (24+ letters and digits, with
// both a letter and a digit) in server text by Redacted: what a proxy
// relaying an upstream's error text (the gateway) must apply too.
func ScrubKeyLike(s string) string { return scrubKeyLike(s) }

// scrubKeyLike replaces key-looking tokens (with both a letter and a digit)
// in server text, so a server echoing some key cannot leak it through us.
func scrubKeyLike(s string) string {
	return keyLike.ReplaceAllStringFunc(s, func(tok string) string {
		if strings.ContainsAny(tok, "0123456789") && strings.IndexFunc(tok, func(r rune) bool { return r > '9' }) >= 0 {
			return Redacted
		}
		return tok
	})
}

// parseAPIError builds the error for a non-2xx response from its body,
// whatever shape it has (see mistral-api.md), including none. scrub lists
// values (the keys sent) that must never appear in the message.
func parseAPIError(status int, header http.Header, body []byte, method, path string, now time.Time, scrub ...string) *APIError {
	e := &APIError{StatusCode: status, Kind: KindOf(status), Method: method, Path: path}
	e.RetryAfter = parseRetryAfter(header.Get("Retry-After"), now)
	if rid := header.Get("x-request-id"); rid != "" {
		e.RequestID = rid
	}
	body = []byte(strings.TrimSpace(string(body)))
	// Scrub the keys sent before anything cuts the body: a key split by the
	// excerpt below would no longer match as a whole.
	for _, s := range scrub {
		if s != "" {
			body = bytes.ReplaceAll(body, []byte(s), []byte(Redacted))
		}
	}
	if len(body) > 0 {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err == nil {
			e.fill(m)
		} else if body[0] != '{' && body[0] != '[' {
			// A plain-text body (a proxy's page): keep a short, single-line excerpt.
			e.Message = excerpt(string(body))
		}
	}
	e.Details = uniqueDetails(e.Details)
	e.Message = scrubKeyLike(e.Message)
	for i := range e.Details {
		e.Details[i].Msg = scrubKeyLike(e.Details[i].Msg)
	}
	if e.Message == "" && len(e.Details) == 0 {
		e.Message = http.StatusText(status)
	}
	for _, s := range scrub {
		if s != "" {
			e.Message = strings.ReplaceAll(e.Message, s, Redacted)
			e.RequestID = strings.ReplaceAll(e.RequestID, s, Redacted)
			for i := range e.Details {
				e.Details[i].Msg = strings.ReplaceAll(e.Details[i].Msg, s, Redacted)
			}
		}
	}
	return e
}

func excerpt(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// fill reads the fields of an error object; "message" and "detail" may be a
// string, a detail list, or an object wrapping a detail list.
func (e *APIError) fill(m map[string]json.RawMessage) {
	if v, ok := m["request_id"]; ok && e.RequestID == "" {
		e.RequestID = jsonScalar(v)
	}
	if v, ok := m["type"]; ok {
		e.Type = jsonScalar(v)
	}
	if v, ok := m["code"]; ok {
		e.Code = jsonScalar(v)
	}
	for _, field := range []string{"message", "detail", "error"} {
		v, ok := m[field]
		if !ok {
			continue
		}
		e.fillValue(v, 0)
	}
}

func (e *APIError) fillValue(v json.RawMessage, depth int) {
	if depth > 3 {
		return
	}
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		// A message may be the JSON of a detail list or object, encoded
		// as a string: read what it holds.
		if t := strings.TrimSpace(s); strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
			if json.Valid([]byte(t)) {
				e.fillValue(json.RawMessage(t), depth+1)
				return
			}
		}
		if e.Message == "" {
			e.Message = excerpt(s)
		}
		return
	}
	var list []json.RawMessage
	if err := json.Unmarshal(v, &list); err == nil {
		for _, item := range list {
			if d, ok := parseDetail(item); ok {
				e.Details = append(e.Details, d)
			}
		}
		return
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(v, &obj); err == nil {
		for _, field := range []string{"message", "detail"} {
			if inner, ok := obj[field]; ok {
				e.fillValue(inner, depth+1)
			}
		}
		if e.Type == "" {
			if t, ok := obj["type"]; ok {
				e.Type = jsonScalar(t)
			}
		}
	}
}

func parseDetail(raw json.RawMessage) (ValidationDetail, bool) {
	var d struct {
		Loc  []json.RawMessage `json:"loc"`
		Msg  string            `json:"msg"`
		Type string            `json:"type"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return ValidationDetail{Msg: excerpt(s)}, true
		}
		return ValidationDetail{}, false
	}
	out := ValidationDetail{Msg: excerpt(d.Msg), Type: d.Type}
	for _, l := range d.Loc {
		out.Loc = append(out.Loc, jsonScalar(l))
	}
	return out, true
}

// jsonScalar renders a JSON string, number or bool as text ("" for null).
func jsonScalar(v json.RawMessage) string {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s
	}
	t := strings.TrimSpace(string(v))
	if t == "null" || strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
		return ""
	}
	return t
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(n * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// uniqueDetails drops repeated details: a body may carry the same list
// both as "detail" and inside "message".
func uniqueDetails(ds []ValidationDetail) []ValidationDetail {
	if len(ds) < 2 {
		return ds
	}
	seen := map[string]bool{}
	out := ds[:0]
	for _, d := range ds {
		if k := d.String(); !seen[k] {
			seen[k] = true
			out = append(out, d)
		}
	}
	return out
}
