package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
)

// planWorld is a seeded sandbox (an unused undeclared key, spend near the
// budget) and a config managing two keys in a file store, auditing with
// revoke_unused on, in a non-UTC timezone.
type planWorld struct {
	rotateWorld
	dir, secrets string
}

func newPlanWorld(t *testing.T) *planWorld {
	t.Helper()
	now := time.Now().UTC()
	day := func(d int) string { return now.AddDate(0, 0, d).Format(time.DateOnly) }
	seed, err := sandbox.ParseSeed([]byte(fmt.Sprintf(`
workspaces:
  - {uuid: c0000000-0000-4000-8000-000000000001, name: dev-workspace}
keys:
  - {key_id: c0000000-0000-4000-8000-0000000000a1, name: stale-script, workspace: dev-workspace, created_at: %s, last_used: %s}
usage:
  - {workspace: dev-workspace, month: %q, model: mistral-small-latest, prompt_tokens: 0, completion_tokens: 75000000}
`, day(-200), day(-90), now.Format("2006-01"))))
	if err != nil {
		t.Fatal(err)
	}
	sb := sandbox.New(sandbox.Options{Seed: seed})
	srv := sandboxtest.Serve(t, sb, true)
	dir := t.TempDir()
	w := &planWorld{dir: dir, secrets: filepath.Join(dir, "secrets")}
	w.sb, w.state, w.cfgPath = sb, filepath.Join(dir, "state.db"), filepath.Join(dir, "mrbacd.yaml")
	adminKey := filepath.Join(dir, "admin-key")
	if err := os.WriteFile(adminKey, []byte(sb.AdminKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	owner := ""
	if us := sb.Users(); len(us) > 0 {
		owner = ", owner_user_id: " + us[0].ID
	}
	cfg := fmt.Sprintf(`mistral: {base_url: %q, admin_key_file: %q, max_retries: 0}
state: {path: %q}
secrets:
  file: {dir: %q}
workspaces:
  - {name: dev-workspace, monthly_budget_usd: 50}
keys:
  - {name: one, workspace: dev-workspace%s, store: {backend: file, path: keys/one}, propagation_wait: 10ms}
  - {name: two, workspace: dev-workspace%s, store: {backend: file, path: keys/two, value_format: raw}, propagation_wait: 10ms}
jobs:
  timezone: Europe/Paris
  rotate: {schedule: "0 4 * * *", verify_timeout: 1s}
  audit: {schedule: "@every 6h", revoke_unused: true}
  budget: {disabled: true}
`, srv.URL, adminKey, w.state, w.secrets, owner, owner)
	if err := os.WriteFile(w.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// jsonPlan is the part of `plan --json` the test reads.
type jsonPlan struct {
	Rotate []struct {
		Key    string `json:"key"`
		Action string `json:"action"`
		Due    bool   `json:"due"`
	} `json:"rotate"`
	Audit struct {
		Summary string `json:"summary"`
		Report  struct {
			DryRun   bool `json:"dry_run"`
			Findings []struct {
				ID          string `json:"id"`
				Kind        string `json:"kind"`
				KeyID       string `json:"key_id"`
				Revoked     bool   `json:"revoked"`
				WouldRevoke bool   `json:"would_revoke"`
			} `json:"findings"`
			Revoked []struct {
				KeyID string `json:"key_id"`
			} `json:"revoked"`
		} `json:"report"`
		New   []string `json:"new"`
		Error string   `json:"error"`
	} `json:"audit"`
	Budget struct {
		Summary string `json:"summary"`
		Report  struct {
			Workspaces []struct {
				Workspace string  `json:"workspace"`
				SpendUSD  float64 `json:"spend_usd"`
			} `json:"workspaces"`
			Alerts []struct {
				Kind  string `json:"kind"`
				First bool   `json:"first"`
			} `json:"alerts"`
		} `json:"report"`
		Error string `json:"error"`
	} `json:"budget"`
	Schedule []struct {
		Job      string `json:"job"`
		Schedule string `json:"schedule"`
		Timezone string `json:"timezone"`
		Disabled bool   `json:"disabled"`
		Next     string `json:"next"`
		LastFire string `json:"last_fire"`
		CatchUp  bool   `json:"catch_up"`
	} `json:"schedule"`
}

// snapshot lists every file and directory under dir with its size, mode
// and modification time.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("%d %v %d", info.Size(), info.Mode(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(before, after map[string]string) []string {
	var d []string
	for p, b := range before {
		if a, ok := after[p]; !ok {
			d = append(d, "removed "+p)
		} else if a != b {
			d = append(d, fmt.Sprintf("changed %s: %s -> %s", p, b, a))
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			d = append(d, "created "+p)
		}
	}
	return d
}

func TestPlanCommand(t *testing.T) {
	w := newPlanWorld(t)
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	keysBefore := len(w.sb.Keys())

	steps := []struct {
		name string
		// before prepares the world (real commands) before the plan runs.
		before []string
		// prepare runs after before, ahead of the plan.
		prepare func(t *testing.T)
		json    bool
		check   func(t *testing.T, out string, p jsonPlan)
	}{
		{name: "fresh: no journal, no store directory", json: true, check: func(t *testing.T, _ string, p jsonPlan) {
			if len(p.Rotate) != 2 || p.Rotate[0].Action != "bootstrap" || !p.Rotate[0].Due || p.Rotate[1].Action != "bootstrap" {
				t.Errorf("rotate plan %+v", p.Rotate)
			}
			for _, a := range p.Budget.Report.Alerts {
				if !a.First {
					t.Errorf("alert %s never sent, plan says it was", a.Kind)
				}
			}
			for _, s := range p.Schedule {
				if s.LastFire != "" {
					t.Errorf("last fire %+v without a journal", s)
				}
			}
			for _, path := range []string{w.state, w.secrets} {
				if _, err := os.Stat(path); err == nil {
					t.Errorf("plan created %s", path)
				}
			}
		}},
		{name: "after a rotation and a budget poll", before: []string{"rotate", "budget"}, prepare: func(t *testing.T) {
			db, err := journal.Open(context.Background(), w.state)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.SetLastFire(context.Background(), "rotate", time.Now().Add(-72*time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, json: true, check: func(t *testing.T, _ string, p jsonPlan) {
			if p.Schedule[0].Job != "rotate" || p.Schedule[0].LastFire == "" || !p.Schedule[0].CatchUp {
				t.Errorf("rotate schedule %+v: want the last fire and a missed fire", p.Schedule[0])
			}
			for _, it := range p.Rotate {
				if it.Action != "none" || it.Due {
					t.Errorf("rotate plan after bootstrap: %+v", it)
				}
			}
			if len(p.Budget.Report.Alerts) == 0 {
				t.Fatalf("no budget alert: %+v", p.Budget)
			}
			for _, a := range p.Budget.Report.Alerts {
				if a.First {
					t.Errorf("alert %s already sent by the budget run, plan says it would be new", a.Kind)
				}
			}
		}},
		{name: "human output", check: func(t *testing.T, out string, _ jsonPlan) {
			for _, want := range []string{"schedule (Europe/Paris)", "rotate  0 4 * * *", "disabled: manual runs only",
				"rotate: 0 of 2 keys due", "audit: ", "stale-script (c0000000-0000-4000-8000-0000000000a1)", "[would revoke]",
				"budget: ", "0 would be sent", "dev-workspace  $45.00", "already sent",
				"the daemon catches up at start"} {
				if !strings.Contains(out, want) {
					t.Errorf("plan output lacks %q:\n%s", want, out)
				}
			}
		}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			for _, c := range s.before {
				if code, out, errOut := w.run(c, "--config", w.cfgPath); code != exitOK {
					t.Fatalf("%s: exit %d\n%s\n%s", c, code, out, errOut)
				}
			}
			if s.prepare != nil {
				s.prepare(t)
			}
			// A crash's leftover temporary file, which file.New would remove.
			if _, err := os.Stat(w.secrets); err == nil {
				tmp := filepath.Join(w.secrets, ".tmp-leftover")
				if err := os.WriteFile(tmp, []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
				old := time.Now().Add(-time.Hour)
				if err := os.Chtimes(tmp, old, old); err != nil {
					t.Fatal(err)
				}
			}
			keys := len(w.sb.Keys())
			events := len(w.sb.Events())
			before := snapshot(t, w.dir)
			args := []string{"plan", "--config", w.cfgPath}
			if s.json {
				args = append(args, "--json")
			}
			code, out, errOut := w.run(args...)
			if code != exitOK {
				t.Fatalf("plan exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if d := diffSnapshots(before, snapshot(t, w.dir)); len(d) > 0 {
				t.Fatalf("plan changed the disk:\n%s", strings.Join(d, "\n"))
			}
			if n := len(w.sb.Keys()); n != keys {
				t.Fatalf("plan changed the platform: %d keys, had %d", n, keys)
			}
			for _, ev := range w.sb.Events()[events:] {
				if ev.Kind == sandbox.EventCreate || ev.Kind == sandbox.EventDelete {
					t.Fatalf("plan changed the platform: %+v", ev)
				}
			}
			if k, ok := w.sb.Key("c0000000-0000-4000-8000-0000000000a1"); !ok || k.Deleted {
				t.Fatal("plan revoked the unused key")
			}
			for _, k := range w.sb.Keys() {
				if strings.Contains(out, k.Plaintext) || strings.Contains(errOut, k.Plaintext) {
					t.Fatal("key material in the plan's output")
				}
			}
			var p jsonPlan
			if s.json {
				if err := json.Unmarshal([]byte(out), &p); err != nil {
					t.Fatalf("plan --json is not JSON: %v\n%s", err, out)
				}
				checkCommonPlan(t, p, paris)
			}
			s.check(t, out, p)
		})
	}
	if n := len(w.sb.Keys()); n != keysBefore+2 {
		t.Fatalf("%d platform keys, want the seed's %d plus the 2 bootstrapped", n, keysBefore)
	}
}

// checkCommonPlan checks what every JSON plan of the planWorld says: the
// audit's findings on the stale key (would revoke, not revoked), the budget's
// spend, and each job's schedule and next fire in Europe/Paris.
func checkCommonPlan(t *testing.T, p jsonPlan, loc *time.Location) {
	t.Helper()
	if p.Audit.Error != "" || !p.Audit.Report.DryRun {
		t.Errorf("audit plan %+v", p.Audit)
	}
	kinds := map[string]bool{}
	for _, f := range p.Audit.Report.Findings {
		if f.KeyID == "c0000000-0000-4000-8000-0000000000a1" {
			kinds[f.Kind] = true
			if f.Revoked {
				t.Errorf("finding %s says revoked", f.ID)
			}
		}
	}
	if !kinds["unused"] || !kinds["undeclared"] {
		t.Errorf("audit findings on c0000000-0000-4000-8000-0000000000a1: %v; want unused and undeclared", kinds)
	}
	if len(p.Audit.Report.Revoked) != 1 || p.Audit.Report.Revoked[0].KeyID != "c0000000-0000-4000-8000-0000000000a1" {
		t.Errorf("audit would revoke %+v, want c0000000-0000-4000-8000-0000000000a1", p.Audit.Report.Revoked)
	}
	if len(p.Audit.New) == 0 {
		t.Errorf("no new audit finding: %+v", p.Audit)
	}
	if p.Budget.Error != "" || len(p.Budget.Report.Workspaces) != 1 || p.Budget.Report.Workspaces[0].SpendUSD < 44 {
		t.Errorf("budget plan %+v", p.Budget)
	}
	want := map[string]string{"rotate": "0 4 * * *", "audit": "@every 6h", "budget": "*/30 * * * *"}
	if len(p.Schedule) != 3 {
		t.Fatalf("schedule %+v", p.Schedule)
	}
	now := time.Now()
	for _, s := range p.Schedule {
		if s.Schedule != want[s.Job] || s.Timezone != "Europe/Paris" {
			t.Errorf("schedule %+v, want %q in Europe/Paris", s, want[s.Job])
		}
		if s.Job == "budget" {
			if !s.Disabled || s.Next != "" {
				t.Errorf("disabled budget: %+v", s)
			}
			continue
		}
		next, err := time.Parse(time.RFC3339, s.Next)
		if err != nil || !next.After(now) {
			t.Errorf("%s next %q: %v", s.Job, s.Next, err)
			continue
		}
		if _, off := next.Zone(); func() int { _, o := next.In(loc).Zone(); return o }() != off {
			t.Errorf("%s next %s is not in Europe/Paris", s.Job, s.Next)
		}
		if s.Job == "rotate" {
			if h := next.In(loc).Hour(); h != 4 || next.Sub(now) > 24*time.Hour {
				t.Errorf("rotate next %s: want the next 04:00 Paris time", s.Next)
			}
		}
		if s.Job == "audit" && next.Sub(now) > 6*time.Hour {
			t.Errorf("audit next %s: more than 6h away", s.Next)
		}
	}
}
