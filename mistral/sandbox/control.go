package sandbox

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Control routes (admin key required):
//
//	GET    /sandbox/clock          → {"now": RFC3339, "frozen": bool}
//	POST   /sandbox/clock          {"now": RFC3339} or {"advance": "24h"}
//	GET    /sandbox/faults         → {"faults": [Fault]}
//	POST   /sandbox/faults         Fault → 204
//	DELETE /sandbox/faults         → 204
//	GET    /sandbox/events?since=N → {"events": [Event]}
//	GET    /sandbox/keys           → {"keys": [KeyState as JSON]}
//	GET    /sandbox/stats          → {"requests": {"GET /v1/models": N}}
//	DELETE /sandbox/stats          → 204
//	POST   /sandbox/console        ConsoleChange → 204 (a person's change, audited)
//	GET    /sandbox/healthz        → {"status": "ok"} (no auth)

func (s *Server) ctlGetClock(w http.ResponseWriter, _ *http.Request, _ *keyRec, _ string) {
	writeJSON(w, http.StatusOK, map[string]any{"now": s.Now().UTC().Format(time.RFC3339Nano), "frozen": s.frozen.Load() != nil})
}

func (s *Server) ctlSetClock(w http.ResponseWriter, r *http.Request, _ *keyRec, p string) {
	var b struct {
		Now     string `json:"now"`
		Advance string `json:"advance"`
	}
	if ds := decodeStrict(r, &b); ds != nil {
		writeValidation(w, ds...)
		return
	}
	switch {
	case b.Now != "" && b.Advance == "":
		t, err := time.Parse(time.RFC3339Nano, b.Now)
		if err != nil {
			writeValidation(w, detail{Loc: []string{"body", "now"}, Msg: "want an RFC 3339 time", Type: "value_error"})
			return
		}
		s.SetNow(t)
	case b.Advance != "" && b.Now == "":
		d, err := time.ParseDuration(b.Advance)
		if err != nil {
			writeValidation(w, detail{Loc: []string{"body", "advance"}, Msg: "want a duration like 24h", Type: "value_error"})
			return
		}
		s.Advance(d)
	default:
		writeValidation(w, detail{Loc: []string{"body"}, Msg: "give exactly one of now, advance", Type: "value_error"})
		return
	}
	s.ctlGetClock(w, r, nil, p)
}

func (s *Server) ctlListFaults(w http.ResponseWriter, _ *http.Request, _ *keyRec, _ string) {
	writeJSON(w, http.StatusOK, map[string]any{"faults": s.Faults()})
}

func (s *Server) ctlInjectFault(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	var f Fault
	buf, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeValidation(w, detail{Loc: []string{"body"}, Msg: "unreadable or too large body", Type: "value_error"})
		return
	}
	err = f.UnmarshalJSON(buf)
	if err == nil {
		err = s.CheckFault(f)
	}
	if err != nil {
		writeValidation(w, detail{Loc: []string{"body"}, Msg: err.Error(), Type: "value_error"})
		return
	}
	s.InjectFault(f)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) ctlClearFaults(w http.ResponseWriter, _ *http.Request, _ *keyRec, _ string) {
	s.ClearFaults()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) ctlEvents(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	var since int64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			writeValidation(w, detail{Loc: []string{"query", "since"}, Msg: "want an integer", Type: "int_parsing"})
			return
		}
		since = n
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": s.EventsSince(since)})
}

type keyStateJSON struct {
	ID          string  `json:"key_id"`
	Name        string  `json:"name"`
	Plaintext   string  `json:"key"`
	HiddenKey   string  `json:"hidden_key"`
	WorkspaceID string  `json:"workspace_id"`
	CreatedBy   string  `json:"created_by"`
	Product     string  `json:"product"`
	CreatedAt   string  `json:"created_at"`
	Expiration  *string `json:"expiration_date"`
	LastUsed    *string `json:"last_used"`
	Deleted     bool    `json:"deleted"`
	DeletedAt   *string `json:"deleted_at"`
}

