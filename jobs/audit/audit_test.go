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
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
)

// platform starts a sandbox seeded with seed on 127.0.0.1 and returns it with
// a client holding its admin key.
func platform(t testing.TB, seed *sandbox.Seed) (*sandbox.Server, *mistral.Client, string) {
	t.Helper()
	sb := sandbox.New(sandbox.Options{Seed: seed})
	srv := sandboxtest.Serve(t, sb, true)
	c, err := mistral.New(mistral.Options{BaseURL: srv.URL, AdminKey: mistral.Secret(sb.AdminKey()), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return sb, c, srv.URL
}

// recorder is a Notifier keeping the digests it is given.
type recorder struct {
	mu      sync.Mutex
	digests []Digest
}

func (r *recorder) NotifyAudit(_ context.Context, d Digest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.digests = append(r.digests, d)
	return nil
}

func (r *recorder) last(t *testing.T) Digest {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.digests) == 0 {
		t.Fatal("no digest notified")
	}
	return r.digests[len(r.digests)-1]
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.digests)
}

// world is one seeded platform, file store and journal.
type world struct {
	sb      *sandbox.Server
	client  *mistral.Client
	url     string
	store   *file.Store
	journal *journal.DB
	cfg     *config.Config
	now     time.Time
	logs    *bytes.Buffer
	notes   *recorder
}

func (w *world) job() *Job {
	return &Job{Config: w.cfg, Platform: w.client,
		Records: StoreRecords{Stores: map[string]secrets.Store{"file": w.store}},
		Journal: w.journal, Notifier: w.notes,
		Logger: slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    func() time.Time { return w.now }}
}

func (w *world) run(t *testing.T, req jobs.Request) (jobs.Result, *Report) {
	t.Helper()
	res, err := w.job().Run(context.Background(), req)
	if err != nil {
		t.Fatalf("audit run: %v", err)
	}
	rep, ok := res.Details.(*Report)
	if !ok {
		t.Fatalf("details are %T, want *Report", res.Details)
	}
	return res, rep
}

func (w *world) publish(t *testing.T, path, keyName string) {
	t.Helper()
	var ks sandbox.KeyState
	for _, k := range w.sb.Keys() {
		if k.Name == keyName {
			ks = k
		}
	}
	if ks.ID == "" {
		t.Fatalf("no sandbox key %s", keyName)
	}
	_, err := w.store.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: path},
		Record: secrets.Record{APIKey: ks.Plaintext, KeyID: ks.ID, KeyName: ks.Name, CreatedAt: ks.CreatedAt, RotationID: "r1"}})
	if err != nil {
		t.Fatal(err)
	}
}

