package sandbox

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/mistral"
)

// DefaultAdminKeyName names the sandbox's first admin key in the audit log.
const DefaultAdminKeyName = "sandbox-admin"

// adminKey is an admin API key: changes made with it are attributed to it.
type adminKey struct {
	ID, Name, Plaintext string
}

// Actor is who made a change, as the audit log names it: an admin API key
// (mistral.ActorAPIKey, with the key's id and name) or a person in the
// console (mistral.ActorHuman, with the user's uuid and email).
type Actor struct {
	Type string
	ID   string
	Name string
}

// metadata renders the actor as the audit log's actor_metadata.
func (a Actor) metadata() map[string]string {
	if a.Type == mistral.ActorHuman {
		return map[string]string{"user_uuid": a.ID, "email": a.Name}
	}
	return map[string]string{"api_key_id": a.ID, "api_key_name": a.Name}
}

// UserActor is u acting in the console.
func UserActor(u User) Actor { return Actor{Type: mistral.ActorHuman, ID: u.ID, Name: u.Email} }

// humanLocked is the first user acting in the console. Caller holds mu.
func (s *Server) humanLocked() Actor { return UserActor(*s.users[0]) }

// AdminActor is the actor of changes made with the sandbox's admin key.
func (s *Server) AdminActor() Actor {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k := s.adminKeys[0]
	return Actor{Type: mistral.ActorAPIKey, ID: k.ID, Name: k.Name}
}

// AddAdminKey adds another admin key, so a test can act as a second
// administrator (a person's script, say) whose changes the audit log
// attributes to that key. It returns the key's id and plaintext.
func (s *Server) AddAdminKey(name string) (id, plaintext string) {
	k := &adminKey{ID: newUUID(), Name: name, Plaintext: "sk-admin-" + randomAlnum(32)}
	s.mu.Lock()
	s.adminKeys = append(s.adminKeys, k)
	s.mu.Unlock()
	return k.ID, k.Plaintext
}

type actorCtxKey struct{}

// actorOf returns the admin key that authenticated r as an Actor.
func actorOf(r *http.Request) Actor {
	if a, ok := r.Context().Value(actorCtxKey{}).(Actor); ok {
		return a
	}
	return Actor{Type: mistral.ActorOther}
}

func withActor(r *http.Request, k *adminKey) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), actorCtxKey{}, Actor{Type: mistral.ActorAPIKey, ID: k.ID, Name: k.Name}))
}

// record appends an audit event. Its time is the sandbox clock, moved a
// microsecond past the previous event's when the clock has not advanced
// (a frozen clock), so events keep their order in time as on a real
// platform. Caller holds mu for writing.
func (s *Server) record(a Actor, eventType, targetType string, target, meta map[string]string, workspace string) {
	t := s.Now().UTC().Truncate(time.Microsecond)
	if n := len(s.audit); n > 0 && !t.After(s.audit[n-1].Time) {
		t = s.audit[n-1].Time.Add(time.Microsecond)
	}
	if meta == nil {
		meta = map[string]string{}
	}
	s.audit = append(s.audit, mistral.AuditEvent{
		ID: int64(len(s.audit) + 1), Time: t, ActorType: a.Type, ActorMetadata: a.metadata(),
		EventType: eventType, EventMetadata: meta, TargetType: targetType, TargetMetadata: target,
		OrganizationUUID: s.orgUUID, WorkspaceUUID: workspace,
	})
}

// auditKey records an api_key.* event on rec. Caller holds mu for writing.
func (s *Server) auditKey(a Actor, eventType string, rec *keyRec) {
	s.record(a, eventType, "API_KEY", map[string]string{"key_id": rec.ID, "name": rec.Name}, nil, rec.WorkspaceID)
}

// AuditLog returns every audit event, oldest first.
func (s *Server) AuditLog() []mistral.AuditEvent {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.audit)
}

// SetKeyPolicy sets the organization's key-expiration policy, as a actor
// would in the console, and records api_key_policy.update.
func (s *Server) SetKeyPolicy(a Actor, p KeyPolicy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keyPolicy = p
	s.record(a, "api_key_policy.update", "API_KEY_POLICY", map[string]string{"organization_uuid": s.orgUUID},
		map[string]string{"max_days": fmt.Sprint(p.MaxDays)}, "")
}

// SetWorkspaceSpendLimit sets a workspace's monthly limit (nil for none),
// which the API cannot do, as a actor would in the console, and records
// billing.workspace_monthly_limit.updated.
func (s *Server) SetWorkspaceSpendLimit(a Actor, workspace string, limit *float64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.findWorkspace(workspace)
	if ws == nil {
		return fmt.Errorf("sandbox: set workspace spend limit: unknown workspace %q", workspace)
	}
	ws.SpendLimit = nil
	value := "none"
	if limit != nil {
		v := *limit
		ws.SpendLimit, value = &v, fmt.Sprint(v)
	}
	s.record(a, "billing.workspace_monthly_limit.updated", "WORKSPACE_MONTHLY_LIMIT",
		map[string]string{"workspace_uuid": ws.UUID, "name": ws.Name}, map[string]string{"value": value}, ws.UUID)
	return nil
}

