package mistral

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// Actor types of an audit event (ActorType).
const (
	ActorHuman  = "HUMAN"
	ActorAPIKey = "API_KEY"
	ActorOther  = "OTHER"
)

// AuditEvent is one entry of the organization's audit log (AuditLogOut).
type AuditEvent struct {
	// ID is the log_id, increasing with time on one platform.
	ID   int64     `json:"log_id"`
	Time time.Time `json:"created_at"`
	// ActorType is ActorHuman, ActorAPIKey or ActorOther. ActorMetadata
	// names the actor; the spec leaves its keys open (see Actor).
	ActorType     string            `json:"actor_type"`
	ActorMetadata map[string]string `json:"actor_metadata"`
	// EventType is a dotted event name: "api_key.create", "api_key.delete",
	// "api_key_policy.update", "billing.monthly_limit.updated",
	// "workspace.create", "rate_limit.rule.update", ...
	EventType     string            `json:"event_type"`
	EventMetadata map[string]string `json:"event_metadata"`
	// TargetType is the kind of resource changed ("API_KEY",
	// "WORKSPACE", "MONTHLY_LIMIT", ...); TargetMetadata names it.
	TargetType       string            `json:"target_type"`
	TargetMetadata   map[string]string `json:"target_metadata"`
	OrganizationUUID string            `json:"organization_uuid"`
	WorkspaceUUID    string            `json:"workspace_uuid"`
}

// Actor describes who acted in one line: the first of the metadata's
// email, name or id fields that is set, after the actor type
// ("HUMAN alice@example.com", "API_KEY mrbacd-admin").
func (e AuditEvent) Actor() string {
	for _, k := range []string{"email", "user_email", "name", "api_key_name", "key_name", "user_uuid", "user_id", "api_key_id", "key_id", "id"} {
		if v := e.ActorMetadata[k]; v != "" {
			return e.ActorType + " " + v
		}
	}
	return e.ActorType
}

// ActorID returns the id of the actor: its api_key_id or key_id for an
// API key, its user_uuid or user_id for a person ("" when the platform
// sent none).
func (e AuditEvent) ActorID() string {
	for _, k := range []string{"api_key_id", "key_id", "user_uuid", "user_id", "id"} {
		if v := e.ActorMetadata[k]; v != "" {
			return v
		}
	}
	return ""
}

// Target returns the changed resource's id or name from TargetMetadata.
func (e AuditEvent) Target() string {
	for _, k := range []string{"key_id", "api_key_id", "uuid", "id", "workspace_uuid", "name"} {
		if v := e.TargetMetadata[k]; v != "" {
			return v
		}
	}
	return ""
}

// AuditQuery selects audit events. Zero fields select everything.
type AuditQuery struct {
	// After and Before bound created_at (exclusive).
	After, Before time.Time
	EventTypes    []string
	ActorTypes    []string
	TargetTypes   []string
	ActorUserUUID string
}

// AuditPageSize is the limit AuditLogs asks for per request.
const AuditPageSize = 100

// AuditLogs returns every audit event matching q, oldest first. The API
// pages by time only (sort=ascending, after=T, limit=N), so it reads from
// q.After onwards, moving the bound to the last event of each page until a
// page brings nothing new; an event is returned once however the pages
// overlap. The last event's Time (or ID) is the cursor of the next call.
func (c *Client) AuditLogs(ctx context.Context, q AuditQuery) ([]AuditEvent, error) {
	var all []AuditEvent
	seen := map[int64]bool{}
	after := q.After
	inclusive := false // re-ask from just before the last time, for events sharing it
	for range maxPages {
		cursor := after
		if inclusive && !cursor.IsZero() {
			cursor = cursor.Add(-time.Microsecond)
		}
		page, err := c.auditPage(ctx, q, cursor)
		if err != nil {
			return nil, err
		}
		fresh := 0
		for _, e := range page {
			if seen[e.ID] || (!q.After.IsZero() && !e.Time.After(q.After)) {
				continue
			}
			seen[e.ID] = true
			all = append(all, e)
			fresh++
			if e.Time.After(after) {
				after = e.Time
			}
		}
		switch {
		case len(page) == 0:
			return all, nil
		case fresh > 0:
			inclusive = true
		case inclusive:
			inclusive = false // a page of events all seen: step past their time
		default:
			return all, nil
		}
	}
	return nil, fmt.Errorf("mistral: audit logs: more than %d pages", maxPages)
}

// AuditLogsSince returns the audit events created after since, oldest first.
func (c *Client) AuditLogsSince(ctx context.Context, since time.Time) ([]AuditEvent, error) {
	return c.AuditLogs(ctx, AuditQuery{After: since})
}

func (c *Client) auditPage(ctx context.Context, q AuditQuery, after time.Time) ([]AuditEvent, error) {
	v := url.Values{}
	v.Set("sort", "ascending")
	v.Set("limit", strconv.Itoa(AuditPageSize))
	if !after.IsZero() {
		v.Set("after", after.UTC().Format(time.RFC3339Nano))
	}
	if !q.Before.IsZero() {
		v.Set("before", q.Before.UTC().Format(time.RFC3339Nano))
	}
	for _, t := range q.EventTypes {
		v.Add("event_type", t)
	}
	for _, t := range q.ActorTypes {
		v.Add("actor_type", t)
	}
	for _, t := range q.TargetTypes {
		v.Add("target_type", t)
	}
	if q.ActorUserUUID != "" {
		v.Set("actor_user_uuid", q.ActorUserUUID)
	}
	var out []AuditEvent
	if err := c.do(ctx, call{method: "GET", path: "/v1/admin/audit-logs", query: v, admin: true}, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// UnmarshalJSON tolerates a zone-less created_at and metadata values that
// are not strings (kept as their JSON text).
func (e *AuditEvent) UnmarshalJSON(b []byte) error {
	type plain AuditEvent
	var aux struct {
		*plain
		Time           flexTime              `json:"created_at"`
		ActorMetadata  map[string]flexString `json:"actor_metadata"`
		EventMetadata  map[string]flexString `json:"event_metadata"`
		TargetMetadata map[string]flexString `json:"target_metadata"`
		Organization   flexString            `json:"organization_uuid"`
		Workspace      flexString            `json:"workspace_uuid"`
	}
	aux.plain = (*plain)(e)
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	e.Time = time.Time(aux.Time)
	e.ActorMetadata = stringMap(aux.ActorMetadata)
	e.EventMetadata = stringMap(aux.EventMetadata)
	e.TargetMetadata = stringMap(aux.TargetMetadata)
	e.OrganizationUUID, e.WorkspaceUUID = string(aux.Organization), string(aux.Workspace)
	return nil
}

func stringMap(m map[string]flexString) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}
