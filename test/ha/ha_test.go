package ha

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mrbacd/mrbacd/ctlsock"
	"github.com/mrbacd/mrbacd/internal/testenv"
)

// killTarget is MRBACD_HA_KILLS or 10.
func killTarget(t *testing.T) int {
	n := 10
	if s := os.Getenv("MRBACD_HA_KILLS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("MRBACD_HA_KILLS=%q: want a number >= 1", s)
		}
		n = v
	}
	return n
}

// isConflict reports a 409: the job is running already (a resume run).
func isConflict(err error) bool {
	var ae *ctlsock.APIError
	return errors.As(err, &ae) && ae.StatusCode == 409
}

// TestChaosHA: two daemons on one journal; the leader is SIGKILLed at a
// random moment of forced rotations, then restarted, again and again.
func TestChaosHA(t *testing.T) {
	want := killTarget(t)
	w := newWorld(t, 200*time.Millisecond)
	ch := w.startChecker()
	poll := w.journalConn()
	for _, n := range w.nodes {
		w.start(n)
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13))
	var failovers []time.Duration
	inflightKills, viaStandby := 0, 0
	deadline := time.Now().Add(time.Duration(want)*10*time.Second + time.Minute)
	for kills := 0; kills < want; kills++ {
		if time.Now().After(deadline) {
			t.Fatalf("out of time after %d kills (want %d)", kills, want)
		}
		l := w.leader(10 * lease)
		// Asked of the leader, or of the standby, which queues it for the
		// leader (taken within the leader's poll of a second).
		asked := l
		if rng.IntN(2) == 0 {
			asked = w.other(l)
			viaStandby++
		}
		if _, err := asked.client.RunJob(ctx, "rotate", ctlsock.RunRequest{Force: true}); err != nil && !isConflict(err) {
			t.Fatalf("kill %d: rotate --force on %s (leader %s): %v", kills, asked.name, l.name, err)
		}
		if rng.IntN(3) > 0 {
			// Two kills in three land inside a rotation: once the journal
			// shows one in flight, at a random moment of its steps.
			reached, cancel := context.WithTimeout(ctx, 5*time.Second)
			if asked != l {
				// Once the leader took the request.
				testenv.Until(reached, func() bool { n, err := openRequests(ctx, poll); return err == nil && n == 0 })
			}
			testenv.Until(reached, func() bool { n, err := inFlight(ctx, poll); return err == nil && n > 0 })
			cancel()
		}
		select {
		case <-l.proc.done:
			t.Fatalf("kill %d: the leader %s exited on its own (%d):\n%s", kills, l.name, l.proc.code, tail(l.out.String(), 6000))
		case <-time.After(time.Duration(rng.Int64N(int64(500 * time.Millisecond)))):
		}
		n, err := inFlight(ctx, poll)
		must(t, err)
		if n > 0 {
			inflightKills++
		}
		killed := time.Now()
		l.proc.kill()
		s := w.other(l)
		took, ok := waitLeading(s, killed, 5*lease)
		if !ok {
			t.Fatalf("kill %d: the standby %s did not take over within %s:\n%s", kills, s.name, 5*lease, tail(s.out.String(), 6000))
		}
		failovers = append(failovers, took)
		w.start(l) // restarted: a standby now
	}
	// Every request queued is started or refused (the new leader refuses
	// those a killed one took but never started) before settling.
	testenv.WaitFor(t, 30*time.Second, "the queued run requests to be taken", func() bool {
		n, err := openRequests(ctx, poll)
		return err == nil && n == 0
	})
	settled := w.settle(poll)
	rotations := w.check(ch, poll)
	reads, _ := ch.Reads()
	var refused int
	must(t, poll.QueryRow(ctx, `SELECT count(*) FROM run_requests WHERE status = 'refused'`).Scan(&refused))
	out := w.output.String()
	t.Logf("chaos-ha: %d kills of the leader (%d with rotations in flight), %d rotations asked of the standby (%d refused: running already, or taken by a leader killed before starting them), "+
		"%d rotations seen on the platform, %d store reads checked, "+
		"%d resumptions of rotations in flight, %d frees of a dead leader's rotation lease, settled in %d runs; "+
		"fail-over (SIGKILL to the standby leading, lease %s): p50 %s, max %s",
		len(failovers), inflightKills, viaStandby, refused, rotations, reads,
		strings.Count(out, `"msg":"resuming rotations in flight"`), strings.Count(out, `"msg":"freed the previous leader's rotation lease"`), settled,
		lease, percentile(failovers, 0.5).Round(time.Millisecond), percentile(failovers, 1).Round(time.Millisecond))
	if inflightKills == 0 || !strings.Contains(out, `"msg":"resuming rotations in flight"`) {
		t.Errorf("%d kills landed while a rotation was in flight; resumptions: %d", inflightKills, strings.Count(out, `"msg":"resuming rotations in flight"`))
	}
}