// fixtureSeed's ids are uuids, as the platform's are: keys a0000000-...-0001
// to -0009 are dev, ml, unused, overdue, expiring, undeclared, orphan,
// shadow and vanished; workspaces b0000000-...-0001 to -0003 dev, ml, shadow.
const fixtureSeed = `
now: 2026-11-27T02:30:00Z
workspaces:
  - {uuid: b0000000-0000-4000-8000-000000000001, name: dev-workspace, spend_limit: 50}
  - {uuid: b0000000-0000-4000-8000-000000000002, name: ml-workspace, spend_limit: 500}
  - {uuid: b0000000-0000-4000-8000-000000000003, name: shadow-workspace}
keys:
  # healthy managed keys
  - {key_id: a0000000-0000-4000-8000-000000000001, name: dev-team-key-20261101-ab12cd34, workspace: dev-workspace, created_at: 2026-11-01T03:00:00Z, last_used: 2026-11-26, expiration_date: 2027-03-01}
  - {key_id: a0000000-0000-4000-8000-000000000002, name: ml-key-20261120-aa00bb11, workspace: ml-workspace, created_at: 2026-11-20T03:00:00Z, last_used: 2026-11-27, expiration_date: 2027-03-20}
  # one of each finding kind
  - {key_id: a0000000-0000-4000-8000-000000000003, name: batch-report, workspace: dev-workspace, created_at: 2026-05-01T00:00:00Z, last_used: 2026-09-15}
  - {key_id: a0000000-0000-4000-8000-000000000004, name: billing-key-20260801-deadbeef, workspace: ml-workspace, created_at: 2026-08-01T03:00:00Z, last_used: 2026-11-26}
  - {key_id: a0000000-0000-4000-8000-000000000005, name: contractor, workspace: ml-workspace, created_at: 2026-11-01T00:00:00Z, last_used: 2026-11-26, expiration_date: 2026-12-03}
  - {key_id: a0000000-0000-4000-8000-000000000006, name: laptop-test, workspace: dev-workspace, created_at: 2026-11-10T00:00:00Z, last_used: 2026-11-25}
  - {key_id: a0000000-0000-4000-8000-000000000007, name: dev-team-key-20261015-0badf00d, workspace: dev-workspace, created_at: 2026-10-15T03:00:00Z, last_used: 2026-11-26}
  - {key_id: a0000000-0000-4000-8000-000000000008, name: shadow-app, workspace: shadow-workspace, created_at: 2026-11-01T00:00:00Z, last_used: 2026-11-26}
`

func fixtureConfig(t testing.TB, dir string) *config.Config {
	t.Helper()
	y := fmt.Sprintf(`
mistral: {base_url: "http://127.0.0.1:1", admin_key_env: SANDBOX_ADMIN_KEY}
state: {path: %[1]s/state.db}
secrets: {file: {dir: %[1]s/secrets}}
workspaces:
  - {name: dev-workspace, monthly_budget_usd: 50}
  - {name: ml-workspace, monthly_budget_usd: 500}
  - {name: research-workspace, monthly_budget_usd: 10}
keys:
  - {name: dev-team-key, workspace: dev-workspace, owner_user_id: u1, store: {backend: file, path: mistral/dev-team}}
  - {name: ml-key, workspace: ml-workspace, owner_user_id: u1, store: {backend: file, path: mistral/ml}, rotate_every: 30d}
  - {name: billing-key, workspace: ml-workspace, owner_user_id: u1, store: {backend: file, path: mistral/billing}}
  - {name: search-key, workspace: dev-workspace, owner_user_id: u1, store: {backend: file, path: mistral/search}}
  - {name: vanished-key, workspace: dev-workspace, owner_user_id: u1, store: {backend: file, path: mistral/vanished}}
`, dir)
	cfg, err := config.Parse("audit.yaml", []byte(y))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func newWorld(t *testing.T) *world {
	t.Helper()
	seed, err := sandbox.ParseSeed([]byte(fixtureSeed))
	if err != nil {
		t.Fatal(err)
	}
	sb, client, url := platform(t, seed)
	dir := t.TempDir()
	st, err := file.New(filepath.Join(dir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := journal.Open(context.Background(), filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	w := &world{sb: sb, client: client, url: url, store: st, journal: db, cfg: fixtureConfig(t, dir),
		now: time.Date(2026, 11, 27, 2, 30, 0, 0, time.UTC), logs: &bytes.Buffer{}, notes: &recorder{}}
	w.publish(t, "mistral/dev-team", "dev-team-key-20261101-ab12cd34")
	w.publish(t, "mistral/ml", "ml-key-20261120-aa00bb11")
	w.publish(t, "mistral/billing", "billing-key-20260801-deadbeef")
	// vanished-key's record names a key the platform deleted.
	_, err = st.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: "mistral/vanished"},
		Record: secrets.Record{APIKey: "sk-long-gone-plaintext", KeyID: "a0000000-0000-4000-8000-000000000009", KeyName: "vanished-key-20260901-11112222"}})
	if err != nil {
		t.Fatal(err)
	}
	// search-key has no record at all.
	return w
}

// fixtureFindings are exactly the findings fixtureSeed and fixtureConfig raise.
var fixtureFindings = []string{
	"drift/a0000000-0000-4000-8000-000000000007",
	"drift/a0000000-0000-4000-8000-000000000009",
	"drift/entry/search-key",
	"expiring/a0000000-0000-4000-8000-000000000005",
	"overdue/a0000000-0000-4000-8000-000000000004",
	"undeclared/a0000000-0000-4000-8000-000000000003",
	"undeclared/a0000000-0000-4000-8000-000000000005",
	"undeclared/a0000000-0000-4000-8000-000000000006",
	"undeclared/a0000000-0000-4000-8000-000000000008",
	"unused/a0000000-0000-4000-8000-000000000003",
	"workspace_drift/missing/research-workspace",
	"workspace_drift/undeclared/b0000000-0000-4000-8000-000000000003",
}

func ids(fs []Finding) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.ID)
	}
	slices.Sort(out)
	return out
}

