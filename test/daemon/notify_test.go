package daemon_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// TestDaemonRotationNotifications: the daemon's rotate runs notify (on
// stdout without notify.slack): a digest of the keys rotated, and one
// message per failed key, not doubled by a generic "job failed" message.
func TestDaemonRotationNotifications(t *testing.T) {
	sb := startSandbox(t)
	e := newEnv(t, sb)
	e.writeConfig(cfgOpts{keys: 2, propagationWait: "10ms", extra: "jobs:\n  rotate: {verify_timeout: 1s}\n"})
	p := e.start()
	if r := e.ctl("run", "rotate", "--wait"); r.code != 0 {
		t.Fatalf("bootstrap: %+v", r)
	}
	testenv.WaitFor(t, 10*time.Second, "the rotation digest", func() bool {
		return strings.Contains(p.stdout.String(), "Key rotation: 2 rotated, 0 failed")
	})

	sb.InjectFault(sandbox.Fault{Route: "GET /v1/models", Status: 401})
	r := e.ctl("run", "rotate", "--force", "--wait")
	sb.ClearFaults()
	if r.code != 1 {
		t.Fatalf("forced rotation with verify failing: exit %d, want 1: %+v", r.code, r)
	}
	testenv.WaitFor(t, 10*time.Second, "a failure message per key", func() bool {
		out := p.stdout.String()
		return strings.Contains(out, "Rotation of key-00 failed at verify") && strings.Contains(out, "Rotation of key-01 failed at verify")
	})
	// Every message of the run is queued before ctl --wait returns: once the
	// outbox is empty, a doubled report would be out.
	base := "http://" + p.metricsAddr(t)
	testenv.WaitFor(t, 10*time.Second, "no notification pending", func() bool {
		code, body := httpGet(t, base+"/metrics")
		return code == 200 && strings.Contains(body, "mrbacd_notifications_pending 0")
	})
	out := p.stdout.String()
	if strings.Contains(out, "Job rotate failed") {
		t.Errorf("the key failures were reported twice (a generic job failure too):\n%s", out)
	}
	if n := strings.Count(out, "Key rotation:"); n != 1 {
		t.Errorf("%d rotation digests, want 1 (a pass that rotated nothing sends none):\n%s", n, out)
	}
	e.noLeak("notifications", out)
	e.noLeak("daemon logs", p.stderr.String())
	if code, _ := p.stop(t, syscall.SIGTERM, 6*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}
