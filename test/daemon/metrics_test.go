package daemon_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// metricsAddr finds the metrics listener's address in the daemon's JSON log.
func (p *proc) metricsAddr(t *testing.T) string {
	t.Helper()
	// The "mrbacd ready" line may reach the captured stderr a moment after
	// the control socket answers: wait for it.
	addr := ""
	if !testenv.Until(waitCtx(t, 10*time.Second), func() bool {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			var rec struct {
				Msg    string `json:"msg"`
				Listen string `json:"metrics_listen"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "mrbacd ready" && rec.Listen != "" {
				addr = rec.Listen
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no metrics address in the log:\n%s", p.stderr.String())
	}
	return addr
}

// waitCtx is a context ending after d or with the test.
func waitCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsAndFailureNotification(t *testing.T) {
	sb := startSandbox(t)
	e := newEnv(t, sb)
	e.writeConfig(cfgOpts{})
	p := e.start()
	if r := e.ctl("run", "rotate", "--wait"); r.code != 0 {
		t.Fatalf("bootstrap: %+v", r)
	}
	// The rotation digest goes out through the outbox (stdout: no Slack configured).
	testenv.WaitFor(t, 10*time.Second, "the rotation digest", func() bool {
		return strings.Contains(p.stdout.String(), "Key rotation: 1 rotated, 0 failed")
	})
	// The platform is down: the budget poll fails, ctl exits 1, and on-call
	// is told through the outbox.
	sb.InjectFault(sandbox.Fault{Route: "*", Status: 503})
	r := e.ctl("run", "budget", "--wait")
	sb.ClearFaults()
	if r.code != 1 || !strings.Contains(r.stdout, "budget: failed") {
		t.Errorf("failed budget run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	testenv.WaitFor(t, 10*time.Second, "the job failure notification", func() bool {
		return strings.Contains(p.stdout.String(), "Job budget failed")
	})

	base := "http://" + p.metricsAddr(t)
	var code int
	var body string
	// Sent, then marked sent: wait for the outbox to be empty.
	testenv.WaitFor(t, 10*time.Second, "no notification pending", func() bool {
		code, body = httpGet(t, base+"/metrics")
		return code == 200 && strings.Contains(body, "mrbacd_notifications_pending 0")
	})
	for _, want := range []string{
		`mrbacd_job_runs_total{job="rotate",result="ok"} 1`,
		`mrbacd_job_runs_total{job="budget",result="failed"} 1`,
		`mrbacd_job_duration_seconds_count{job="rotate",result="ok"} 1`,
		`mrbacd_rotations_total{outcome="bootstrapped"} 1`,
		`mrbacd_key_age_days{key="key-00"} `,
		`mrbacd_job_next_run_timestamp_seconds{job="rotate"} `,
		`mrbacd_job_next_run_timestamp_seconds{job="audit"} `,
		`mrbacd_job_next_run_timestamp_seconds{job="budget"} `,
		`mrbacd_notifications_pending 0`,
		`mrbacd_build_info{version="dev"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	e.noLeak("metrics", body)
	if code, body := httpGet(t, base+"/healthz"); code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Errorf("/healthz = %d %s", code, body)
	}
	p.stop(t, syscall.SIGTERM, 6*time.Second)
	e.noLeak("daemon output", p.stdout.String()+p.stderr.String())
}
