package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Fault makes a route misbehave. Route is a pattern as in Stats ("POST
// /v1/admin/api-keys", "DELETE /v1/admin/api-keys/{key_id}"), a bare path
// ("/v1/models", any method) or "*" (every /v1/ route). The fault applies
// Times times (0: until cleared): after Latency, it drops the connection
// (Drop), or answers Status with Body (a default body per status when
// empty) and a Retry-After header when RetryAfter is set. A fault with only
// a Latency delays the request, which is then served normally. A 2xx
// Status replaces the answer with Body, to serve the variant shapes real
// servers were seen to send.
type Fault struct {
	Route      string        `json:"route"`
	Status     int           `json:"status,omitempty"`
	Times      int           `json:"times,omitempty"`
	Latency    time.Duration `json:"-"`
	RetryAfter string        `json:"retry_after,omitempty"`
	Drop       bool          `json:"drop,omitempty"`
	Body       string        `json:"body,omitempty"`

	used int
}

type faultJSON struct {
	Route      string          `json:"route"`
	Status     int             `json:"status,omitempty"`
	Times      int             `json:"times,omitempty"`
	Latency    json.RawMessage `json:"latency,omitempty"`
	RetryAfter string          `json:"retry_after,omitempty"`
	Drop       bool            `json:"drop,omitempty"`
	Body       string          `json:"body,omitempty"`
}

// MarshalJSON writes Latency as a Go duration string ("150ms").
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{Route: f.Route, Status: f.Status, Times: f.Times, RetryAfter: f.RetryAfter, Drop: f.Drop, Body: f.Body}
	if f.Latency > 0 {
		j.Latency = json.RawMessage(strconv.Quote(f.Latency.String()))
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads Latency as a duration string or a number of milliseconds.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("fault: %w", err)
	}
	*f = Fault{Route: j.Route, Status: j.Status, Times: j.Times, RetryAfter: j.RetryAfter, Drop: j.Drop, Body: j.Body}
	if len(j.Latency) > 0 {
		var s string
		var ms float64
		switch {
		case json.Unmarshal(j.Latency, &s) == nil:
			d, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("fault: latency %q: want a duration like 150ms", s)
			}
			f.Latency = d
		case json.Unmarshal(j.Latency, &ms) == nil:
			f.Latency = time.Duration(ms * float64(time.Millisecond))
		default:
			return fmt.Errorf("fault: latency: want a duration string or milliseconds")
		}
	}
	return f.check()
}

// CheckFault reports whether f is valid and names a /v1/ route this
// sandbox serves (a pattern, a path or "*").
func (s *Server) CheckFault(f Fault) error {
	if err := f.check(); err != nil {
		return err
	}
	if f.Route == "*" {
		return nil
	}
	for pattern := range s.stats {
		if _, path, _ := strings.Cut(pattern, " "); strings.HasPrefix(path, "/v1/") && f.matches(pattern) {
			return nil
		}
	}
	return fmt.Errorf("fault: route %q: no such /v1/ route (use a pattern like \"GET /v1/models\", a path, or \"*\")", f.Route)
}

func (f *Fault) check() error {
	switch {
	case f.Route == "":
		return fmt.Errorf("fault: route is required (a pattern like \"GET /v1/models\", a path, or \"*\")")
	case f.Status != 0 && (f.Status < 200 || f.Status > 599):
		return fmt.Errorf("fault: status %d: want 200-599", f.Status)
	case f.Times < 0:
		return fmt.Errorf("fault: times must not be negative")
	case f.Latency < 0:
		return fmt.Errorf("fault: latency must not be negative")
	case f.Status == 0 && !f.Drop && f.Latency == 0:
		return fmt.Errorf("fault: give a status, drop or latency")
	}
	return nil
}

// InjectFault adds a fault; faults are tried in the order injected.
// An invalid fault (see the Fault fields, CheckFault) is ignored with an
// error log line.
func (s *Server) InjectFault(f Fault) {
	if err := s.CheckFault(f); err != nil {
		s.log.Error("sandbox: fault ignored", "err", err)
		return
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	f.used = 0
	s.faults = append(s.faults, &f)
	s.faultCount.Store(int32(len(s.faults)))
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = nil
	s.faultCount.Store(0)
}

// Faults returns the active faults.
func (s *Server) Faults() []Fault {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	out := make([]Fault, len(s.faults))
	for i, f := range s.faults {
		out[i] = *f
		out[i].Times = f.remaining()
	}
	return out
}

func (f *Fault) remaining() int {
	if f.Times == 0 {
		return 0
	}
	return f.Times - f.used
}

func (f *Fault) matches(pattern string) bool {
	if f.Route == "*" || f.Route == pattern {
		return true
	}
	_, path, _ := strings.Cut(pattern, " ")
	return f.Route == path
}

// takeFault returns the first fault for pattern and counts its use.
func (s *Server) takeFault(pattern string) *Fault {
	if s.faultCount.Load() == 0 {
		return nil
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	for i, f := range s.faults {
		if !f.matches(pattern) {
			continue
		}
		f.used++
		c := *f
		if f.Times > 0 && f.used >= f.Times {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
			s.faultCount.Store(int32(len(s.faults)))
		}
		return &c
	}
	return nil
}

// applyFault serves the fault; it reports whether the request is answered.
// FaultHeader marks an answer written by an injected fault.
const FaultHeader = "X-Sandbox-Fault"

func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f *Fault) bool {
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-r.Context().Done():
			t.Stop()
			return true
		case <-t.C:
		}
	}
	if f.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler) // HTTP/2 or no hijack: abort the stream
	}
	if f.Status == 0 {
		return false
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	// A test's made-up answer need not follow the spec: the contract
	// checker skips answers marked so.
	w.Header().Set(FaultHeader, "1")
	body := f.Body
	if body == "" {
		body = defaultFaultBody(f.Status, s.requestID())
	}
	if body != "-" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(f.Status)
	if body != "-" {
		_, _ = w.Write([]byte(body))
	}
	return true
}

// defaultFaultBody is a body the platform has been seen to send for status.
// A Fault.Body of "-" sends no body.
func defaultFaultBody(status int, rid string) string {
	switch {
	case status == http.StatusUnauthorized:
		return `{"message":"Unauthorized","request_id":"` + rid + `"}`
	case status == http.StatusForbidden:
		return "-"
	case status == http.StatusNotFound:
		return `{"detail":"Not Found"}`
	case status == http.StatusUnprocessableEntity:
		return `{"detail":[{"loc":["body"],"msg":"Injected validation error","type":"value_error"}]}`
	case status == http.StatusTooManyRequests:
		return `{"message":"Requests rate limit exceeded"}`
	case status >= 500:
		return `{"object":"error","message":"Internal server error","type":"internal_server_error","param":null,"code":"` + strconv.Itoa(status) + `"}`
	case status < 300:
		return `{}`
	default:
		return `{"object":"error","message":"Injected error","type":"invalid_request_error","param":null,"code":null}`
	}
}