// waitLeading waits until n's daemon says it leads and returns how long
// after since that was.
func waitLeading(n *node, since time.Time, within time.Duration) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	ok := testenv.Until(ctx, func() bool {
		st, err := n.client.Status(context.Background())
		return err == nil && st.Leader
	})
	return time.Since(since), ok
}

// settle runs rotate on the leader until a run ends ok with nothing in
// flight, and returns how many runs it took.
func (w *world) settle(poll *pgx.Conn) int {
	t := w.t
	ctx := context.Background()
	for runs := 1; runs <= 10; runs++ {
		l := w.leader(10 * lease)
		var run ctlsock.Run
		var err error
		testenv.WaitFor(t, time.Minute, "the leader to take a rotate run", func() bool {
			run, err = l.client.RunJob(ctx, "rotate", ctlsock.RunRequest{Force: true, Wait: true})
			return !isConflict(err)
		})
		if err != nil {
			t.Fatalf("settling: rotate on %s: %v", l.name, err)
		}
		n, err := inFlight(ctx, poll)
		must(t, err)
		if run.Status == "ok" && n == 0 {
			return runs
		}
		t.Logf("settling: run %d %s (%s), %d in flight", run.ID, run.Status, run.Summary, n)
	}
	t.Fatal("settling: rotations still in flight after 10 runs")
	return 0
}