func (s *Server) ctlKeys(w http.ResponseWriter, _ *http.Request, _ *keyRec, _ string) {
	keys := s.Keys()
	out := make([]keyStateJSON, len(keys))
	for i, k := range keys {
		j := keyStateJSON{ID: k.ID, Name: k.Name, Plaintext: k.Plaintext, HiddenKey: k.HiddenKey, WorkspaceID: k.WorkspaceID,
			CreatedBy: k.CreatedBy, Product: k.Product,
			CreatedAt: k.CreatedAt.UTC().Format(time.RFC3339Nano), Deleted: k.Deleted}
		if k.Expiration != nil {
			v := k.Expiration.String()
			j.Expiration = &v
		}
		if k.LastUsed != nil {
			v := k.LastUsed.String()
			j.LastUsed = &v
		}
		if k.Deleted {
			v := k.DeletedAt.UTC().Format(time.RFC3339Nano)
			j.DeletedAt = &v
		}
		out[i] = j
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": out})
}

func (s *Server) ctlStats(w http.ResponseWriter, _ *http.Request, _ *keyRec, _ string) {
	writeJSON(w, http.StatusOK, map[string]any{"requests": s.Stats()})
}

func (s *Server) ctlResetStats(w http.ResponseWriter, _ *http.Request, _ *keyRec, _ string) {
	s.ResetStats()
	w.WriteHeader(http.StatusNoContent)
}

// ConsoleChange is a change a person makes in the platform's console (not
// through the API), which the audit log attributes to them: exactly one of
// the change fields is set. User names the person by email or id (the
// first user when empty).
type ConsoleChange struct {
	User                string                `json:"user,omitempty"`
	KeyPolicy           *KeyPolicy            `json:"key_policy,omitempty"`
	WorkspaceSpendLimit *WorkspaceLimitChange `json:"workspace_spend_limit,omitempty"`
	RateLimitRule       *RateLimitRuleChange  `json:"rate_limit_rule,omitempty"`
	DeleteKey           string                `json:"delete_key,omitempty"`
}

// WorkspaceLimitChange sets a workspace's (uuid or name) monthly limit;
// a nil Value removes it.
type WorkspaceLimitChange struct {
	Workspace string   `json:"workspace"`
	Value     *float64 `json:"value"`
}

// RateLimitRuleChange creates, updates or deletes a rate-limit rule.
type RateLimitRuleChange struct {
	Action string            `json:"action"`
	ID     string            `json:"id"`
	Meta   map[string]string `json:"meta,omitempty"`
}

// Console applies ch as its person would in the console.
func (s *Server) Console(ch ConsoleChange) error {
	s.mu.RLock()
	var actor *Actor
	for _, u := range s.users {
		if ch.User == "" || u.Email == ch.User || u.ID == ch.User {
			a := UserActor(*u)
			actor = &a
			break
		}
	}
	s.mu.RUnlock()
	if actor == nil {
		return fmt.Errorf("sandbox: console: no user %q", ch.User)
	}
	n := 0
	for _, set := range []bool{ch.KeyPolicy != nil, ch.WorkspaceSpendLimit != nil, ch.RateLimitRule != nil, ch.DeleteKey != ""} {
		if set {
			n++
		}
	}
	switch {
	case n != 1:
		return fmt.Errorf("sandbox: console: want exactly one change, got %d", n)
	case ch.KeyPolicy != nil:
		if ch.KeyPolicy.MaxDays < 0 {
			return fmt.Errorf("sandbox: console: key_policy.max_days must not be negative")
		}
		s.SetKeyPolicy(*actor, *ch.KeyPolicy)
		return nil
	case ch.WorkspaceSpendLimit != nil:
		return s.SetWorkspaceSpendLimit(*actor, ch.WorkspaceSpendLimit.Workspace, ch.WorkspaceSpendLimit.Value)
	case ch.RateLimitRule != nil:
		return s.RateLimitRule(*actor, ch.RateLimitRule.Action, ch.RateLimitRule.ID, ch.RateLimitRule.Meta)
	default:
		return s.DeleteKeyAs(*actor, ch.DeleteKey)
	}
}

func (s *Server) ctlConsole(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	var ch ConsoleChange
	if ds := decodeStrict(r, &ch); ds != nil {
		writeValidation(w, ds...)
		return
	}
	if err := s.Console(ch); err != nil {
		writeValidation(w, detail{Loc: []string{"body"}, Msg: err.Error(), Type: "value_error"})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