func TestAuditNights(t *testing.T) {
	w := newWorld(t)

	// Night 1: every finding is new and reported in full.
	res, rep := w.run(t, jobs.Request{RunID: 1, Trigger: "cron"})
	if res.Failed {
		t.Fatalf("night 1 failed: %s %v", res.Summary, rep.Errors)
	}
	if got := ids(rep.Findings); !slices.Equal(got, fixtureFindings) {
		t.Fatalf("night 1 findings:\n got %v\nwant %v", got, fixtureFindings)
	}
	if rep.Keys != 8 || rep.Workspaces != 3 {
		t.Errorf("inventory = %d keys, %d workspaces; want 8, 3", rep.Keys, rep.Workspaces)
	}
	d := w.notes.last(t)
	if got := ids(d.New); !slices.Equal(got, fixtureFindings) {
		t.Fatalf("night 1 digest new = %v", got)
	}
	if len(d.Resolved) != 0 || rep.Persisting != 0 {
		t.Fatalf("night 1: resolved %v, persisting %d", d.Resolved, rep.Persisting)
	}
	if d.New[0].Severity != SeverityCritical {
		t.Errorf("digest does not lead with a critical finding: %+v", d.New[0])
	}
	for _, f := range rep.Findings {
		if f.KeyID != "" && f.KeyID != "a0000000-0000-4000-8000-000000000009" && f.HiddenKey == "" {
			t.Errorf("finding %s lacks the hidden key", f.ID)
		}
	}

	// The same night again (a manual run): nothing new, no second digest.
	w.now = w.now.Add(time.Hour)
	_, rep = w.run(t, jobs.Request{RunID: 11, Trigger: "cli"})
	if w.notes.count() != 1 || len(rep.New) != 0 || rep.Persisting != len(fixtureFindings) {
		t.Fatalf("rerun the same night: %d digests, new %v, persisting %d", w.notes.count(), rep.New, rep.Persisting)
	}

	// Night 2: nothing changed: only a digest of persisting counts.
	w.now = w.now.Add(24 * time.Hour)
	_, rep = w.run(t, jobs.Request{RunID: 2, Trigger: "cron"})
	d = w.notes.last(t)
	if len(d.New) != 0 || len(d.Resolved) != 0 {
		t.Fatalf("night 2 re-sent findings: new %v resolved %v", ids(d.New), d.Resolved)
	}
	total := 0
	for _, n := range d.Persisting {
		total += n
	}
	if total != len(fixtureFindings) || rep.Persisting != len(fixtureFindings) {
		t.Fatalf("night 2 persisting = %d (%v), want %d", total, d.Persisting, len(fixtureFindings))
	}

	// The undeclared key is revoked by hand: night 3 announces it resolved, once.
	if err := w.client.DeleteKey(context.Background(), "a0000000-0000-4000-8000-000000000006"); err != nil {
		t.Fatal(err)
	}
	w.now = w.now.Add(24 * time.Hour)
	w.run(t, jobs.Request{RunID: 3, Trigger: "cron"})
	d = w.notes.last(t)
	if len(d.Resolved) != 1 || d.Resolved[0].ID != "undeclared/a0000000-0000-4000-8000-000000000006" || len(d.New) != 0 {
		t.Fatalf("night 3: resolved %+v new %v", d.Resolved, ids(d.New))
	}
	if !strings.Contains(d.Resolved[0].Subject, "laptop-test") {
		t.Errorf("resolved notice subject %q does not name the key", d.Resolved[0].Subject)
	}
	w.now = w.now.Add(24 * time.Hour)
	_, _ = w.run(t, jobs.Request{RunID: 4, Trigger: "cron"})
	if d = w.notes.last(t); len(d.Resolved) != 0 || len(d.New) != 0 {
		t.Fatalf("night 4 repeated: resolved %+v new %v", d.Resolved, ids(d.New))
	}
	if w.notes.count() != 4 {
		t.Fatalf("%d digests over 4 nights, want 4", w.notes.count())
	}

	assertNoPlaintext(t, w)
}