// RateLimitRule records a rate-limit rule change (action "create",
// "update" or "delete") made by a in the console. The sandbox enforces no
// rules; the audit log shows the change.
func (s *Server) RateLimitRule(a Actor, action, ruleID string, meta map[string]string) error {
	switch action {
	case "create", "update", "delete":
	default:
		return fmt.Errorf("sandbox: rate limit rule: action %q: want create, update or delete", action)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.record(a, "rate_limit.rule."+action, "RATE_LIMIT_RULE", map[string]string{"id": ruleID}, meta, "")
	return nil
}

// DeleteKeyAs deletes a key as a would in the console.
func (s *Server) DeleteKeyAs(a Actor, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.keyByID[id]
	if !ok || rec.Deleted {
		return fmt.Errorf("sandbox: delete key: no key %q", id)
	}
	rec.Deleted, rec.DeletedAt = true, s.Now().UTC()
	s.event(EventDelete, rec, "", "")
	s.auditKey(a, "api_key.delete", rec)
	return nil
}

// auditJSON is AuditLogOut.
type auditJSON struct {
	CreatedAt        string            `json:"created_at"`
	ActorType        string            `json:"actor_type"`
	ActorMetadata    map[string]string `json:"actor_metadata"`
	EventType        string            `json:"event_type"`
	EventMetadata    map[string]string `json:"event_metadata"`
	TargetType       string            `json:"target_type"`
	TargetMetadata   map[string]string `json:"target_metadata"`
	LogID            int64             `json:"log_id"`
	OrganizationUUID string            `json:"organization_uuid"`
	WorkspaceUUID    *string           `json:"workspace_uuid"`
}

// auditFilter is the query of GET /v1/admin/audit-logs.
type auditFilter struct {
	after, before           time.Time
	events, actors, targets []string
	actorUser               string
	ascending               bool
	limit                   int
}

func (f auditFilter) match(e mistral.AuditEvent) bool {
	in := func(list []string, v string) bool { return len(list) == 0 || slices.Contains(list, v) }
	return (f.after.IsZero() || e.Time.After(f.after)) && (f.before.IsZero() || e.Time.Before(f.before)) &&
		in(f.events, e.EventType) && in(f.actors, e.ActorType) && in(f.targets, e.TargetType) &&
		(f.actorUser == "" || e.ActorMetadata["user_uuid"] == f.actorUser)
}

// parseAuditFilter reads the query, or writes a 422 and returns false.
func parseAuditFilter(w http.ResponseWriter, r *http.Request) (auditFilter, bool) {
	q := r.URL.Query()
	f := auditFilter{events: q["event_type"], actors: q["actor_type"], targets: q["target_type"], actorUser: q.Get("actor_user_uuid")}
	var ds []detail
	for _, name := range []string{"after", "before"} {
		v := q.Get(name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, strings.Replace(v, " ", "+", 1))
		if err != nil {
			ds = append(ds, detail{Loc: []string{"query", name}, Msg: "Input should be a valid datetime", Type: "datetime_from_date_parsing"})
		}
		if name == "after" {
			f.after = t
		} else {
			f.before = t
		}
	}
	switch q.Get("sort") {
	case "", "descending":
	case "ascending":
		f.ascending = true
	default:
		ds = append(ds, detail{Loc: []string{"query", "sort"}, Msg: "Input should be 'ascending' or 'descending'", Type: "enum"})
	}
	for _, a := range f.actors {
		if a != mistral.ActorHuman && a != mistral.ActorAPIKey && a != mistral.ActorOther {
			ds = append(ds, detail{Loc: []string{"query", "actor_type"}, Msg: "Input should be 'HUMAN', 'API_KEY' or 'OTHER'", Type: "enum"})
		}
	}
	if len(ds) > 0 {
		writeValidation(w, ds...)
		return f, false
	}
	limit, ok := queryInt(w, r, "limit", 20, 0, 1<<30)
	f.limit = limit
	return f, ok
}

func (s *Server) listAuditLogs(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	f, ok := parseAuditFilter(w, r)
	if !ok {
		return
	}
	limit := min(f.limit, s.maxPage)
	s.mu.RLock()
	out := make([]auditJSON, 0, min(limit, len(s.audit)))
	n := len(s.audit)
	for i := range n {
		e := s.audit[i]
		if !f.ascending {
			e = s.audit[n-1-i]
		}
		if len(out) == limit {
			break
		}
		if !f.match(e) {
			continue
		}
		j := auditJSON{CreatedAt: e.Time.Format("2006-01-02T15:04:05.000000Z07:00"), ActorType: e.ActorType, ActorMetadata: e.ActorMetadata,
			EventType: e.EventType, EventMetadata: e.EventMetadata, TargetType: e.TargetType, TargetMetadata: e.TargetMetadata,
			LogID: e.ID, OrganizationUUID: e.OrganizationUUID}
		if e.WorkspaceUUID != "" {
			ws := e.WorkspaceUUID
			j.WorkspaceUUID = &ws
		}
		out = append(out, j)
	}
	s.mu.RUnlock()
	writeJSON(w, http.StatusOK, out)
}
