package scripts

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// vaultVersion is the version scripts/ensure-vault.sh builds.
const vaultVersion = "v1.21.0"

// fakeGo is a stand-in for the go command: "go build ... -o OUT ." writes
// a binary at OUT that answers "version" and "--version", and every call is logged
// with its directory. FAKE_GO_FAIL=1 makes the build fail.
const fakeGo = `#!/bin/sh
echo "$(pwd) $*" >> "$FAKE_GO_LOG"
[ "${FAKE_GO_FAIL:-}" = 1 ] && { echo "fake go: build failed" >&2; exit 1; }
out=""
while [ $# -gt 0 ]; do
	if [ "$1" = "-o" ]; then out=$2; shift; fi
	shift
done
[ -n "$out" ] || { echo "fake go: no -o" >&2; exit 2; }
printf '#!/bin/sh\ncase "$1" in version|--version) echo "Vault %s (stand-in)";; esac\n' "` + vaultVersion + `" > "$out"
chmod +x "$out"
`

// tools are the commands the scripts use besides go.
var tools = []string{"bash", "sh", "env", "dirname", "mkdir", "flock", "pgrep", "mv", "rm", "chmod", "cat", "sleep", "awk"}

// machine is a fresh machine: an empty home and tool cache, and a PATH
// holding only the tools and, unless withoutGo, the stand-in go.
type machine struct {
	t     *testing.T
	home  string
	cache string
	goLog string
	path  string
}

