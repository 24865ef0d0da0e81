package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// problemLine is the format of every line check writes on stderr.
var problemLine = regexp.MustCompile(`^(.+):(\d+):(\d+): (\S+: )?\S.*$`)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), &cmdEnv{stdout: &out, stderr: &errb}, args)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckExitCodes(t *testing.T) {
	good := writeFile(t, "good.yaml", "workspaces: [{name: dev}, {name: ml}]\nkeys: [{name: dev-key, workspace: dev, store: {backend: file, path: k}}]\nroles: {a: {models: ['*']}}\n")
	bad := writeFile(t, "bad.yaml", "mistral:\n  admin_key: sk-should-not-print\n  base_ur: x\nkeys:\n  - {name: Bad, workspace: nope, store: {backend: file, path: k}}\n")
	tests := []struct {
		name      string
		args      []string
		code      int
		stdoutHas string
		stderrHas []string
		problems  int // stderr lines that must all be FILE:LINE:COL problems; -1 = not checked
	}{
		{name: "help", args: []string{"check", "--help"}, code: 0, stdoutHas: "", stderrHas: []string{"usage: mrbacd check --config FILE", "-config"}, problems: -1},
		{name: "no config flag", args: []string{"check"}, code: 2, stdoutHas: "", stderrHas: []string{"--config is required"}, problems: -1},
		{name: "extra argument", args: []string{"check", "--config", good, "more"}, code: 2, stdoutHas: "", stderrHas: []string{`unexpected argument "more"`}, problems: -1},
		{name: "unknown flag", args: []string{"check", "--nope"}, code: 2, stdoutHas: "", stderrHas: []string{"flag provided but not defined"}, problems: -1},
		{name: "missing file", args: []string{"check", "--config", filepath.Join(t.TempDir(), "missing.yaml")}, code: 2, stdoutHas: "", stderrHas: []string{"no such file"}, problems: -1},
		{name: "good", args: []string{"check", "--config", good}, code: 0, stdoutHas: "ok: " + good + ": 2 workspaces, 1 key, 1 role, 0 gateway clients", stderrHas: nil, problems: 0},
		{name: "bad", args: []string{"check", "--config", bad}, code: 2, stdoutHas: "", stderrHas: []string{
			bad + ":2:3: mistral.admin_key: inline secrets are not allowed: use admin_key_env or admin_key_file",
			bad + `:3:3: mistral.base_ur: unknown key "base_ur" (did you mean "base_url"?)`,
			bad + ":5:12: keys[0].name: must be 1 to 40 characters",
			bad + `:5:28: keys[0].workspace: workspace "nope" is not declared`,
		}, problems: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if tt.stdoutHas != "" && !strings.Contains(stdout, tt.stdoutHas) {
				t.Errorf("stdout %q lacks %q", stdout, tt.stdoutHas)
			}
			if tt.code != 0 && stdout != "" {
				t.Errorf("stdout not empty on failure: %q", stdout)
			}
			for _, s := range tt.stderrHas {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			if strings.Contains(stderr, "sk-should-not-print") {
				t.Errorf("stderr echoes an inline secret:\n%s", stderr)
			}
			if tt.problems >= 0 {
				lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
				if stderr == "" {
					lines = nil
				}
				if len(lines) != tt.problems {
					t.Errorf("%d stderr lines, want %d:\n%s", len(lines), tt.problems, stderr)
				}
				for _, l := range lines {
					if !problemLine.MatchString(l) {
						t.Errorf("not FILE:LINE:COL: field: message: %q", l)
					}
				}
			}
		})
	}
}

// TestCheckBadDirectory runs check on every config of config/testdata/bad
// and on the deploy example.
func TestCheckBadDirectory(t *testing.T) {
	files, err := filepath.Glob("../../config/testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs found: %v", err)
	}
	for _, f := range files {
		code, stdout, stderr := runCmd(t, "check", "--config", f)
		if code != exitUsage || stdout != "" {
			t.Errorf("%s: exit %d, stdout %q", f, code, stdout)
		}
		for _, l := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
			if m := problemLine.FindStringSubmatch(l); m == nil || m[1] != f {
				t.Errorf("%s: bad line %q", f, l)
			}
		}
	}
	example := "../../deploy/mrbacd.example.yaml"
	if code, stdout, stderr := runCmd(t, "check", "--config", example); code != exitOK || !strings.HasPrefix(stdout, "ok: "+example) {
		t.Errorf("example: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