// TestPausedLeader: the leader is SIGSTOPped in a rotation's propagation
// wait; the standby takes over within the lease and finishes the
// rotation; woken, the old leader's late writes are refused.
func TestPausedLeader(t *testing.T) {
	w := newWorld(t, 3*time.Second)
	ch := w.startChecker()
	poll := w.journalConn()
	for _, n := range w.nodes {
		w.start(n)
	}
	ctx := context.Background()
	a := w.leader(10 * lease)
	b := w.other(a)
	if _, err := a.client.RunJob(ctx, "rotate", ctlsock.RunRequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	// Paused with every rotation parked: a process stopped inside a write
	// to the file store would hold its lock (a local store's, not shared
	// by daemons on several hosts) until woken.
	testenv.WaitFor(t, 20*time.Second, "the rotations parked in their propagation wait", func() bool {
		return strings.Count(a.out.String(), "rotation parked for propagation") == len(w.Keys)
	})
	a.proc.signal(syscall.SIGSTOP)
	took, ok := waitLeading(b, time.Now(), 3*lease)
	if !ok {
		a.proc.signal(syscall.SIGCONT)
		t.Fatalf("the standby did not take over within %s:\n%s", 3*lease, tail(b.out.String(), 6000))
	}
	// Within the lease of the last renewal, plus the new leader's setup
	// (a few journal round trips) on a machine the other tests load.
	if took > 2*lease {
		t.Errorf("fail-over took %s, want within the lease (%s) and the setup", took, lease)
	}
	st, err := b.client.Status(ctx)
	must(t, err)
	if !st.Leader || st.LeaderInstance != st.Instance {
		t.Fatalf("new leader's status = %+v", st.Leadership)
	}
	resumed, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if !testenv.Until(resumed, func() bool {
		n, err := inFlight(ctx, poll)
		return err == nil && n == 0 && strings.Contains(b.out.String(), `"msg":"resuming rotations in flight"`)
	}) {
		a.proc.signal(syscall.SIGCONT)
		t.Fatalf("the new leader did not finish the rotations in flight:\n%s", tail(b.out.String(), 12000))
	}
	a.proc.signal(syscall.SIGCONT)
	testenv.WaitFor(t, 10*time.Second, "the old leader to see it lost the lease", func() bool {
		return strings.Contains(a.out.String(), `"msg":"leadership lost: the schedule stopped"`)
	})
	// Woken, the old leader's run tried to journal its end: refused.
	testenv.WaitFor(t, 10*time.Second, "the old leader's late write to be refused", func() bool {
		return strings.Contains(a.out.String(), "journal: fenced")
	})
	for _, line := range strings.Split(a.out.String(), "\n") {
		if strings.Contains(line, "journal: fenced") {
			t.Logf("the old leader's refused write: %s", tail(line, 400))
			break
		}
	}
	sa, err := a.client.Status(ctx)
	must(t, err)
	if sa.Leader || sa.LeaderInstance != st.Instance {
		t.Errorf("the old leader's status after waking = %+v, want a standby naming %s", sa.Leadership, st.Instance)
	}
	w.settle(poll)
	w.check(ch, poll)
	t.Logf("paused leader: the standby led %s after SIGSTOP (lease %s)", took.Round(time.Millisecond), lease)
}

// TestCtlOnStandby drives both daemons with the real `mrbacd ctl`: status
// names the leader everywhere, and `run --wait` on the standby runs on the
// leader and prints its result.
func TestCtlOnStandby(t *testing.T) {
	w := newWorld(t, 200*time.Millisecond)
	for _, n := range w.nodes {
		w.start(n)
	}
	l := w.leader(10 * lease)
	s := w.other(l)
	var ls, ss ctlsock.Status
	w.ctlJSON(l, &ls, "status")
	w.ctlJSON(s, &ss, "status")
	if !ls.Leader || ss.Leader || ls.LeaderInstance != ls.Instance || ss.LeaderInstance != ls.Instance ||
		ss.Instance == ls.Instance || ss.LeaseExpires == nil || ss.LeaseSeconds != lease.Seconds() {
		t.Fatalf("status: leader %+v, standby %+v", ls.Leadership, ss.Leadership)
	}
	raw, _ := w.ctl(s, "--json", "status")
	for _, key := range []string{`"leader": false`, `"instance": "` + ss.Instance + `"`, `"leader_instance": "` + ls.Instance + `"`, `"lease_expires": "`} {
		if !strings.Contains(raw, key) {
			t.Errorf("ctl --json status on the standby lacks %s:\n%s", key, raw)
		}
	}
	for _, tc := range []struct {
		name     string
		n        *node
		args     []string
		wantCode int
		want     []string
	}{
		{name: "status on the leader", n: l, args: []string{"status"}, wantCode: 0, want: []string{"leader       this instance (" + ls.Instance + "), lease until "}},
		{name: "status on the standby", n: s, args: []string{"status"}, wantCode: 0, want: []string{"leader       " + ls.Instance + ", lease until ", "this instance (" + ss.Instance + ") is a standby"}},
		{name: "run --wait on the standby", n: s, args: []string{"run", "rotate", "--wait"}, wantCode: 0, want: []string{"run by the leader " + ls.Instance, "rotate: ok: rotated 1 of 1 keys (1 bootstrapped"}},
		{name: "run on the standby", n: s, args: []string{"run", "rotate", "--dry-run"}, wantCode: 0, want: []string{"queued rotate run for the leader (request "}},
		{name: "unknown job on the standby", n: s, args: []string{"run", "nope"}, wantCode: 2, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := w.ctl(tc.n, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("ctl %v: exit %d, want %d:\n%s", tc.args, code, tc.wantCode, out)
			}
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("ctl %v: output lacks %q:\n%s", tc.args, want, out)
				}
			}
		})
	}
}

// ctl runs `mrbacd ctl --socket` on n's socket; it returns stdout and
// stderr together, and the exit code.
func (w *world) ctl(n *node, args ...string) (string, int) {
	w.t.Helper()
	cmd := exec.Command(bin, append([]string{"ctl", "--socket", n.socket}, args...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		w.t.Fatalf("ctl %v: %v", args, err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

func (w *world) ctlJSON(n *node, v any, args ...string) {
	w.t.Helper()
	out, code := w.ctl(n, append([]string{"--json"}, args...)...)
	if code != 0 {
		w.t.Fatalf("ctl --json %v: exit %d:\n%s", args, code, out)
	}
	must(w.t, json.Unmarshal([]byte(out), v))
}
