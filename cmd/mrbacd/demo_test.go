package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/mistral/contract"
	"github.com/mrbacd/mrbacd/secrets/file"
)

// TestDemo runs the demo in-process against its sandbox and checks what it
// claims: keys bootstrapped then rotated (store updated, old keys deleted on
// the platform), audit findings and the budget alert shown, and no key
// material anywhere in the output or the journal.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	dir := t.TempDir()
	// verbose: the jobs log at info level, so the leak scan covers the logs.
	run, code := runDemo(ctx, &cmdEnv{stdout: &stdout, stderr: &stderr}, demoOptions{dir: dir, verbose: true,
		wrap: func(h http.Handler) http.Handler { return contract.Install(t, h, true) }})
	if code != exitOK || run == nil || !run.OK {
		t.Fatalf("demo: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if len(run.Steps) != 4 {
		t.Fatalf("demo ran %d steps, want 4", len(run.Steps))
	}
	for _, s := range run.Steps {
		if !s.OK || s.Result == nil {
			t.Errorf("step %q: ok=%v error=%q", s.Title, s.OK, s.Error)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Bootstrap then forced rotation, key by key.
	boot, _ := run.Steps[0].Result.Details.([]rotate.KeyReport)
	forced, _ := run.Steps[1].Result.Details.([]rotate.KeyReport)
	if len(boot) != len(run.cfg.Keys) || len(forced) != len(run.cfg.Keys) {
		t.Fatalf("reports: %d bootstrap, %d forced, want %d each", len(boot), len(forced), len(run.cfg.Keys))
	}
	store, err := file.New(filepath.Join(dir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	sb := run.sandbox
	for i, k := range run.cfg.Keys {
		b, f := boot[i], forced[i]
		if b.Key != k.Name || f.Key != k.Name {
			t.Fatalf("report order: %q, %q, want %q", b.Key, f.Key, k.Name)
		}
		if b.Outcome != rotate.OutcomeBootstrapped || b.NewKeyID == "" || b.OldKeyID != "" {
			t.Errorf("%s bootstrap: outcome %q old %q new %q, want bootstrapped with a new key and no old one", k.Name, b.Outcome, b.OldKeyID, b.NewKeyID)
		}
		if f.Outcome != rotate.OutcomeRotated || f.OldKeyID != b.NewKeyID || f.NewKeyID == "" || f.NewKeyID == b.NewKeyID {
			t.Errorf("%s forced: outcome %q old %q new %q, want rotated from %q to a new key", k.Name, f.Outcome, f.OldKeyID, f.NewKeyID, b.NewKeyID)
		}
		rec, err := store.Read(ctx, rotate.Target(k))
		if err != nil {
			t.Fatalf("%s: reading the file store: %v", k.Name, err)
		}
		if rec.KeyID != f.NewKeyID {
			t.Errorf("%s: the store holds key %s, want the rotated key %s", k.Name, rec.KeyID, f.NewKeyID)
		}
		if !sb.Accepts(rec.APIKey) {
			t.Errorf("%s: the platform refuses the key the store holds", k.Name)
		}
		if old, ok := sb.Key(b.NewKeyID); !ok || !old.Deleted {
			t.Errorf("%s: the bootstrapped key %s is not deleted on the platform (found %v)", k.Name, b.NewKeyID, ok)
		}
		if cur, ok := sb.Key(f.NewKeyID); !ok || cur.Deleted {
			t.Errorf("%s: the new key %s is not live on the platform", k.Name, f.NewKeyID)
		}
		for _, want := range []string{b.NewKeyID, f.NewKeyID, k.Name} {
			if !strings.Contains(out, want) {
				t.Errorf("the narrative does not name %q", want)
			}
		}
	}

	// What the narrative must show.
	for _, want := range []string{
		"[1/4] bootstrap", "bootstrapped", "[2/4] forced rotation", "revoked after the new one was published",
		"[3/4] audit", "legacy-batch-job", "ci-experiments", "intern-notebook", "research-sandbox",
		"unused", "undeclared", "expiring", "workspace_drift",
		"[4/4] budget", "dev-workspace", "84%", "crossing 80%",
		"[INFO] rotation_digest", "[WARNING] audit_digest", "[WARNING] budget_alert",
		"4 of 4 steps ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the narrative lacks %q", want)
		}
	}

	if !strings.Contains(stderr.String(), "level=INFO") {
		t.Errorf("verbose: no info logs on stderr:\n%s", stderr.String())
	}

	// I4: no key material in the output, nor anywhere but the store.
	plaintexts := []string{sb.AdminKey()}
	for _, k := range sb.Keys() {
		plaintexts = append(plaintexts, k.Plaintext)
	}
	if len(plaintexts) < 1+3+2*len(run.cfg.Keys) {
		t.Fatalf("sandbox knows %d secrets, want the admin key, 3 seeded and %d created keys", len(plaintexts), 2*len(run.cfg.Keys))
	}
	var journalBytes bytes.Buffer
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		switch {
		case d.IsDir() && rel == "secrets":
			return fs.SkipDir // the store holds key material by design
		case rel == "mistral-admin-key":
			return nil // so does the admin key file
		case !d.IsDir():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			journalBytes.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if journalBytes.Len() == 0 {
		t.Fatal("found no journal or config to scan")
	}
	for _, p := range plaintexts {
		if p == "" {
			t.Fatal("a sandbox key has no plaintext")
		}
		for name, b := range map[string][]byte{"stdout": stdout.Bytes(), "stderr": stderr.Bytes(), "journal and config": journalBytes.Bytes()} {
			if bytes.Contains(b, []byte(p)) {
				t.Errorf("key material (%d chars) leaked into %s", len(p), name)
			}
		}
	}
}

// TestDemoCommand drives `mrbacd demo` through run, as main does.
func TestDemoCommand(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
		check      func(t *testing.T, stdout string)
	}{
		{name: "narrative", args: []string{"demo"}, wantCode: exitOK,
			wantStdout: []string{"[1/4] bootstrap", "[4/4] budget", "4 of 4 steps ok", "temporary directory is removed"},
			check: func(t *testing.T, stdout string) {
				dir := regexp.MustCompile(`(?m)^  directory (\S+)`).FindStringSubmatch(stdout)
				if dir != nil {
					t.Errorf("the narrative names a directory %q though --keep is unset", dir[1])
				}
			}},
		{name: "json keep", args: []string{"demo", "--json", "--keep"}, wantCode: exitOK,
			check: func(t *testing.T, stdout string) {
				var rep struct {
					Dir   string `json:"dir"`
					OK    bool   `json:"ok"`
					Steps []struct {
						Step string `json:"step"`
						OK   bool   `json:"ok"`
					} `json:"steps"`
				}
				if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
					t.Fatalf("stdout is not one JSON report: %v\n%s", err, stdout)
				}
				if rep.Dir == "" {
					t.Fatal("the report names no kept directory")
				}
				t.Cleanup(func() { os.RemoveAll(rep.Dir) })
				var steps []string
				for _, s := range rep.Steps {
					if !s.OK {
						t.Errorf("step %s not ok", s.Step)
					}
					steps = append(steps, s.Step)
				}
				if got := strings.Join(steps, ","); !rep.OK || got != "bootstrap,forced_rotation,audit,budget" {
					t.Errorf("report ok=%v with steps %s, want ok with bootstrap,forced_rotation,audit,budget", rep.OK, got)
				}
				for _, f := range []string{"mrbacd.yaml", "state.db", "secrets/mistral/dev-team.json"} {
					if _, err := os.Stat(filepath.Join(rep.Dir, f)); err != nil {
						t.Errorf("kept directory: %v", err)
					}
				}
			}},
		{name: "help", args: []string{"demo", "--help"}, wantCode: exitOK, wantStderr: []string{"usage: mrbacd demo", "-keep"}},
		{name: "unknown flag", args: []string{"demo", "--bogus"}, wantCode: exitUsage, wantStderr: []string{"-bogus"}},
		{name: "extra argument", args: []string{"demo", "now"}, wantCode: exitUsage, wantStderr: []string{`unexpected argument "now"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := run(ctx, &cmdEnv{stdout: &stdout, stderr: &stderr}, tc.args)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, stdout.String(), stderr.String())
			}
			for _, w := range tc.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tc.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			if tc.check != nil {
				tc.check(t, stdout.String())
			}
		})
	}
}

// TestDemoCanceled checks a canceled demo fails cleanly (exit 1, no panic).
func TestDemoCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	_, code := runDemo(ctx, &cmdEnv{stdout: &stdout, stderr: &stderr}, demoOptions{dir: t.TempDir()})
	if code != exitFailed {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitFailed, stdout.String(), stderr.String())
	}
}

func TestIndentWriter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{name: "one line", writes: []string{"a\n"}, want: "> a\n"},
		{name: "two lines", writes: []string{"a\nb\n"}, want: "> a\n> b\n"},
		{name: "split line", writes: []string{"a", "b\n", "c"}, want: "> ab\n> c"},
		{name: "empty lines", writes: []string{"\n\n"}, want: "> \n> \n"},
		{name: "nothing", writes: []string{""}, want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			w := &indentWriter{w: &b, prefix: "> "}
			for _, s := range tc.writes {
				n, err := w.Write([]byte(s))
				if err != nil || n != len(s) {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
			}
			if b.String() != tc.want {
				t.Errorf("got %q, want %q", b.String(), tc.want)
			}
		})
	}
}
