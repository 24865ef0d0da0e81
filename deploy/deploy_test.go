// Package deploy_test checks the deployment files: the systemd unit (its
// hardening score and that its paths agree with the config defaults), the
// install script, and the container build stage run as plain shell.
package deploy_test

import (
	"bufio"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
)

const unitPath = "systemd/mrbacd.service"

// unitDirectives returns the unit's Key=Value lines (all values per key).
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not Key=Value: %q", path, line)
		}
		m[k] = append(m[k], v)
	}
	return m
}

func TestSystemdUnitDirectives(t *testing.T) {
	d := unitDirectives(t, unitPath)
	want := map[string]string{
		"Type":                   "notify",
		"ExecReload":             "/bin/kill -HUP $MAINPID",
		"ExecStart":              "/usr/local/bin/mrbacd run --config /etc/mrbacd/mrbacd.yaml",
		"DynamicUser":            "yes",
		"StateDirectory":         "mrbacd",
		"RuntimeDirectory":       "mrbacd",
		"ConfigurationDirectory": "mrbacd",
		"EnvironmentFile":        "-/etc/mrbacd/mrbacd.env",
		"NoNewPrivileges":        "yes",
		"ProtectSystem":          "strict",
		"UMask":                  "0077",
		"KillSignal":             "SIGTERM",
	}
	for k, v := range want {
		if got := d[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if _, ok := d["PrivateUsers"]; ok {
		t.Error("PrivateUsers= breaks the admin socket's peer uid check")
	}
	// The unit's directories must hold the config's default paths.
	if dir := filepath.Dir(config.DefaultAdminSocket); dir != "/run/"+d["RuntimeDirectory"][0] {
		t.Errorf("admin socket default %s is outside RuntimeDirectory", config.DefaultAdminSocket)
	}
	for _, p := range []string{config.DefaultStatePath, config.DefaultFileStoreDir} {
		if !strings.HasPrefix(p, "/var/lib/"+d["StateDirectory"][0]+"/") {
			t.Errorf("default %s is outside StateDirectory", p)
		}
	}
	// Stop must outlast the daemon's own shutdown bound.
	stop, err := time.ParseDuration(d["TimeoutStopSec"][0])
	if err != nil || stop <= config.DefaultShutdownTimeout {
		t.Errorf("TimeoutStopSec %v must exceed shutdown_timeout %v", d["TimeoutStopSec"], config.DefaultShutdownTimeout)
	}
}

// TestSystemdUnitSecurity runs systemd-analyze security on the unit and
// requires an exposure of 2.0 or lower.
func TestSystemdUnitSecurity(t *testing.T) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is required (apt-get install systemd): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "security", "--offline=true", "--no-pager", unitPath).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for mrbacd\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil || score > 2.0 {
		t.Fatalf("exposure %s, want <= 2.0:\n%s", m[1], out)
	}
	t.Logf("systemd-analyze security: exposure %.1f", score)
}

func TestExampleFiles(t *testing.T) {
	cfg, err := config.Load("mrbacd.example.yaml")
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	// Every *_env the example names is listed in the env file example.
	env, err := os.ReadFile("systemd/mrbacd.env.example")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{cfg.Mistral.AdminKeyEnv, cfg.Notify.Slack.TokenEnv}
	for _, c := range cfg.Gateway.Clients {
		if c.TokenEnv != "" {
			names = append(names, c.TokenEnv)
		}
	}
	for _, n := range names {
		if !regexp.MustCompile(`(?m)^#?` + regexp.QuoteMeta(n) + `=`).Match(env) {
			t.Errorf("mrbacd.env.example lacks %s", n)
		}
	}
	if regexp.MustCompile(`(?m)^[A-Z_]+=\S`).Match(env) {
		t.Error("mrbacd.env.example carries a value; it must only name the variables")
	}
}

