package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// routeKind says how a route authenticates.
type routeKind int

const (
	adminRoute     routeKind = iota // admin key, Bearer or x-api-key
	inferenceRoute                  // an inference key, Bearer
	controlRoute                    // admin key; never faulted
	openRoute                       // no auth
)

// handlerFunc serves an authenticated request; rec is the inference key.
type handlerFunc func(w http.ResponseWriter, r *http.Request, rec *keyRec, pattern string)

func (s *Server) routes() {
	s.mux = http.NewServeMux()
	s.stats = map[string]*atomic.Int64{}
	add := func(pattern string, kind routeKind, h handlerFunc) {
		s.stats[pattern] = &atomic.Int64{}
		s.mux.Handle(pattern, s.wrap(pattern, kind, h))
	}
	add("GET /v1/admin/api-keys", adminRoute, s.listKeys)
	add("POST /v1/admin/api-keys", adminRoute, s.createKey)
	add("DELETE /v1/admin/api-keys/{key_id}", adminRoute, s.deleteKey)
	add("GET /v1/admin/workspaces", adminRoute, s.listWorkspaces)
	add("POST /v1/admin/workspaces", adminRoute, s.createWorkspace)
	add("DELETE /v1/admin/workspaces/{uuid}", adminRoute, s.archiveWorkspace)
	add("GET /v1/admin/users", adminRoute, s.listUsers)
	add("GET /v1/admin/usage", adminRoute, s.getUsage)
	add("GET /v1/admin/spend-limit", adminRoute, s.getSpendLimit)
	add("POST /v1/admin/spend-limit", adminRoute, s.setSpendLimit)
	add("GET /v1/admin/rate-limit", adminRoute, s.getRateLimit)
	add("GET /v1/admin/audit-logs", adminRoute, s.listAuditLogs)
	add("GET /v1/models", inferenceRoute, s.listModels)
	add("POST /v1/chat/completions", inferenceRoute, s.chat)
	add("POST /v1/embeddings", inferenceRoute, s.embeddings)
	add("GET /sandbox/healthz", openRoute, func(w http.ResponseWriter, _ *http.Request, _ *keyRec, _ string) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	add("GET /sandbox/clock", controlRoute, s.ctlGetClock)
	add("POST /sandbox/clock", controlRoute, s.ctlSetClock)
	add("GET /sandbox/faults", controlRoute, s.ctlListFaults)
	add("POST /sandbox/faults", controlRoute, s.ctlInjectFault)
	add("DELETE /sandbox/faults", controlRoute, s.ctlClearFaults)
	add("GET /sandbox/events", controlRoute, s.ctlEvents)
	add("GET /sandbox/keys", controlRoute, s.ctlKeys)
	add("GET /sandbox/stats", controlRoute, s.ctlStats)
	add("DELETE /sandbox/stats", controlRoute, s.ctlResetStats)
	add("POST /sandbox/console", controlRoute, s.ctlConsole)
	add("/", openRoute, func(w http.ResponseWriter, _ *http.Request, _ *keyRec, _ string) {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not Found"})
	})
}

func (s *Server) wrap(pattern string, kind routeKind, h handlerFunc) http.Handler {
	counter := s.stats[pattern]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		counter.Add(1)
		s.log.Debug("sandbox request", "route", pattern, "path", r.URL.Path)
		if kind == adminRoute || kind == inferenceRoute {
			if f := s.takeFault(pattern); f != nil && s.applyFault(w, r, f) {
				return
			}
		}
		switch kind {
		case adminRoute, controlRoute:
			k := s.adminFor(r)
			if k == nil {
				s.refuseAdmin(w, r, pattern)
				return
			}
			h(w, withActor(r, k), nil, pattern)
		case inferenceRoute:
			rec := s.authInference(w, r, pattern)
			if rec != nil {
				h(w, r, rec, pattern)
			}
		default:
			h(w, r, nil, pattern)
		}
	})
}

