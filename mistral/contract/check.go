package contract

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// SkipHeader marks an answer the checker leaves alone: the sandbox sets it
// on answers a test injected (sandbox.FaultHeader has this value).
const SkipHeader = "X-Sandbox-Fault"

// Checker is an http.Handler that passes requests to a handler and checks
// each exchange against the contract: the answer always (a documented
// status's body must validate strictly, with no field the spec does not
// list, and a 2xx status must be documented), and
// the request (query parameters and JSON body) when CheckRequests is set.
// Routes the contract does not describe are passed through unchecked.
type Checker struct {
	c             *Contract
	next          http.Handler
	checkRequests bool

	mu       sync.Mutex
	problems []string
	checked  map[string]int
}

// NewChecker wraps next. With checkRequests, requests that break the
// contract are problems too (for a client's tests; a server's tests send
// bad requests on purpose).
func NewChecker(c *Contract, next http.Handler, checkRequests bool) *Checker {
	return &Checker{c: c, next: next, checkRequests: checkRequests, checked: map[string]int{}}
}

// Problems returns the contract violations seen so far.
func (k *Checker) Problems() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.problems...)
}

// Checked returns how many answers were checked per endpoint.
func (k *Checker) Checked() map[string]int {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[string]int, len(k.checked))
	for e, n := range k.checked {
		out[e] = n
	}
	return out
}

func (k *Checker) report(endpoint, what string, errs []string) {
	if len(errs) == 0 {
		return
	}
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Sprintf("... and %d more", len(errs)-5))
	}
	k.mu.Lock()
	k.problems = append(k.problems, fmt.Sprintf("%s: %s: %s", endpoint, what, strings.Join(errs, "; ")))
	k.mu.Unlock()
}

// ServeHTTP implements http.Handler.
func (k *Checker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ep := k.c.Endpoint(r.Method, r.URL.Path)
	if ep == nil {
		k.next.ServeHTTP(w, r)
		return
	}
	if k.checkRequests {
		k.checkRequest(name, ep, r)
	}
	rec := &recorder{ResponseWriter: w}
	k.next.ServeHTTP(rec, r)
	if rec.hijacked || w.Header().Get(SkipHeader) != "" || r.Context().Err() != nil {
		return // a dropped connection, an injected answer, or a client that left
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	k.mu.Lock()
	k.checked[name]++
	k.mu.Unlock()
	resp, documented := ep.Responses[strconv.Itoa(status)]
	switch {
	case !documented && status < 300:
		k.report(name, "answer", []string{fmt.Sprintf("status %d is not documented", status)})
	case !documented:
		// An error status the spec does not document (401, 404, 429, ...):
		// its body follows the shapes seen in the wild, not the contract.
	case strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream"):
		k.checkStream(name, resp, rec.body.Bytes())
	case resp.JSON != nil:
		k.report(name, fmt.Sprintf("answer %d", status), k.c.ValidateStrictJSON(resp.JSON, rec.body.Bytes()))
	case rec.body.Len() > 0 && resp.Stream == nil:
		k.report(name, fmt.Sprintf("answer %d", status), []string{"a body where the spec documents none"})
	}
}

func (k *Checker) checkStream(name string, resp *Response, body []byte) {
	if resp.Stream == nil {
		k.report(name, "answer", []string{"a stream where the spec documents JSON"})
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 4<<20)
	for i := 0; sc.Scan(); {
		data, ok := strings.CutPrefix(sc.Text(), "data:")
		if !ok || strings.TrimSpace(data) == "[DONE]" {
			continue
		}
		// Not strict: the platform adds fields to chunks, and the sandbox
		// does too, so clients are tested for it.
		event := []byte(`{"data": ` + data + `}`)
		k.report(name, fmt.Sprintf("stream event %d", i), k.c.ValidateJSON(resp.Stream, event))
		i++
	}
}

func (k *Checker) checkRequest(name string, ep *Endpoint, r *http.Request) {
	var errs []string
	q := r.URL.Query()
	for p, vals := range q {
		param, ok := ep.Query[p]
		if !ok {
			errs = append(errs, "query "+p+": not in the spec")
			continue
		}
		if e := k.c.checkParam(param.Schema, vals); e != "" {
			errs = append(errs, "query "+p+": "+e)
		}
	}
	for p, param := range ep.Query {
		if param.Required && !q.Has(p) {
			errs = append(errs, "query "+p+": required")
		}
	}
	k.report(name, "request query", errs)
	if ep.Request == nil || r.Body == nil {
		return
	}
	body, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		k.report(name, "request body", []string{err.Error()})
		return
	}
	k.report(name, "request body", k.c.ValidateJSON(ep.Request, body))
}

// checkParam checks a query parameter's values: the first value read as
// an integer, boolean or string, whichever the schema takes, or the list
// of values for an array schema.
func (c *Contract) checkParam(s *Schema, vals []string) string {
	list := make([]any, len(vals))
	for i, v := range vals {
		list[i] = v
	}
	candidates := []any{list}
	if len(vals) == 1 {
		v := vals[0]
		candidates = append(candidates, v)
		if _, err := strconv.ParseInt(v, 10, 64); err == nil {
			candidates = append(candidates, json.Number(v))
		}
		if b, err := strconv.ParseBool(v); err == nil {
			candidates = append(candidates, b)
		}
	}
	var first []string
	for _, cand := range candidates {
		errs := c.Validate(s, cand)
		if len(errs) == 0 {
			return ""
		}
		if first == nil || len(vals) == 1 {
			first = errs
		}
	}
	return strings.Join(first, "; ")
}

// recorder keeps a copy of the answer while writing it through.
type recorder struct {
	http.ResponseWriter
	status   int
	body     bytes.Buffer
	hijacked bool
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// Flush passes streaming flushes on.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack lets a handler drop the connection (a fault); nothing is checked.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("contract: the writer cannot hijack")
	}
	r.hijacked = true
	return h.Hijack()
}

// TB is the part of testing.TB Install uses.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Install wraps next in a Checker over the committed contract and fails t
// at cleanup with every violation seen.
func Install(t TB, next http.Handler, checkRequests bool) *Checker {
	t.Helper()
	c, err := Load()
	if err != nil {
		t.Fatalf("%v", err)
	}
	k := NewChecker(c, next, checkRequests)
	t.Cleanup(func() {
		for _, p := range k.Problems() {
			t.Errorf("contract (spec %s): %s", c.Source.Date, p)
		}
	})
	return k
}