func TestInstallScript(t *testing.T) {
	dest := t.TempDir()
	bin := filepath.Join(t.TempDir(), "mrbacd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func() {
		cmd := exec.Command("./install.sh", bin)
		cmd.Env = append(os.Environ(), "DESTDIR="+dest, "PREFIX=/opt/mrbacd")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
	}
	run()
	files := map[string]os.FileMode{
		"opt/mrbacd/bin/mrbacd":                 0o755,
		"etc/systemd/system/mrbacd.service":     0o644,
		"etc/mrbacd/mrbacd.yaml":                0o644,
		"etc/mrbacd/mrbacd.yaml.example":        0o644,
		"etc/mrbacd/mrbacd.env":                 0o600,
		"etc/mrbacd/mrbacd.env.example":         0o600,
		"opt/mrbacd/share/doc/mrbacd/README.md": 0o644,
	}
	for f, mode := range files {
		fi, err := os.Stat(filepath.Join(dest, f))
		if err != nil {
			t.Errorf("%s not installed: %v", f, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", f, fi.Mode().Perm(), mode)
		}
	}
	d := unitDirectives(t, filepath.Join(dest, "etc/systemd/system/mrbacd.service"))
	if got := d["ExecStart"]; len(got) != 1 || !strings.HasPrefix(got[0], "/opt/mrbacd/bin/mrbacd run ") {
		t.Errorf("installed ExecStart = %q", got)
	}
	// A second install keeps an edited config.
	cfg := filepath.Join(dest, "etc/mrbacd/mrbacd.yaml")
	if err := os.WriteFile(cfg, []byte("edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run()
	if b, _ := os.ReadFile(cfg); string(b) != "edited\n" {
		t.Error("install overwrote an existing config")
	}
}

// TestContainerBuildStage runs the Dockerfile's build stage as plain shell
// (deploy/container/build-stage.sh) and checks the image's files: a static
// binary that runs, CA certificates, a non-root user; and the Dockerfile's
// final stage: scratch, non-root USER, STOPSIGNAL SIGTERM.
func TestContainerBuildStage(t *testing.T) {
	df, err := os.ReadFile("container/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(df)
	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(text, -1)
	if len(froms) != 2 || froms[1][1] != "scratch" {
		t.Errorf("want a build stage then FROM scratch, got %q", froms)
	}
	final := text[strings.LastIndex(text, "\nFROM "):]
	for _, re := range []string{`(?m)^USER 65532:65532$`, `(?m)^STOPSIGNAL SIGTERM$`, `CGO_ENABLED=0`, `/etc/mrbacd/mrbacd\.yaml`} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("Dockerfile lacks %s", re)
		}
	}
	if strings.Contains(final, "RUN ") {
		t.Error("the final stage must not RUN (scratch has no shell)")
	}

	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "./container/build-stage.sh", work)
	cmd.Env = append(os.Environ(), "VERSION=test-build")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build-stage.sh: %v\n%s", err, out)
	}
	rootfs := filepath.Join(work, "out", "rootfs")
	bin := filepath.Join(rootfs, "usr/local/bin/mrbacd")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("binary: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has an ELF interpreter: not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary links %v: not static", libs)
	}
	v, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(v), "mrbacd test-build ") {
		t.Errorf("version: %q, %v", v, err)
	}
	for _, f := range []string{"etc/ssl/certs/ca-certificates.crt", "etc/mrbacd/mrbacd.yaml", "etc/passwd", "etc/group"} {
		if fi, err := os.Stat(filepath.Join(rootfs, f)); err != nil || fi.Size() == 0 {
			t.Errorf("image lacks %s: %v", f, err)
		}
	}
	if pw, _ := os.ReadFile(filepath.Join(rootfs, "etc/passwd")); !strings.Contains(string(pw), ":65532:65532:") {
		t.Errorf("passwd lacks the nonroot user: %q", pw)
	}
	for _, d := range []string{"var/lib/mrbacd", "run/mrbacd"} {
		if fi, err := os.Stat(filepath.Join(work, "out", "state", d)); err != nil || !fi.IsDir() {
			t.Errorf("state dir %s missing: %v", d, err)
		}
	}
}
