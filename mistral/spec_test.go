package mistral_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// TestCreateKeyPolicyExpiration: an organization's key policy shortens or
// sets the expiration asked, and CreateKey reports the one applied.
func TestCreateKeyPolicyExpiration(t *testing.T) {
	seed, err := sandbox.ParseSeed([]byte("key_policy: {max_days: 30}\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, seed, nil) // clock: 2026-11-27
	ctx := context.Background()
	later := mistral.Date{Year: 2027, Month: 3, Day: 1}
	sooner := mistral.Date{Year: 2026, Month: 12, Day: 5}
	limit := mistral.Date{Year: 2026, Month: 12, Day: 27}
	tests := []struct {
		name string
		ask  *mistral.Date
		want mistral.Date
	}{
		{name: "none asked", ask: nil, want: limit},
		{name: "later asked", ask: &later, want: limit},
		{name: "sooner asked", ask: &sooner, want: sooner},
	}
	for _, tt := range tests {
		k, err := e.client.CreateKey(ctx, mistral.CreateKeyRequest{Name: "policy " + tt.name, Expiration: tt.ask, WorkspaceUUID: e.ws, UserID: e.user})
		if err != nil {
			t.Fatal(err)
		}
		if k.ExpirationDate == nil || *k.ExpirationDate != tt.want {
			t.Errorf("%s: ExpirationDate = %v, want %v", tt.name, k.ExpirationDate, tt.want)
		}
	}
	if _, err := e.client.CreateKey(ctx, mistral.CreateKeyRequest{WorkspaceUUID: e.ws, UserID: e.user}); err != nil {
		t.Errorf("a key without a name: %v", err)
	}
	long := make([]byte, mistral.MaxKeyNameLength+1)
	for i := range long {
		long[i] = 'n'
	}
	if _, err := e.client.CreateKey(ctx, mistral.CreateKeyRequest{Name: string(long), WorkspaceUUID: e.ws, UserID: e.user}); err == nil {
		t.Error("a 256-character name was sent")
	}
	if _, err := e.client.CreateKey(ctx, mistral.CreateKeyRequest{Name: "x", WorkspaceUUID: e.ws}); err == nil {
		t.Error("a key without user_id was sent")
	}
}

// TestWorkspaceSpendLimit: the workspace's spend limit reads through.
func TestWorkspaceSpendLimit(t *testing.T) {
	seed, err := sandbox.ParseSeed([]byte("workspaces: [{name: dev, spend_limit: 250}, {name: ml}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, seed, nil)
	ws, err := e.client.ListAllWorkspaces(context.Background())
	if err != nil || len(ws) != 2 {
		t.Fatalf("workspaces: %+v, %v", ws, err)
	}
	if l := ws[0].SpendLimit; !l.Limited() || *l.Value != 250 || l.Currency != "USD" {
		t.Errorf("dev spend limit = %+v", l)
	}
	if l := ws[1].SpendLimit; l == nil || l.Limited() || !l.NoMonthlyLimit {
		t.Errorf("ml spend limit = %+v", l)
	}
}

// TestAuditLogs: the audit log is read whole from a time on, oldest first,
// with the actor of each change, so mrbacd's own changes (its admin key)
// are told from a person's.
func TestAuditLogs(t *testing.T) {
	e := newEnvWith(t, sandbox.Options{MaxPageSize: 3}, nil)
	ctx := context.Background()
	human := sandbox.UserActor(e.sb.Users()[0])
	mine := e.createKey(t, "mine")
	if _, err := e.sb.AddKey("by-hand", "", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.client.SetSpendLimit(ctx, 500, false); err != nil {
		t.Fatal(err)
	}
	e.sb.SetKeyPolicy(human, sandbox.KeyPolicy{MaxDays: 90})
	if err := e.sb.RateLimitRule(human, "update", "r-1", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.client.DeleteKey(ctx, mine.KeyID); err != nil {
		t.Fatal(err)
	}
	all, err := e.client.AuditLogs(ctx, mistral.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	me := e.sb.AdminActor()
	want := []struct {
		event, actorType, actorID, target string
	}{
		{event: "api_key.create", actorType: mistral.ActorAPIKey, actorID: me.ID, target: mine.KeyID},
		{event: "api_key.create", actorType: mistral.ActorHuman, actorID: human.ID, target: ""},
		{event: "billing.monthly_limit.updated", actorType: mistral.ActorAPIKey, actorID: me.ID, target: ""},
		{event: "api_key_policy.update", actorType: mistral.ActorHuman, actorID: human.ID, target: ""},
		{event: "rate_limit.rule.update", actorType: mistral.ActorHuman, actorID: human.ID, target: "r-1"},
		{event: "api_key.delete", actorType: mistral.ActorAPIKey, actorID: me.ID, target: mine.KeyID},
	}
	if len(all) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(all), len(want), all)
	}
	for i, w := range want {
		g := all[i]
		if g.EventType != w.event || g.ActorType != w.actorType || g.ActorID() != w.actorID || (w.target != "" && g.Target() != w.target) ||
			g.ID == 0 || g.Time.IsZero() || g.Actor() == "" {
			t.Errorf("event %d = %+v, want %+v", i, g, w)
		}
	}
	// The cursor: from the third event's time on, only the later ones.
	since, err := e.client.AuditLogsSince(ctx, all[2].Time)
	if err != nil || len(since) != 3 || since[0].ID != all[3].ID {
		t.Errorf("since %v: %+v, %v", all[2].Time, since, err)
	}
	keys, err := e.client.AuditLogs(ctx, mistral.AuditQuery{EventTypes: []string{"api_key.create", "api_key.delete"}, ActorTypes: []string{mistral.ActorHuman}})
	if err != nil || len(keys) != 1 || keys[0].EventType != "api_key.create" {
		t.Errorf("filtered: %+v, %v", keys, err)
	}
	if none, err := e.client.AuditLogsSince(ctx, all[len(all)-1].Time); err != nil || len(none) != 0 {
		t.Errorf("after the last event: %+v, %v", none, err)
	}
}

// TestAuditLogsSameTime: events sharing one timestamp across a page
// boundary are all read, once each, when the server's "after" is strict.
func TestAuditLogsSameTime(t *testing.T) {
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var page []string
	for i := 1; i <= 5; i++ {
		page = append(page, fmt.Sprintf(`{"created_at": %q, "actor_type": "HUMAN", "actor_metadata": {"email": "a@b.c"}, "event_type": "api_key.create", "event_metadata": {}, "target_type": "API_KEY", "target_metadata": {"key_id": "k%d"}, "log_id": %d}`,
			at.Format(time.RFC3339), i, i))
	}
	e := newEnv(t, nil, nil)
	// A platform that answers 2 events a page, all at the same time: the
	// client asks again from just before that time.
	e.sb.InjectFault(sandbox.Fault{Route: "GET /v1/admin/audit-logs", Status: 200, Times: 1, Body: "[" + page[0] + "," + page[1] + "]"})
	e.sb.InjectFault(sandbox.Fault{Route: "GET /v1/admin/audit-logs", Status: 200, Times: 1, Body: "[" + page[1] + "," + page[2] + "]"})
	e.sb.InjectFault(sandbox.Fault{Route: "GET /v1/admin/audit-logs", Status: 200, Times: 1, Body: "[" + page[3] + "," + page[4] + "]"})
	e.sb.InjectFault(sandbox.Fault{Route: "GET /v1/admin/audit-logs", Status: 200, Times: 1, Body: "[" + page[4] + "]"})
	e.sb.InjectFault(sandbox.Fault{Route: "GET /v1/admin/audit-logs", Status: 200, Times: 1, Body: "[]"})
	got, err := e.client.AuditLogs(context.Background(), mistral.AuditQuery{})
	if err != nil || len(got) != 5 {
		t.Fatalf("got %d events, %v; want 5", len(got), err)
	}
	for i, ev := range got {
		if ev.ID != int64(i+1) || ev.Target() != fmt.Sprintf("k%d", i+1) || ev.Actor() != "HUMAN a@b.c" {
			t.Errorf("event %d = %+v", i, ev)
		}
	}
}