// refuseAdmin answers a request without the admin key: 403 with no body
// for a valid inference key (a real key, the wrong kind), else 401.
func (s *Server) refuseAdmin(w http.ResponseWriter, r *http.Request, pattern string) {
	tok := bearer(r)
	if tok == "" {
		tok = r.Header.Get("x-api-key")
	}
	s.mu.Lock()
	rec, known := s.keyByPlain[tok]
	if known {
		s.event(EventReject, rec, pattern, "inference key on admin route")
	} else {
		s.event(EventReject, nil, pattern, "bad admin key")
	}
	s.mu.Unlock()
	if known {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Unauthorized", "request_id": s.requestID()})
}

// authInference resolves the Bearer key or answers 401. The 401 body
// varies by route between the two shapes seen from the platform.
func (s *Server) authInference(w http.ResponseWriter, r *http.Request, pattern string) *keyRec {
	tok := bearer(r)
	s.mu.RLock()
	rec, ok := s.keyByPlain[tok]
	reason := "unknown key"
	if ok {
		reason = s.rejectReason(rec)
	}
	s.mu.RUnlock()
	if ok && reason == "" {
		return rec
	}
	s.mu.Lock()
	if ok {
		s.event(EventReject, rec, pattern, reason)
	} else {
		if tok == "" {
			reason = "no key"
		}
		s.event(EventReject, nil, pattern, reason)
	}
	s.mu.Unlock()
	if pattern == "GET /v1/models" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Unauthorized", "request_id": s.requestID()})
	} else {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"detail": "Unauthorized"})
	}
	return nil
}

// recordUse sets last_used, adds usage and logs a use event.
func (s *Server) recordUse(rec *keyRec, pattern, model string, prompt, completion int64) {
	now := s.Now().UTC()
	today := now.Format(time.DateOnly)
	month := today[:7]
	s.mu.Lock()
	d := s.today()
	if rec.LastUsed == nil || *rec.LastUsed != d {
		rec.LastUsed = &d
	}
	if model != "" {
		s.addUsage(rec.WorkspaceID, month, "completion", model, prompt, completion)
	}
	s.event(EventUse, rec, pattern, "")
	s.mu.Unlock()
}

// spendLimitReached reports whether the organization's monthly limit is hit.
func (s *Server) spendLimitReached() bool {
	month := s.Now().UTC().Format("2006-01")
	s.mu.RLock()
	defer s.mu.RUnlock()
	return !s.noLimit && s.monthCost[month] >= float64(s.spendLimit)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"detail":"internal error"}`, http.StatusInternalServerError)
		return
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// detail is one entry of a 422 body.
type detail struct {
	Loc  []string `json:"loc"`
	Msg  string   `json:"msg"`
	Type string   `json:"type"`
}

// writeValidation answers 422 in the documented shape {"detail": [...]}.
func writeValidation(w http.ResponseWriter, ds ...detail) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"detail": ds})
}

// writeErrorObject answers with the {"object":"error",...} shape.
func writeErrorObject(w http.ResponseWriter, status int, msg, typ, code string) {
	var c any
	if code != "" {
		c = code
	}
	writeJSON(w, status, map[string]any{"object": "error", "message": msg, "type": typ, "param": nil, "code": c})
}

const maxRequestBody = 8 << 20

// decodeStrict decodes a JSON body rejecting unknown fields. It returns the
// 422 details to send, never the request's values.
func decodeStrict(r *http.Request, v any) []detail {
	body := http.MaxBytesReader(nil, r.Body, maxRequestBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			return []detail{{Loc: []string{"body"}, Msg: "Unexpected data after the JSON body", Type: "json_invalid"}}
		}
		return nil
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		f, _ = strconv.Unquote(f)
		return []detail{{Loc: []string{"body", f}, Msg: "Extra inputs are not permitted", Type: "extra_forbidden"}}
	}
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		loc := []string{"body"}
		if ute.Field != "" {
			loc = append(loc, strings.Split(ute.Field, ".")...)
		}
		return []detail{{Loc: loc, Msg: fmt.Sprintf("Input should be a valid %s", jsonTypeName(ute.Type.Kind().String())), Type: "type_error"}}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return []detail{{Loc: []string{"body"}, Msg: "Request body too large", Type: "value_error"}}
	}
	return []detail{{Loc: []string{"body"}, Msg: "Invalid JSON", Type: "json_invalid"}}
}

func jsonTypeName(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"):
		return "integer"
	case strings.HasPrefix(kind, "float"):
		return "number"
	case kind == "slice":
		return "list"
	case kind == "struct", kind == "map":
		return "object"
	}
	return kind
}

func missing(field string) detail {
	return detail{Loc: []string{"body", field}, Msg: "Field required", Type: "missing"}
}

// queryInt reads an integer query parameter; ok is false (and a 422 sent)
// when it is malformed or out of [lo, hi].
func queryInt(w http.ResponseWriter, r *http.Request, name string, def, lo, hi int) (int, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		writeValidation(w, detail{Loc: []string{"query", name}, Msg: fmt.Sprintf("Input should be an integer between %d and %d", lo, hi), Type: "value_error"})
		return 0, false
	}
	return n, true
}