func TestAuditDryRunChangesNothing(t *testing.T) {
	w := newWorld(t)
	w.cfg.Jobs.Audit.RevokeUnused = true
	res, rep := w.run(t, jobs.Request{RunID: 1, Trigger: "cli", DryRun: true})
	if res.Failed {
		t.Fatalf("dry run failed: %v", rep.Errors)
	}
	if len(rep.Revoked) != 1 || rep.Revoked[0].KeyID != "a0000000-0000-4000-8000-000000000003" || !rep.Revoked[0].DryRun {
		t.Fatalf("dry run revoked = %+v, want a0000000-0000-4000-8000-000000000003 (would)", rep.Revoked)
	}
	if _, ok := w.sb.Key("a0000000-0000-4000-8000-000000000003"); !ok {
		t.Fatal("dry run deleted the key")
	}
	if ks, _ := w.sb.Key("a0000000-0000-4000-8000-000000000003"); ks.Deleted {
		t.Fatal("dry run deleted the key")
	}
	if w.notes.count() != 0 {
		t.Fatal("dry run notified")
	}
	open, err := w.journal.OpenFindings(context.Background(), Scope)
	if err != nil || len(open) != 0 {
		t.Fatalf("dry run journaled findings: %v %v", open, err)
	}
	if !strings.Contains(res.Summary, "would revoke 1") {
		t.Errorf("summary %q does not say what it would revoke", res.Summary)
	}
}

func TestAuditRevokeUnused(t *testing.T) {
	cases := []struct {
		name   string
		revoke bool
		want   []string // keys deleted
	}{
		{name: "off by default", revoke: false, want: nil},
		{name: "on: only unused undeclared keys", revoke: true, want: []string{"a0000000-0000-4000-8000-000000000003"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			w.cfg.Jobs.Audit.RevokeUnused = c.revoke
			res, rep := w.run(t, jobs.Request{RunID: 1, Trigger: "cron"})
			if res.Failed {
				t.Fatalf("failed: %v", rep.Errors)
			}
			var deleted []string
			for _, k := range w.sb.Keys() {
				if k.Deleted {
					deleted = append(deleted, k.ID)
				}
			}
			if !slices.Equal(deleted, c.want) {
				t.Fatalf("deleted %v, want %v", deleted, c.want)
			}
			var revoked []string
			for _, r := range rep.Revoked {
				revoked = append(revoked, r.KeyID)
			}
			if !slices.Equal(revoked, c.want) {
				t.Fatalf("report revoked %v, want %v", revoked, c.want)
			}
			if c.revoke {
				d := w.notes.last(t)
				if len(d.Revoked) != 1 || d.Revoked[0].KeyName != "batch-report" {
					t.Fatalf("digest does not say what was revoked: %+v", d.Revoked)
				}
				for _, f := range d.New {
					if f.KeyID == "a0000000-0000-4000-8000-000000000003" {
						t.Errorf("revoked key still reported as a finding: %s", f.ID)
					}
				}
				if !strings.Contains(res.Summary, "revoked 1") {
					t.Errorf("summary %q does not say it revoked", res.Summary)
				}
				// Next night the revoked key is simply gone: nothing resolves.
				w.now = w.now.Add(24 * time.Hour)
				_, rep2 := w.run(t, jobs.Request{RunID: 2})
				if len(rep2.Resolved) != 0 {
					t.Errorf("revoked key resolved again next night: %+v", rep2.Resolved)
				}
			}
		})
	}
}