func newMachine(t *testing.T, withGo bool) *machine {
	t.Helper()
	m := &machine{t: t, home: t.TempDir(), cache: t.TempDir()}
	bin := t.TempDir()
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s is needed to run the set-up scripts and is not on PATH: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	if withGo {
		if err := os.WriteFile(filepath.Join(bin, "go"), []byte(fakeGo), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m.path = bin
	m.goLog = filepath.Join(t.TempDir(), "go.log")
	return m
}

// run runs a script of the repository with the machine's environment.
func (m *machine) run(script string, env ...string) (stdout, stderr string, err error) {
	m.t.Helper()
	cmd := exec.Command(filepath.Join("..", script))
	cmd.Env = append([]string{"PATH=" + m.path, "HOME=" + m.home, "MRBACD_TOOLS_CACHE=" + m.cache, "FAKE_GO_LOG=" + m.goLog}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func (m *machine) goCalls() []string {
	b, err := os.ReadFile(m.goLog)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		m.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// leftovers lists the files of the cache's vault directory other than the
// binary and its lock.
func (m *machine) leftovers() []string {
	entries, _ := os.ReadDir(filepath.Join(m.cache, "vault-"+vaultVersion))
	var out []string
	for _, e := range entries {
		if n := e.Name(); n != "vault" && n != "vault.lock" {
			out = append(out, n)
		}
	}
	return out
}

// TestEnsureVaultFreshMachine runs scripts/ensure-vault.sh as the first
// `make test` on a machine would: an empty cache, so it builds. It must
// exit 0 and print only the binary's path (the Makefile captures stdout),
// and a second run must reuse the binary without building.
func TestEnsureVaultFreshMachine(t *testing.T) {
	m := newMachine(t, true)
	want := filepath.Join(m.cache, "vault-"+vaultVersion, "vault") + "\n"
	out, errOut, err := m.run("scripts/ensure-vault.sh")
	if err != nil {
		t.Fatalf("first run on an empty cache: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	if out != want {
		t.Errorf("stdout = %q, want the path %q", out, want)
	}
	calls := m.goCalls()
	if len(calls) != 1 || !strings.HasSuffix(strings.Fields(calls[0])[0], filepath.Join("tools", "vault")) || !strings.Contains(calls[0], " build ") {
		t.Errorf("go calls = %q, want one build in tools/vault", calls)
	}
	if v, err := exec.Command(strings.TrimSpace(out), "version").Output(); err != nil || !strings.Contains(string(v), vaultVersion) {
		t.Errorf("the built binary: %q, %v", v, err)
	}
	if l := m.leftovers(); len(l) != 0 {
		t.Errorf("files left in the cache: %v", l)
	}
	out, errOut, err = m.run("scripts/ensure-vault.sh")
	if err != nil || out != want {
		t.Fatalf("second run: %q, %v\n%s", out, err, errOut)
	}
	if calls := m.goCalls(); len(calls) != 1 {
		t.Errorf("the second run built again: %q", calls)
	}
}

// TestEnsureVaultFailures: a failed build or a missing go exits non-zero
// with a message, prints no path and leaves no partial binary.
func TestEnsureVaultFailures(t *testing.T) {
	tests := []struct {
		name    string
		withGo  bool
		env     []string
		wantErr string
	}{
		{name: "build fails", withGo: true, env: []string{"FAKE_GO_FAIL=1"}, wantErr: "fake go: build failed"},
		{name: "no go on PATH", withGo: false, wantErr: "go is not on PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMachine(t, tt.withGo)
			out, errOut, err := m.run("scripts/ensure-vault.sh", tt.env...)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("err = %v, want a non-zero exit\nstdout: %s\nstderr: %s", err, out, errOut)
			}
			if out != "" || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stdout %q, stderr %q; want no path and %q", out, errOut, tt.wantErr)
			}
			if l := m.leftovers(); len(l) != 0 {
				t.Errorf("files left in the cache: %v", l)
			}
			if _, err := os.Stat(filepath.Join(m.cache, "vault-"+vaultVersion, "vault")); err == nil {
				t.Error("a vault binary was left after a failed build")
			}
		})
	}
}

// TestEnsureVaultConcurrent: test packages starting at once on a fresh
// machine build once; each run prints the path.
func TestEnsureVaultConcurrent(t *testing.T) {
	m := newMachine(t, true)
	want := filepath.Join(m.cache, "vault-"+vaultVersion, "vault") + "\n"
	var wg sync.WaitGroup
	outs := make([]string, 4)
	errs := make([]error, 4)
	for i := range outs {
		wg.Go(func() { outs[i], _, errs[i] = m.run("scripts/ensure-vault.sh") })
	}
	wg.Wait()
	for i := range outs {
		if errs[i] != nil || outs[i] != want {
			t.Errorf("run %d: %q, %v", i, outs[i], errs[i])
		}
	}
	if calls := m.goCalls(); len(calls) != 1 {
		t.Errorf("go calls = %q, want one build", calls)
	}
}

// TestEnsurePromtoolFreshMachine runs scripts/ensure-promtool.sh on an
// empty cache: it builds once from tools/promtool, exits 0, prints only the
// path of the version tools/promtool/go.mod pins, and a second run reuses it.
func TestEnsurePromtoolFreshMachine(t *testing.T) {
	mod, err := os.ReadFile(filepath.Join("..", "tools", "promtool", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	version := ""
	for _, line := range strings.Split(string(mod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "github.com/prometheus/prometheus" {
			version = f[1]
		}
	}
	if version == "" {
		t.Fatal("tools/promtool/go.mod pins no github.com/prometheus/prometheus version")
	}
	m := newMachine(t, true)
	want := filepath.Join(m.cache, "promtool-"+version, "promtool") + "\n"
	for run := 1; run <= 2; run++ {
		out, errOut, err := m.run("scripts/ensure-promtool.sh")
		if err != nil || out != want {
			t.Fatalf("run %d on a fresh machine: stdout %q, %v, want the path %q\nstderr: %s", run, out, err, want, errOut)
		}
	}
	calls := m.goCalls()
	if len(calls) != 1 || !strings.HasSuffix(strings.Fields(calls[0])[0], filepath.Join("tools", "promtool")) || !strings.Contains(calls[0], " build ") {
		t.Errorf("go calls = %q, want one build in tools/promtool", calls)
	}
	entries, _ := os.ReadDir(filepath.Join(m.cache, "promtool-"+version))
	for _, e := range entries {
		if n := e.Name(); n != "promtool" && n != "promtool.lock" {
			t.Errorf("file left in the cache: %s", n)
		}
	}
}
