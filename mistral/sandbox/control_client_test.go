package sandbox_test

import (
	"context"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

func TestControlClient(t *testing.T) {
	sb := sandbox.New(sandbox.Options{})
	ts := httptest.NewServer(sb)
	t.Cleanup(ts.Close)
	ctl := sandbox.NewControl(ts.URL+"/", sb.AdminKey(), nil)
	ctx := context.Background()
	if err := ctl.Healthy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ctl.SetNow(ctx, testNow); err != nil {
		t.Fatal(err)
	}
	if err := ctl.Advance(ctx, 36*time.Hour); err != nil {
		t.Fatal(err)
	}
	if now, err := ctl.Now(ctx); err != nil || !now.Equal(testNow.Add(36*time.Hour)) || !sb.Now().Equal(now) {
		t.Fatalf("now = %v, %v", now, err)
	}
	k, _ := sb.AddKey("ctl", "", nil)
	if err := ctl.InjectFault(ctx, sandbox.Fault{Route: "GET /v1/models", Status: 500, Times: 1, Latency: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if f := sb.Faults(); len(f) != 1 || f[0].Latency != time.Millisecond || f[0].Status != 500 {
		t.Fatalf("faults = %+v", f)
	}
	if err := ctl.ClearFaults(ctx); err != nil || len(sb.Faults()) != 0 {
		t.Fatalf("clear: %v", err)
	}
	keys, err := ctl.Keys(ctx)
	want := sb.Keys()
	if err != nil || !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys = %+v, %v; want %+v", keys, err, want)
	}
	ev, err := ctl.Events(ctx, 0)
	if err != nil || len(ev) != 1 || ev[0].Kind != sandbox.EventCreate || ev[0].KeyID != k.ID {
		t.Fatalf("events = %+v, %v", ev, err)
	}
	st, err := ctl.Stats(ctx)
	if err != nil || st["POST /sandbox/faults"] != 1 {
		t.Fatalf("stats = %v, %v", st, err)
	}
	if err := ctl.ResetStats(ctx); err != nil {
		t.Fatal(err)
	}
	limit := 75.0
	changes := []sandbox.ConsoleChange{
		{KeyPolicy: &sandbox.KeyPolicy{MaxDays: 30}},
		{User: sandbox.DefaultUserEmail, WorkspaceSpendLimit: &sandbox.WorkspaceLimitChange{Workspace: sandbox.DefaultWorkspaceName, Value: &limit}},
		{RateLimitRule: &sandbox.RateLimitRuleChange{Action: "delete", ID: "r-9"}},
		{DeleteKey: k.ID},
	}
	for _, ch := range changes {
		if err := ctl.Console(ctx, ch); err != nil {
			t.Fatalf("console %+v: %v", ch, err)
		}
	}
	log := sb.AuditLog()
	var events []string
	for _, e := range log[1:] { // after the key's creation
		events = append(events, e.EventType+" by "+e.Actor())
	}
	wantEvents := "api_key_policy.update by HUMAN admin@sandbox.local|billing.workspace_monthly_limit.updated by HUMAN admin@sandbox.local|" +
		"rate_limit.rule.delete by HUMAN admin@sandbox.local|api_key.delete by HUMAN admin@sandbox.local"
	if strings.Join(events, "|") != wantEvents {
		t.Errorf("audit = %q, want %q", events, wantEvents)
	}
	for _, bad := range []sandbox.ConsoleChange{{}, {User: "nobody@example.com", DeleteKey: k.ID}, {KeyPolicy: &sandbox.KeyPolicy{}, DeleteKey: k.ID}} {
		if err := ctl.Console(ctx, bad); err == nil || !strings.Contains(err.Error(), "422") {
			t.Errorf("console %+v: %v, want a 422", bad, err)
		}
	}
	bad := sandbox.NewControl(ts.URL, "wrong", nil)
	if err := bad.ClearFaults(ctx); err == nil || !strings.Contains(err.Error(), "status 401") || strings.Contains(err.Error(), sb.AdminKey()) {
		t.Fatalf("wrong key: %v", err)
	}
}
