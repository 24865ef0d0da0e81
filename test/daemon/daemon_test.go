package daemon_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/ctlsock"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
)

// storedKey reads a managed key's record from the file store.
func (e *env) storedKey(name string) secrets.Versioned {
	e.t.Helper()
	st, err := file.New(filepath.Join(e.dir, "secrets"))
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := st.Read(context.Background(), secrets.Target{Path: "team/" + name})
	if err != nil {
		e.t.Fatalf("reading %s from the store: %v", name, err)
	}
	return v
}

func (e *env) journal() *journal.DB {
	e.t.Helper()
	db, err := journal.Open(context.Background(), filepath.Join(e.dir, "state.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { db.Close() })
	return db
}

// noLeak fails if any key plaintext the sandbox ever issued appears in s.
func (e *env) noLeak(where, s string) {
	e.t.Helper()
	for _, k := range e.sb.Keys() {
		if k.Plaintext != "" && strings.Contains(s, k.Plaintext) {
			e.t.Errorf("key %s's plaintext leaked into %s", k.Name, where)
		}
	}
	if strings.Contains(s, adminKey) {
		e.t.Errorf("the admin key leaked into %s", where)
	}
}

func TestCtlDrivesTheDaemon(t *testing.T) {
	e := newEnv(t, startSandbox(t))
	e.writeConfig(cfgOpts{})
	p := e.start()

	// The socket is 0600 by default.
	fi, err := os.Lstat(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want socket 0600", fi.Mode())
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string // in stdout
		wantErr  string   // in stderr
	}{
		{name: "status", args: []string{"status"}, wantCode: 0, wantOut: []string{"mrbacd dev", "config       " + e.cfgPath, "last reload  none", "rotate", "budget", "audit"}, wantErr: ""},
		{name: "jobs", args: []string{"jobs"}, wantCode: 0, wantOut: []string{"JOB", "SCHEDULE", "0 3 * * *", "*/30 * * * *", "30 2 * * *", "idle"}, wantErr: ""},
		{name: "bootstrap rotation", args: []string{"run", "rotate", "--wait"}, wantCode: 0, wantOut: []string{"rotate: ok: rotated 1 of 1 keys (1 bootstrapped)", `"outcome": "bootstrapped"`}, wantErr: ""},
		{name: "dry run", args: []string{"run", "rotate", "--dry-run", "--key", "key-00", "--wait"}, wantCode: 0, wantOut: []string{"rotate: ok"}, wantErr: ""},
		{name: "history", args: []string{"history", "--limit", "5"}, wantCode: 0, wantOut: []string{"ID", "TRIGGER", fmt.Sprintf("uid:%d", os.Getuid()), "rotate", "ok"}, wantErr: ""},
		{name: "unknown job", args: []string{"run", "nope"}, wantCode: 2, wantOut: nil, wantErr: "unknown job"},
		{name: "unknown key", args: []string{"run", "rotate", "--key", "ghost", "--wait"}, wantCode: 2, wantOut: nil, wantErr: `unknown key "ghost" (managed keys: key-00)`},
		{name: "missing job", args: []string{"run"}, wantCode: 2, wantOut: nil, wantErr: "missing JOB"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantOut: nil, wantErr: `unknown command "frobnicate"`},
		{name: "bad limit", args: []string{"history", "--limit", "0"}, wantCode: 2, wantOut: nil, wantErr: "--limit must be from 1 to 1000"},
		{name: "extra argument", args: []string{"status", "now"}, wantCode: 2, wantOut: nil, wantErr: `unexpected argument "now"`},
		{name: "reload ok", args: []string{"reload"}, wantCode: 0, wantOut: []string{"reloaded (config sha256"}, wantErr: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.ctl(tc.args...)
			if r.code != tc.wantCode {
				t.Fatalf("ctl %v: exit %d, want %d\nstdout: %s\nstderr: %s", tc.args, r.code, tc.wantCode, r.stdout, r.stderr)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("ctl %v: stdout lacks %q:\n%s", tc.args, w, r.stdout)
				}
			}
			if !strings.Contains(r.stderr, tc.wantErr) {
				t.Errorf("ctl %v: stderr lacks %q:\n%s", tc.args, tc.wantErr, r.stderr)
			}
			e.noLeak("ctl output", r.stdout+r.stderr)
		})
	}

	// JSON output, and a run started without --wait that is then looked up.
	var run ctlsock.Run
	if r := e.ctlJSON(&run, "run", "audit"); r.code != 0 || run.ID == 0 || run.Job != "audit" {
		t.Fatalf("run audit: %+v %+v", r, run)
	}
	var runs []ctlsock.Run
	testenv.WaitFor(t, 10*time.Second, "the audit run to finish", func() bool {
		e.ctlJSON(&runs, "history")
		runs = notCron(runs)
		return len(runs) >= 1 && runs[0].ID == run.ID && runs[0].Status != "running"
	})
	if runs[0].Trigger != fmt.Sprintf("uid:%d", os.Getuid()) {
		t.Errorf("run trigger = %q", runs[0].Trigger)
	}

	// The bootstrapped key is in the store and the platform accepts it.
	rec := e.storedKey("key-00")
	if !e.sb.Accepts(rec.APIKey) || rec.RotationID == "" {
		t.Errorf("stored record %v not accepted by the platform", rec)
	}

	// The socket can come from --config or $MRBACD_SOCKET instead of --socket.
	for _, c := range []struct {
		name string
		args []string
		env  string
	}{
		{name: "--config", args: []string{"ctl", "--config", e.cfgPath, "status"}, env: ""},
		{name: "$MRBACD_SOCKET", args: []string{"ctl", "status"}, env: "MRBACD_SOCKET=" + e.socket},
	} {
		cmd := execCommand(c.args...)
		cmd.Env = append(cmd.Env, c.env)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "mrbacd dev") {
			t.Errorf("ctl with the socket from %s: %v\n%s", c.name, err, out)
		}
	}

	// A second daemon on the same socket refuses to start and leaves the first alone.
	second := execCommand("run", "--config", e.cfgPath)
	out, _ := second.CombinedOutput()
	if second.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "another process answers on "+e.socket) {
		t.Errorf("second daemon: exit %d, %s", second.ProcessState.ExitCode(), out)
	}
	if r := e.ctl("status"); r.code != 0 {
		t.Errorf("first daemon after the second was refused: %+v", r)
	}

	// Unreachable daemon: exit 3 with the reason.
	r := e.ctlAs(-1, "--socket", filepath.Join(e.dir, "absent.sock"), "status")
	if r.code != 3 || !strings.Contains(r.stderr, "cannot reach the daemon") || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("absent socket: exit %d, stderr %s", r.code, r.stderr)
	}

	if code, took := p.stop(t, syscall.SIGTERM, 6*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM (took %s)", code, took)
	}
	if _, err := os.Lstat(e.socket); !os.IsNotExist(err) {
		t.Errorf("socket left after stop: %v", err)
	}
	e.noLeak("daemon logs", p.stderr.String()+p.stdout.String())
}

func TestPeerUIDRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test connects as another uid and must run as root (it does in CI and here)")
	}
	e := newEnv(t, startSandbox(t))
	e.writeConfig(cfgOpts{})
	p := e.start()

	// With the default mode 0600 another uid cannot even connect.
	r := e.ctlAs(65534, "status")
	if r.code != 3 || !strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, "file permissions") {
		t.Errorf("ctl as uid 65534 on a 0600 socket: exit %d, stderr %q", r.code, r.stderr)
	}

	// World-writable (config validation refuses that mode, so the test
	// chmods it): only the SO_PEERCRED check stands in the way.
	if err := os.Chmod(e.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	r = e.ctlAs(65534, "status")
	if r.code != 3 || !strings.Contains(r.stderr, "access refused by the daemon: uid 65534 is not allowed") {
		t.Errorf("ctl as uid 65534: exit %d, stderr %q", r.code, r.stderr)
	}
	r = e.ctlAs(65534, "run", "rotate", "--force")
	if r.code != 3 {
		t.Errorf("ctl run as uid 65534: exit %d, stderr %q", r.code, r.stderr)
	}
	// The daemon logs before it answers, but its stderr reaches the buffer
	// through a pipe the test copies: poll.
	testenv.WaitFor(t, 5*time.Second, "the refusal to be logged", func() bool {
		return strings.Contains(p.stderr.String(), `"msg":"admin request refused","uid":65534`)
	})
	var runs []ctlsock.Run
	if e.ctlJSON(&runs, "history"); len(notCron(runs)) != 0 {
		t.Errorf("a refused peer started runs: %+v", runs)
	}

	// allowed_uids, changed by a reload, takes effect at once.
	e.writeConfig(cfgOpts{allowedUIDs: "[65534]"})
	if r := e.ctl("reload"); r.code != 0 {
		t.Fatalf("reload: %+v", r)
	}
	if r := e.ctlAs(65534, "status"); r.code != 0 || !strings.Contains(r.stdout, "mrbacd dev") {
		t.Errorf("ctl as allowed uid 65534: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	if r := e.ctlAs(65534, "--json", "run", "budget"); r.code != 0 || !strings.Contains(r.stdout, `"trigger": "uid:65534"`) {
		t.Errorf("run as uid 65534: %+v", r)
	}
	p.stop(t, syscall.SIGTERM, 6*time.Second)
}

func TestSIGHUPWithBrokenConfigKeepsServing(t *testing.T) {
	e := newEnv(t, startSandbox(t))
	e.writeConfig(cfgOpts{})
	p := e.start()
	var before ctlsock.Status
	e.ctlJSON(&before, "status")

	tests := []struct {
		name    string
		content string // raw file content, or "" to write a valid config with extra
		extra   string
		wantOK  bool
		wantErr string
		wantSch string
	}{
		{name: "yaml syntax error", content: "keys: [\n  - name: x\n", extra: "", wantOK: false, wantErr: "mrbacd.yaml", wantSch: "*/30 * * * *"},
		{name: "invalid value", content: "", extra: "jobs:\n  budget: {schedule: \"every tuesday\"}\n", wantOK: false, wantErr: "jobs.budget.schedule", wantSch: "*/30 * * * *"},
		{name: "valid change", content: "", extra: "jobs:\n  budget: {schedule: \"*/10 * * * *\"}\n", wantOK: true, wantErr: "", wantSch: "*/10 * * * *"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.content != "" {
				os.WriteFile(e.cfgPath, []byte(tc.content), 0o600)
			} else {
				e.writeConfig(cfgOpts{extra: tc.extra})
			}
			var prev ctlsock.Status
			e.ctlJSON(&prev, "status")
			p.cmd.Process.Signal(syscall.SIGHUP)
			var st ctlsock.Status
			testenv.WaitFor(t, 10*time.Second, "the reload to be recorded", func() bool {
				r := e.ctlJSON(&st, "status")
				return r.code == 0 && st.LastReload != nil && (prev.LastReload == nil || st.LastReload.At.After(prev.LastReload.At))
			})
			if st.LastReload.OK != tc.wantOK || st.LastReload.Trigger != "signal" || !strings.Contains(st.LastReload.Error, tc.wantErr) {
				t.Errorf("last reload = %+v", st.LastReload)
			}
			if !tc.wantOK && st.ConfigHash != before.ConfigHash {
				t.Error("config hash changed although the reload was refused")
			}
			for _, j := range st.Jobs {
				if j.Name == "budget" && j.Schedule != tc.wantSch {
					t.Errorf("budget schedule = %q, want %q", j.Schedule, tc.wantSch)
				}
			}
			// ctl shows the refusal too.
			if r := e.ctl("status"); r.code != 0 || (!tc.wantOK && !strings.Contains(r.stdout, "by signal: refused: ")) {
				t.Errorf("ctl status: %+v", r)
			}
		})
	}
	// ctl reload of a broken config: exit 1, problems printed, old config kept.
	os.WriteFile(e.cfgPath, []byte("mistral: {base_url: 42}\nbogus: true\n"), 0o600)
	r := e.ctl("reload")
	if r.code != 1 || !strings.Contains(r.stderr, "reload refused; the daemon keeps its current config") || !strings.Contains(r.stderr, "bogus") {
		t.Errorf("ctl reload of a broken config: %+v", r)
	}
	if code, _ := p.stop(t, syscall.SIGTERM, 6*time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if !strings.Contains(p.stderr.String(), "reload refused; the old config keeps running") {
		t.Error("refused reload not logged")
	}
}

func TestSIGTERMMidRotationResumesNextStart(t *testing.T) {
	sb := startSandbox(t)
	e := newEnv(t, sb)
	e.writeConfig(cfgOpts{propagationWait: "1s"})
	p := e.start()
	if r := e.ctl("run", "rotate", "--wait"); r.code != 0 {
		t.Fatalf("bootstrap: %+v", r)
	}
	old := e.storedKey("key-00")

	// A long propagation wait, picked up by a reload; then a forced rotation.
	const wait = 8 * time.Second
	e.writeConfig(cfgOpts{propagationWait: "8s"})
	if r := e.ctl("reload"); r.code != 0 {
		t.Fatalf("reload: %+v", r)
	}
	if r := e.ctl("run", "rotate", "--force"); r.code != 0 {
		t.Fatalf("run rotate: %+v", r)
	}
	db := e.journal()
	var inflight []journal.Rotation
	testenv.WaitFor(t, 10*time.Second, "the rotation to reach its propagation wait", func() bool {
		var err error
		inflight, err = db.InFlightRotations(context.Background())
		return err == nil && len(inflight) == 1 && inflight[0].Step == "publish"
	})
	published := e.storedKey("key-00")
	if published.KeyID == old.KeyID || !sb.Accepts(published.APIKey) || !sb.Accepts(old.APIKey) {
		t.Fatalf("mid-rotation: both keys must be live and the new one published")
	}

	code, took := p.stop(t, syscall.SIGTERM, 6*time.Second)
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	if took > 5*time.Second {
		t.Errorf("stop took %s, more than shutdown_timeout 5s", took)
	}
	t.Logf("SIGTERM mid-rotation: exit %d in %s", code, took)
	still, err := db.InFlightRotations(context.Background())
	if err != nil || len(still) != 1 || still[0].ID != inflight[0].ID {
		t.Fatalf("rotation not journaled in flight after stop: %+v %v", still, err)
	}
	if !sb.Accepts(old.APIKey) {
		t.Error("old key revoked although the rotation was interrupted before re-verify")
	}

	// The next start resumes it: waits the rest of the propagation, revokes the old key.
	p2 := e.start()
	testenv.WaitFor(t, wait+10*time.Second, "the resumed rotation to finish", func() bool {
		n, err := db.InFlightRotations(context.Background())
		return err == nil && len(n) == 0
	})
	rot, err := db.Rotation(context.Background(), inflight[0].ID)
	if err != nil || rot.Status != "done" {
		t.Fatalf("rotation after resume: %+v %v", rot, err)
	}
	final := e.storedKey("key-00")
	if final.KeyID != published.KeyID || !sb.Accepts(final.APIKey) {
		t.Error("the store does not hold the resumed rotation's key")
	}
	if sb.Accepts(old.APIKey) {
		t.Error("old key still live after the resumed rotation finished")
	}
	var runs []ctlsock.Run
	testenv.WaitFor(t, 10*time.Second, "the resume run to be journaled", func() bool {
		e.ctlJSON(&runs, "history")
		runs = notCron(runs)
		return len(runs) > 0 && runs[0].Status != "running"
	})
	if len(runs) == 0 || runs[0].Trigger != "resume" || runs[0].Status != "ok" {
		t.Errorf("latest run = %+v, want the resume run ok", runs)
	}
	p2.stop(t, syscall.SIGTERM, 6*time.Second)
	e.noLeak("daemon logs", p.stderr.String()+p2.stderr.String())
}

func TestCatchUpAfterDowntime(t *testing.T) {
	e := newEnv(t, startSandbox(t))
	e.writeConfig(cfgOpts{})
	// The test controls the clock the daemon compares with: the journal says
	// the audit (daily at 02:30) last fired two days ago, so one fire was
	// missed while "down"; rotate and budget never fired (first start).
	db := e.journal()
	if err := db.SetLastFire(context.Background(), "audit", time.Now().Add(-48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	p := e.start()
	var runs []ctlsock.Run
	testenv.WaitFor(t, 15*time.Second, "the catch-up audit run to finish", func() bool {
		e.ctlJSON(&runs, "history")
		runs = notCron(runs)
		return len(runs) == 1 && runs[0].Status != "running"
	})
	if runs[0].Job != "audit" || runs[0].Trigger != "catch-up" {
		t.Errorf("runs after start = %+v, want one catch-up audit", runs)
	}
	last, ok, err := db.LastFire(context.Background(), "audit")
	if err != nil || !ok || time.Since(last) > time.Minute {
		t.Errorf("audit last fire = %v %v %v, want just now", last, ok, err)
	}
	p.stop(t, syscall.SIGTERM, 6*time.Second)

	// Caught up once: a restart right after does not run it again (a
	// catch-up run is journaled before READY=1, so no wait is needed).
	p = e.start()
	e.ctlJSON(&runs, "history")
	if runs = notCron(runs); len(runs) != 1 {
		t.Errorf("runs after a second start = %d, want still 1", len(runs))
	}
	p.stop(t, syscall.SIGTERM, 6*time.Second)
}

func TestRunRefusesBadConfig(t *testing.T) {
	e := newEnv(t, startSandbox(t))
	tests := []struct {
		name     string
		content  string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "no config flag", content: "", args: []string{"run"}, wantCode: 2, wantErr: "--config is required"},
		{name: "invalid config", content: "mistral: {base_url: 42}\n", args: []string{"run", "--config", e.cfgPath}, wantCode: 2, wantErr: "mrbacd.yaml:1:"},
		{name: "regular file at the socket path", content: "", args: []string{"run", "--config", e.cfgPath}, wantCode: 1, wantErr: "is not a socket"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.content != "" {
				os.WriteFile(e.cfgPath, []byte(tc.content), 0o600)
			} else {
				e.writeConfig(cfgOpts{})
				os.WriteFile(e.socket, []byte("precious"), 0o600)
				defer os.Remove(e.socket)
			}
			cmd := execCommand(tc.args...)
			out, _ := cmd.CombinedOutput()
			if cmd.ProcessState.ExitCode() != tc.wantCode || !strings.Contains(string(out), tc.wantErr) {
				t.Errorf("exit %d, output %s; want %d and %q", cmd.ProcessState.ExitCode(), out, tc.wantCode, tc.wantErr)
			}
		})
	}
	if data, _ := os.ReadFile(e.socket); len(data) != 0 {
		t.Errorf("socket path still holds %q after the test removed it", data)
	}
}

func TestSystemdNotifications(t *testing.T) {
	e := newEnv(t, startSandbox(t))
	e.writeConfig(cfgOpts{})
	// WatchdogSec=0.4s as systemd would pass it: pings every 200ms.
	p := e.start("WATCHDOG_USEC=400000")
	testenv.WaitFor(t, 5*time.Second, "WATCHDOG=1", func() bool { return strings.Contains(p.notify.String(), "WATCHDOG=1") })
	p.cmd.Process.Signal(syscall.SIGHUP)
	testenv.WaitFor(t, 5*time.Second, "RELOADING=1 then READY=1", func() bool {
		n := p.notify.String()
		i := strings.Index(n, "RELOADING=1\nMONOTONIC_USEC=")
		return i >= 0 && strings.Contains(n[i:], "READY=1")
	})
	if code, _ := p.stop(t, syscall.SIGTERM, 6*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
	if n := p.notify.String(); !strings.Contains(n, "STOPPING=1") || !strings.HasPrefix(n, "READY=1") {
		t.Errorf("notifications:\n%s", n)
	}
}

// notCron drops the runs cron started: a default schedule's boundary (budget
// every 30 minutes) may fall inside a test, and the tests count the runs they
// caused.
func notCron(runs []ctlsock.Run) []ctlsock.Run {
	out := runs[:0:0]
	for _, r := range runs {
		if r.Trigger != "cron" {
			out = append(out, r)
		}
	}
	return out
}
