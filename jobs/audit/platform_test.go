package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
)

const (
	changeWS    = "6f1d2c3b-0a4e-4f5d-8c7b-1e2f3a4b5c01"
	changeAdmin = "6f1d2c3b-0a4e-4f5d-8c7b-1e2f3a4b5c11"
	changeBob   = "6f1d2c3b-0a4e-4f5d-8c7b-1e2f3a4b5c12"
)

const changeSeed = `
now: 2026-11-27T02:30:00Z
workspaces:
  - {uuid: ` + changeWS + `, name: dev-workspace, spend_limit: 50}
users:
  - {id: ` + changeAdmin + `, email: admin@example.com, role: A}
  - {id: ` + changeBob + `, email: bob@example.com, role: M}
`

// changeWorld is a sandbox behind the contract checker with a small page
// cap, a journal, a file store and mrbacd's rotation engine on them.
type changeWorld struct {
	sb      *sandbox.Server
	url     string
	client  *mistral.Client
	store   *file.Store
	dbPath  string
	journal *journal.DB
	cfg     *config.Config
	now     time.Time
	logs    *bytes.Buffer
	notes   *recorder
}

func newChangeWorld(t *testing.T) *changeWorld {
	t.Helper()
	seed, err := sandbox.ParseSeed([]byte(changeSeed))
	if err != nil {
		t.Fatal(err)
	}
	sb := sandbox.New(sandbox.Options{Seed: seed, MaxPageSize: 2})
	srv := sandboxtest.Serve(t, sb, true)
	client, err := mistral.New(mistral.Options{BaseURL: srv.URL, AdminKey: mistral.Secret(sb.AdminKey()), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := file.New(filepath.Join(dir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("audit.yaml", []byte(fmt.Sprintf(`
mistral: {base_url: "http://127.0.0.1:1", admin_key_env: SANDBOX_ADMIN_KEY}
state: {path: %[1]s/state.db}
secrets: {file: {dir: %[1]s/secrets}}
workspaces:
  - {name: dev-workspace, monthly_budget_usd: 50}
keys:
  - {name: svc, workspace: dev-workspace, owner_user_id: %[2]s, store: {backend: file, path: mistral/svc}}
`, dir, changeAdmin)))
	if err != nil {
		t.Fatal(err)
	}
	w := &changeWorld{sb: sb, url: srv.URL, client: client, store: st, dbPath: filepath.Join(dir, "state.db"), cfg: cfg,
		now: time.Date(2026, 11, 27, 2, 30, 0, 0, time.UTC), logs: &bytes.Buffer{}, notes: &recorder{}}
	w.reopen(t)
	return w
}

// reopen closes the journal (if open) and opens it again, as a restart does.
func (w *changeWorld) reopen(t *testing.T) {
	t.Helper()
	if w.journal != nil {
		w.journal.Close()
	}
	db, err := journal.Open(context.Background(), w.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	w.journal = db
}

// rotate runs mrbacd's rotation of svc (a bootstrap first, then forced).
func (w *changeWorld) rotate(t *testing.T) {
	t.Helper()
	eng, err := rotate.New(rotate.Deps{Platform: w.client, Stores: map[string]secrets.Store{"file": w.store}, Journal: w.journal},
		rotate.Options{VerifyTimeout: time.Second, PublishTimeout: time.Second, MinBackoff: time.Millisecond},
		[]rotate.KeySpec{{Name: "svc", Workspace: "dev-workspace", WorkspaceID: changeWS, OwnerUserID: changeAdmin, Backend: "file",
			Target: secrets.Target{Path: "mistral/svc"}, RotateEvery: 90 * config.Day, PropagationWait: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := eng.Run(context.Background(), jobs.Request{Trigger: "test", Force: true})
	if err != nil || res.Failed {
		t.Fatalf("rotation: %v %+v", err, res)
	}
}

func (w *changeWorld) audit(t *testing.T) *Report {
	t.Helper()
	w.sb.Advance(time.Minute)
	w.now = w.sb.Now()
	j := &Job{Config: w.cfg, Platform: w.client, AuditLog: w.client,
		Records: StoreRecords{Stores: map[string]secrets.Store{"file": w.store}}, Journal: w.journal, Notifier: w.notes,
		Logger: slog.New(slog.NewJSONHandler(w.logs, nil)), Now: func() time.Time { return w.now }}
	res, err := j.Run(context.Background(), jobs.Request{RunID: 1, Trigger: "cron"})
	if err != nil || res.Failed {
		t.Fatalf("audit: %v %+v", err, res.Details)
	}
	return res.Details.(*Report)
}

// changes returns the run's platform_change findings as "event severity".
func changes(rep *Report) []string {
	var out []string
	for _, f := range rep.Findings {
		if f.Kind == KindPlatformChange {
			out = append(out, f.Event+" "+string(f.Severity))
		}
	}
	slices.Sort(out)
	return out
}

func TestPlatformChanges(t *testing.T) {
	w := newChangeWorld(t)
	w.rotate(t) // bootstrap: mrbacd creates svc's first key
	w.rotate(t) // forced: creates the next, deletes the first

	// A person's script with an admin key of its own creates two keys:
	// one no entry accounts for, one named as svc's managed keys.
	_, scriptKey := w.sb.AddAdminKey("bob-script")
	script, err := mistral.New(mistral.Options{BaseURL: w.url, AdminKey: mistral.Secret(scriptKey), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stray, err := script.CreateKey(ctx, mistral.CreateKeyRequest{Name: "laptop-test", WorkspaceUUID: changeWS, UserID: changeBob})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := script.CreateKey(ctx, mistral.CreateKeyRequest{Name: "svc-20261127-0badf00d", WorkspaceUUID: changeWS, UserID: changeBob}); err != nil {
		t.Fatal(err)
	}
	// And in the console: the key deleted again, the policy and the limits changed.
	limit := 80.0
	for _, ch := range []sandbox.ConsoleChange{
		{User: "bob@example.com", DeleteKey: stray.KeyID},
		{User: "bob@example.com", KeyPolicy: &sandbox.KeyPolicy{MaxDays: 30}},
		{User: "bob@example.com", WorkspaceSpendLimit: &sandbox.WorkspaceLimitChange{Workspace: "dev-workspace", Value: &limit}},
		{User: "bob@example.com", RateLimitRule: &sandbox.RateLimitRuleChange{Action: "create", ID: "rule-1"}},
	} {
		if err := w.sb.Console(ch); err != nil {
			t.Fatal(err)
		}
	}

	rep := w.audit(t)
	want := []string{
		"api_key.create info",    // svc-named, so declared
		"api_key.create warning", // laptop-test: undeclared
		"api_key.delete info",
		"api_key_policy.update warning",
		"billing.workspace_monthly_limit.updated warning",
		"rate_limit.rule.create warning",
	}
	if got := changes(rep); !slices.Equal(got, want) {
		t.Fatalf("platform changes:\n got %v\nwant %v (mrbacd's own creates and deletes left out)", got, want)
	}
	if rep.Changes != 9 {
		t.Fatalf("read %d audit log events, want 9 (3 of mrbacd's, 6 others) across pages of 2", rep.Changes)
	}
	for _, f := range rep.Findings {
		if f.Kind != KindPlatformChange {
			continue
		}
		if f.Actor == "" || f.EventTime == "" || !strings.Contains(f.Detail, f.Actor) || !strings.Contains(f.Detail, f.Event) {
			t.Fatalf("finding %+v lacks actor, event or time", f)
		}
		if strings.HasPrefix(f.Event, "api_key.create") && !strings.Contains(f.Actor, "bob-script") {
			t.Fatalf("key creation attributed to %q, want the script's admin key", f.Actor)
		}
		if strings.HasPrefix(f.Event, "api_key_policy") && f.Actor != "HUMAN bob@example.com" {
			t.Fatalf("policy change attributed to %q", f.Actor)
		}
	}
	// The spend limit now differs from the budget: a drift too.
	if !slices.Contains(ids(rep.Findings), "workspace_drift/spend_limit/dev-workspace") {
		t.Fatalf("no spend-limit drift in %v", ids(rep.Findings))
	}
	// Reported through the digest; no secret anywhere.
	if d := w.notes.last(t); len(d.New) < len(want) {
		t.Fatalf("digest reports %d new findings, want at least %d", len(d.New), len(want))
	}
	b, _ := json.Marshal(rep)
	for _, secret := range []string{scriptKey, w.sb.AdminKey(), stray.Key.Reveal()} {
		if strings.Contains(string(b), secret) || strings.Contains(w.logs.String(), secret) {
			t.Fatal("a key's plaintext is in the report or the logs")
		}
	}

	// A restart: nothing repeated. Then one more change: reported, alone.
	w.reopen(t)
	if got := changes(w.audit(t)); len(got) != 0 {
		t.Fatalf("after a restart, changes reported again: %v", got)
	}
	if d := w.notes.last(t); len(d.Resolved) != 0 {
		t.Fatalf("reported changes announced as resolved: %+v", d.Resolved)
	}
	if err := w.sb.Console(sandbox.ConsoleChange{User: "bob@example.com", KeyPolicy: &sandbox.KeyPolicy{MaxDays: 0}}); err != nil {
		t.Fatal(err)
	}
	w.reopen(t)
	if got := changes(w.audit(t)); !slices.Equal(got, []string{"api_key_policy.update warning"}) {
		t.Fatalf("after a restart and one change: %v", got)
	}
}

// TestPlatformChangesSameTimestamp: a cursor at time T that has read some
// of T's events reads the others, and none twice.
func TestPlatformChangesSameTimestamp(t *testing.T) {
	w := newChangeWorld(t)
	for _, days := range []int{10, 20} {
		if err := w.sb.Console(sandbox.ConsoleChange{KeyPolicy: &sandbox.KeyPolicy{MaxDays: days}}); err != nil {
			t.Fatal(err)
		}
	}
	log := w.sb.AuditLog()
	last := log[len(log)-1]
	ctx := context.Background()
	// As if a run had read everything before last's time and nothing at it.
	if err := w.journal.AdvanceAuditCursor(ctx, AuditSource, journal.AuditCursor{Time: last.Time}, "", nil, w.now); err != nil {
		t.Fatal(err)
	}
	rep := w.audit(t)
	var got []string
	for _, f := range rep.Findings {
		if f.Kind == KindPlatformChange {
			got = append(got, f.ID)
		}
	}
	if want := []string{fmt.Sprintf("platform_change/%d", last.ID)}; !slices.Equal(got, want) {
		t.Fatalf("findings %v, want only the unread event at the cursor's time %v", got, want)
	}
	c, err := w.journal.AuditCursor(ctx, AuditSource)
	if err != nil || !c.Time.Equal(last.Time) || !slices.Equal(c.IDs, []string{fmt.Sprint(last.ID)}) {
		t.Fatalf("cursor = %+v, %v; want %s with id %d", c, err, last.Time, last.ID)
	}
	if got := changes(w.audit(t)); len(got) != 0 {
		t.Fatalf("read again: %v", got)
	}
}
