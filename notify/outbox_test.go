package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/notify"
	"github.com/mrbacd/mrbacd/notify/slack"
)

const token = "xoxb-outbox-test-token"

// countByDedupe counts the accepted chat.postMessage calls per dedupe id
// (from the message metadata).
func countByDedupe(t *testing.T, s *testenv.SlackServer) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range s.Messages() {
		var md struct {
			EventPayload map[string]any `json:"event_payload"`
		}
		if err := json.Unmarshal([]byte(m.Form.Get("metadata")), &md); err != nil {
			t.Fatalf("message without metadata: %q", m.Text)
		}
		out[fmt.Sprint(md.EventPayload["dedupe"])]++
	}
	return out
}

// timedSender records when each attempt starts, around the real notifier.
type timedSender struct {
	notify.Sender
	mu    sync.Mutex
	times []time.Time
	errs  []error
}

func (s *timedSender) Send(ctx context.Context, n notify.Notification) error {
	start := time.Now()
	err := s.Sender.Send(ctx, n)
	s.mu.Lock()
	s.times = append(s.times, start)
	s.errs = append(s.errs, err)
	s.mu.Unlock()
	return err
}

func openJournal(t testing.TB) (*journal.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := journal.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func msg(i int) notify.Notification {
	return notify.Notification{Kind: notify.KindJobFailed, Severity: notify.Critical,
		Title: fmt.Sprintf("message %d", i), Text: fmt.Sprintf("message %d", i), Dedupe: fmt.Sprintf("msg-%d", i)}
}

// Slack answers 429 (Retry-After: 1), then 500s, then is down; every message
// still arrives exactly once, in order, and the Retry-After is honoured.
func TestOutboxThroughFaults(t *testing.T) {
	s := testenv.Slack(t)
	db, _ := openJournal(t)
	n, err := slack.New(slack.Options{Token: token, APIURL: s.APIURL, Channel: "C0ALERTS1"})
	if err != nil {
		t.Fatal(err)
	}
	sender := &timedSender{Sender: n}
	var logs bytes.Buffer
	var logMu sync.Mutex
	ob := notify.NewOutbox(db, sender, notify.OutboxOptions{MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(lockedWriter{&logMu, &logs}, nil))})
	s.RateLimit(1, "1")
	s.FailNext(3, 500)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ob.Run(ctx) }()
	const total = 6
	for i := 0; i < total; i++ {
		if err := ob.Enqueue(ctx, msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Enqueueing again (a job re-running after a crash) adds nothing.
	if err := ob.Enqueue(ctx, msg(0)); err != nil {
		t.Fatal(err)
	}
	// Let it hit the 429 and the 500s, then take Slack down for a few attempts.
	waitAttempts := func(n int) {
		testenv.WaitFor(t, 20*time.Second, fmt.Sprintf("%d delivery attempts", n), func() bool { return s.Attempts() >= n })
	}
	waitAttempts(3)
	s.SetDown(true)
	waitAttempts(8)
	if got := len(s.Messages()); got != 0 {
		t.Fatalf("%d messages delivered during the faults", got)
	}
	if n, _ := db.PendingCount(ctx); n != total {
		t.Fatalf("pending = %d during the outage, want %d", n, total)
	}
	s.SetDown(false)
	s.WaitForMessages(t, total, 20*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	counts := countByDedupe(t, s)
	for i := 0; i < total; i++ {
		if c := counts[fmt.Sprintf("msg-%d", i)]; c != 1 {
			t.Errorf("msg-%d delivered %d times", i, c)
		}
	}
	for i, m := range s.Messages() {
		if m.Text != fmt.Sprintf("message %d", i) {
			t.Errorf("message %d is %q: order lost", i, m.Text)
		}
	}
	sender.mu.Lock()
	if _, _, ra := notify.Classify(sender.errs[0]); ra != time.Second {
		t.Errorf("first attempt: %v, want a 429 with Retry-After 1s", sender.errs[0])
	}
	gap := sender.times[1].Sub(sender.times[0])
	sender.mu.Unlock()
	if gap < 950*time.Millisecond {
		t.Errorf("second attempt %v after the 429, want >= Retry-After 1s", gap)
	}
	if n, _ := db.PendingCount(ctx); n != 0 {
		t.Errorf("pending = %d after delivery", n)
	}
	st := ob.Stats()
	if st.Sent != total || st.Retried < 5 || st.Dead != 0 {
		t.Errorf("stats = %+v", st)
	}
	logMu.Lock()
	if !bytes.Contains(logs.Bytes(), []byte(`"retry_in"`)) || bytes.Contains(logs.Bytes(), []byte(token)) {
		t.Errorf("logs: %s", logs.String())
	}
	logMu.Unlock()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A permanent failure drops the message (dead, logged) and the queue moves on.
func TestOutboxPermanentFailure(t *testing.T) {
	s := testenv.Slack(t)
	db, _ := openJournal(t)
	n, _ := slack.New(slack.Options{Token: token, APIURL: s.APIURL, Channel: "C0ALERTS1"})
	var logs bytes.Buffer
	ob := notify.NewOutbox(db, n, notify.OutboxOptions{MinBackoff: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		ob.Enqueue(ctx, msg(i))
	}
	s.InjectFaults(testenv.SlackFault{SlackError: "invalid_blocks"})
	if err := ob.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := len(s.Messages()); got != 2 {
		t.Fatalf("%d delivered, want 2", got)
	}
	dead, _ := db.Messages(ctx, journal.MsgDead, 0)
	if len(dead) != 1 || dead[0].Dedupe != "msg-0" || dead[0].LastError == "" {
		t.Fatalf("dead = %+v", dead)
	}
	if !bytes.Contains(logs.Bytes(), []byte("level=ERROR")) || !bytes.Contains(logs.Bytes(), []byte("invalid_blocks")) {
		t.Errorf("permanent failure not logged loudly: %s", logs.String())
	}
	// The operator fixes the cause and requeues it.
	if err := db.Requeue(ctx, dead[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := ob.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if c := countByDedupe(t, s); c["msg-0"] != 1 || len(c) != 3 {
		t.Fatalf("after requeue: %v", c)
	}
	if st := ob.Stats(); st.Dead != 1 || st.Sent != 3 {
		t.Errorf("stats = %+v", st)
	}
}

// Flush (one-shot commands) leaves undelivered messages in the outbox and
// says so; the next Flush delivers them.
func TestFlushWhileSlackIsDown(t *testing.T) {
	s := testenv.Slack(t)
	db, _ := openJournal(t)
	n, _ := slack.New(slack.Options{Token: token, APIURL: s.APIURL, Channel: "C0ALERTS1"})
	ob := notify.NewOutbox(db, n, notify.OutboxOptions{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	ctx := context.Background()
	ob.Enqueue(ctx, msg(1))
	ob.Enqueue(ctx, msg(2))
	s.SetDown(true)
	err := ob.Flush(ctx)
	if !errors.Is(err, notify.ErrUndelivered) {
		t.Fatalf("Flush while down = %v, want ErrUndelivered", err)
	}
	s.SetDown(false)
	// Flush delivers what is due: the messages come due after their backoff.
	var flushErr error
	testenv.WaitFor(t, 10*time.Second, "a Flush after the outage to deliver", func() bool {
		flushErr = ob.Flush(ctx)
		return flushErr == nil || !errors.Is(flushErr, notify.ErrUndelivered)
	})
	if flushErr != nil {
		t.Fatalf("Flush after outage = %v", flushErr)
	}
	if c := countByDedupe(t, s); c["msg-1"] != 1 || c["msg-2"] != 1 {
		t.Fatalf("counts = %v", c)
	}
}

// MaxAge gives up on a message after a bound (when configured).
func TestOutboxMaxAge(t *testing.T) {
	s := testenv.Slack(t)
	db, _ := openJournal(t)
	n, _ := slack.New(slack.Options{Token: token, APIURL: s.APIURL, Channel: "C0ALERTS1"})
	now := time.Now()
	clock := func() time.Time { return now }
	ob := notify.NewOutbox(db, n, notify.OutboxOptions{MaxAge: time.Hour, Now: clock})
	ctx := context.Background()
	ob.Enqueue(ctx, msg(1))
	now = now.Add(2 * time.Hour)
	ob.Enqueue(ctx, msg(2))
	if err := ob.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	dead, _ := db.Messages(ctx, journal.MsgDead, 0)
	if len(dead) != 1 || dead[0].Dedupe != "msg-1" {
		t.Fatalf("dead = %+v", dead)
	}
	if c := countByDedupe(t, s); c["msg-2"] != 1 || c["msg-1"] != 0 {
		t.Fatalf("counts = %v", c)
	}
}

func TestEnqueueRejects(t *testing.T) {
	db, _ := openJournal(t)
	ob := notify.NewOutbox(db, notify.NewStdout(&bytes.Buffer{}), notify.OutboxOptions{})
	if err := ob.Enqueue(context.Background(), notify.Notification{Title: "no kind"}); err == nil {
		t.Fatal("accepted a notification without kind")
	}
	if n, _ := db.PendingCount(context.Background()); n != 0 {
		t.Fatalf("pending = %d", n)
	}
}

// The stdout notifier through the outbox: the demo's path.
func TestOutboxStdout(t *testing.T) {
	db, _ := openJournal(t)
	var out bytes.Buffer
	ob := notify.NewOutbox(db, notify.NewStdout(&out), notify.OutboxOptions{})
	ctx := context.Background()
	ob.Enqueue(ctx, notify.BudgetAlertMessage(notify.BudgetAlert{Workspace: "dev", Month: "2026-11", Threshold: 0.8, SpendUSD: 41, BudgetUSD: 50}))
	ob.Enqueue(ctx, notify.BudgetAlertMessage(notify.BudgetAlert{Workspace: "dev", Month: "2026-11", Threshold: 0.8, SpendUSD: 42, BudgetUSD: 50}))
	if err := ob.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if c := bytes.Count(out.Bytes(), []byte("[WARNING] budget_alert: Budget: dev passed 80%")); c != 1 {
		t.Fatalf("budget alert printed %d times:\n%s", c, out.String())
	}
}

// --- killed and restarted: child processes sharing the journal ---

func TestMain(m *testing.M) {
	if os.Getenv("NOTIFY_TEST_CHILD") == "1" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

// dieAfterSend SIGKILLs the process right after the n-th successful send,
// before the outbox can record it: the crash window.
type dieAfterSend struct {
	notify.Sender
	n, sent int
	marker  string
}

// Delivered forwards to the real notifier's Confirmer.
func (d *dieAfterSend) Delivered(ctx context.Context, n notify.Notification, since time.Time) (bool, error) {
	return d.Sender.(notify.Confirmer).Delivered(ctx, n, since)
}

func (d *dieAfterSend) Send(ctx context.Context, n notify.Notification) error {
	err := d.Sender.Send(ctx, n)
	if err == nil {
		d.sent++
		if d.sent == d.n {
			if _, statErr := os.Stat(d.marker); os.IsNotExist(statErr) {
				os.WriteFile(d.marker, nil, 0o600)
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
	}
	return err
}

// child enqueues NOTIFY_TEST_N messages (a no-op when already enqueued, as
// for a job re-running after a crash) and drains the outbox.
func child() int {
	ctx := context.Background()
	db, err := journal.Open(ctx, os.Getenv("NOTIFY_TEST_DB"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer db.Close()
	opts := slack.Options{Token: token, APIURL: os.Getenv("NOTIFY_TEST_API"), Channel: "C0ALERTS1"}
	if wh := os.Getenv("NOTIFY_TEST_WEBHOOK"); wh != "" {
		opts = slack.Options{WebhookURL: wh}
	}
	n, err := slack.New(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var sender notify.Sender = n
	if k, _ := strconv.Atoi(os.Getenv("NOTIFY_TEST_DIE_AFTER")); k > 0 {
		sender = &dieAfterSend{Sender: n, n: k, marker: os.Getenv("NOTIFY_TEST_DB") + ".died"}
	}
	ob := notify.NewOutbox(db, sender, notify.OutboxOptions{
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		SendTimeout: 500 * time.Millisecond, Lease: 700 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	total, _ := strconv.Atoi(os.Getenv("NOTIFY_TEST_N"))
	for i := 0; i < total; i++ {
		if err := ob.Enqueue(ctx, msg(i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := ob.Drain(dctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type childProc struct {
	cmd    *exec.Cmd
	stderr *testenv.LogBuffer // read while the child may still write
	done   chan error
}

func startChild(t *testing.T, env ...string) *childProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "NOTIFY_TEST_CHILD=1"), env...)
	stderr := &testenv.LogBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childProc{cmd: cmd, stderr: stderr, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
	})
	return c
}

// exited reports whether the child has ended.
func (c *childProc) exited() bool {
	select {
	case err := <-c.done:
		c.done <- err
		return true
	default:
		return false
	}
}

func (c *childProc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err
		return err
	case <-time.After(timeout):
		t.Fatalf("child did not finish in %s; stderr:\n%s", timeout, c.stderr.String())
		return nil
	}
}

// The outbox's process is SIGKILLed at random moments while Slack rate-limits,
// fails and goes down, and is restarted each time; once Slack recovers every
// message has arrived exactly once.
func TestOutboxKilledAndRestarted(t *testing.T) {
	s := testenv.Slack(t)
	historyCalls := s.ServeHistory(nil)
	_, path := openJournal(t)
	const total = 60
	env := []string{"NOTIFY_TEST_DB=" + path, "NOTIFY_TEST_API=" + s.APIURL, "NOTIFY_TEST_N=" + strconv.Itoa(total)}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	kills, midStream := 0, 0
	for round := 0; round < 12; round++ {
		before := len(s.Messages())
		c := startChild(t, env...)
		// Let some messages flow (or the child end), then fail Slack
		// mid-stream, then kill.
		flowed := min(total, before+1+rng.IntN(4))
		waitCtx, cancelWait := context.WithTimeout(context.Background(), 10*time.Second)
		testenv.Until(waitCtx, func() bool { return len(s.Messages()) >= flowed || c.exited() })
		cancelWait()
		switch round % 3 {
		case 0:
			s.RateLimit(1, "1")
		case 1:
			s.FailNext(3, 500)
		case 2:
			s.SetDown(true)
		}
		select {
		case err := <-c.done:
			c.done <- err
			if err != nil {
				t.Fatalf("child failed before the kill: %v\n%s", err, c.stderr.String())
			}
		case <-time.After(time.Duration(rng.IntN(80)) * time.Millisecond):
			c.cmd.Process.Signal(syscall.SIGKILL)
			c.wait(t, 10*time.Second)
			kills++
			if n := len(s.Messages()); n > before && n < total {
				midStream++
			}
		}
		s.SetDown(false)
	}
	s.SetDown(false)
	c := startChild(t, env...)
	if err := c.wait(t, 90*time.Second); err != nil {
		t.Fatalf("final child: %v\n%s", err, c.stderr.String())
	}
	counts := countByDedupe(t, s)
	for i := 0; i < total; i++ {
		if got := counts[fmt.Sprintf("msg-%d", i)]; got != 1 {
			t.Errorf("msg-%d delivered %d times", i, got)
		}
	}
	if len(counts) != total {
		t.Errorf("%d distinct messages, want %d", len(counts), total)
	}
	t.Logf("%d kills (%d while messages were flowing), %d Slack attempts, %d history checks of in-doubt messages, %d messages delivered",
		kills, midStream, s.Attempts(), historyCalls.Load(), len(s.Messages()))
}

// The crash window itself: the process dies after Slack accepted a message
// and before the journal recorded it. With a bot token the restarted outbox
// finds the message in the channel history and does not post it again; with
// a webhook (no history) it is sent again: at-least-once, never lost.
func TestCrashAfterSlackAccepted(t *testing.T) {
	for _, tc := range []struct {
		name      string
		webhook   bool
		wantTwice bool
	}{
		{name: "bot token: confirmed via history, exactly once", webhook: false, wantTwice: false},
		{name: "webhook: resent, at least once", webhook: true, wantTwice: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testenv.Slack(t)
			historyCalls := s.ServeHistory(nil)
			_, path := openJournal(t)
			env := []string{"NOTIFY_TEST_DB=" + path, "NOTIFY_TEST_N=5", "NOTIFY_TEST_DIE_AFTER=3"}
			if tc.webhook {
				env = append(env, "NOTIFY_TEST_WEBHOOK="+s.WebhookURL)
			} else {
				env = append(env, "NOTIFY_TEST_API="+s.APIURL)
			}
			first := startChild(t, env...)
			err := first.wait(t, 30*time.Second)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("first child: %v, want killed by SIGKILL\n%s", err, first.stderr.String())
			}
			second := startChild(t, env...)
			err = second.wait(t, 30*time.Second)
			t.Logf("second child stderr:\n%s", second.stderr.String())
			if err != nil {
				t.Fatalf("second child: %v\n%s", err, second.stderr.String())
			}
			counts := map[string]int{}
			if tc.webhook {
				for _, raw := range s.WebhookMessages() {
					var p struct{ Text string }
					json.Unmarshal(raw, &p)
					counts[p.Text]++
				}
			} else {
				for k, v := range countByDedupe(t, s) {
					counts["message "+k[len("msg-"):]] = v
				}
			}
			if !tc.webhook && historyCalls.Load() == 0 {
				t.Error("the in-doubt message was not checked in the channel history")
			}
			for i := 0; i < 5; i++ {
				want := 1
				if tc.wantTwice && i == 2 {
					want = 2 // the one in flight at the crash
				}
				if got := counts[fmt.Sprintf("message %d", i)]; got != want {
					t.Errorf("message %d delivered %d times, want %d (%v)", i, got, want, counts)
				}
			}
		})
	}
}