func TestAuditFailures(t *testing.T) {
	t.Run("unreadable store fails the run but reports the rest", func(t *testing.T) {
		w := newWorld(t)
		w.cfg.Keys[0].Store.Backend = "vault" // no vault store given
		res, rep := w.run(t, jobs.Request{RunID: 1})
		if !res.Failed || len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "dev-team-key") {
			t.Fatalf("failed=%v errors=%v", res.Failed, rep.Errors)
		}
		if len(rep.Findings) == 0 {
			t.Fatal("no findings reported")
		}
		// Nothing synced or notified: tomorrow's complete run reports all as new.
		if w.notes.count() != 0 || len(rep.New) != 0 {
			t.Fatalf("incomplete audit notified %d digests, new %v", w.notes.count(), rep.New)
		}
		open, err := w.journal.OpenFindings(context.Background(), Scope)
		if err != nil || len(open) != 0 {
			t.Fatalf("incomplete audit synced findings: %d, %v", len(open), err)
		}
	})
	t.Run("an unreadable store revokes nothing", func(t *testing.T) {
		w := newWorld(t)
		w.cfg.Jobs.Audit.RevokeUnused = true
		w.cfg.Keys[3].Store.Backend = "vault" // search-key
		res, rep := w.run(t, jobs.Request{RunID: 1})
		if !res.Failed || len(rep.Revoked) != 0 {
			t.Fatalf("failed=%v revoked=%+v", res.Failed, rep.Revoked)
		}
		if ks, _ := w.sb.Key("a0000000-0000-4000-8000-000000000003"); ks.Deleted {
			t.Fatal("an incomplete audit deleted a key")
		}
	})
	t.Run("platform refusing the admin key is an error", func(t *testing.T) {
		w := newWorld(t)
		bad, err := mistral.New(mistral.Options{BaseURL: w.url, AdminKey: "sk-wrong", MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		j := w.job()
		j.Platform = bad
		_, err = j.Run(context.Background(), jobs.Request{RunID: 1})
		if err == nil || !strings.Contains(err.Error(), "audit: list workspaces") {
			t.Fatalf("err = %v", err)
		}
		if strings.Contains(err.Error(), "sk-wrong") {
			t.Fatal("error quotes the admin key")
		}
	})
}

// assertNoPlaintext scans logs, reports and digests for any key plaintext the
// sandbox holds.
func assertNoPlaintext(t *testing.T, w *world) {
	t.Helper()
	var hay bytes.Buffer
	hay.Write(w.logs.Bytes())
	for _, d := range w.notes.digests {
		b, _ := json.Marshal(d)
		hay.Write(b)
	}
	secretsSeen := []string{"sk-long-gone-plaintext", w.sb.AdminKey()}
	for _, k := range w.sb.Keys() {
		secretsSeen = append(secretsSeen, k.Plaintext)
	}
	for _, s := range secretsSeen {
		if s != "" && bytes.Contains(hay.Bytes(), []byte(s)) {
			t.Fatalf("key plaintext %.6s... found in logs or digests", s)
		}
	}
	if w.logs.Len() == 0 {
		t.Fatal("no logs captured")
	}
}
