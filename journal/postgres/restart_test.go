package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/election"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/journal/postgres"
)

// Every session of the journal is ended by the server (what a restart does
// to a client, without stopping the machine's server under other tests)
// before each step of a rotation-like sequence: every call still succeeds,
// on a fresh session, and the journal holds each step exactly once.
func TestSessionsTerminatedBetweenSteps(t *testing.T) {
	pg := testenv.Postgres(t)
	ctx := context.Background()
	db, logs := openLogged(t, pg)
	tok, ok, err := db.AcquireFenced(ctx, "leader", "daemon-1", time.Minute)
	if err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	fctx := journal.WithFence(ctx, journal.Fence{Name: "leader", Owner: "daemon-1", Token: tok})
	rot := journal.Rotation{ID: "rot-1", KeyName: "dev", Status: journal.StatusInFlight, OldKeyID: "k-old", Trigger: "cron"}
	var run int64
	var msg int64
	steps := []struct {
		name string
		do   func() error
	}{
		{name: "start run", do: func() (err error) { run, err = db.StartRun(fctx, "rotate", "cron", ""); return err }},
		{name: "begin rotation", do: func() error { return db.BeginRotation(fctx, rot) }},
		{name: "create", do: func() error { rot.Step, rot.NewKeyID = "create", "k-new"; return db.UpdateRotation(fctx, rot) }},
		{name: "publish", do: func() error { rot.Step, rot.StoreVersion = "publish", "7"; return db.UpdateRotation(fctx, rot) }},
		{name: "renew leadership", do: func() error {
			ok, err := db.RenewFenced(ctx, "leader", "daemon-1", tok, time.Minute)
			if err == nil && !ok {
				return fmt.Errorf("renewal refused")
			}
			return err
		}},
		{name: "revoke", do: func() error { rot.Step = "revoke"; return db.UpdateRotation(fctx, rot) }},
		{name: "done", do: func() error { rot.Step, rot.Status = "done", journal.StatusDone; return db.UpdateRotation(fctx, rot) }},
		{name: "enqueue digest", do: func() (err error) {
			msg, _, err = db.Enqueue(fctx, journal.Message{Dedupe: "rotation:rot-1", Kind: "rotation"})
			return err
		}},
		{name: "claim", do: func() error {
			ms, err := db.Claim(ctx, time.Now(), time.Minute, 10)
			if err == nil && (len(ms) != 1 || ms[0].ID != msg) {
				return fmt.Errorf("claimed %+v", ms)
			}
			return err
		}},
		{name: "mark sent", do: func() error { return db.MarkSent(ctx, msg, time.Now()) }},
		{name: "usage", do: func() error { return db.AddUsage(ctx, "client:a", "day:1", 100, 0.5) }},
		{name: "mark once", do: func() error { _, err := db.MarkOnce(fctx, "budget:dev:0.8"); return err }},
		{name: "finish run", do: func() error { return db.FinishRun(fctx, run, journal.RunOK, "", `{"rotated":1}`) }},
	}
	ended := 0
	for _, s := range steps {
		ended += pg.TerminateSessions(t)
		if err := s.do(); err != nil {
			t.Fatalf("%s after the server ended the sessions: %v", s.name, err)
		}
	}
	if ended < len(steps)/2 {
		t.Fatalf("only %d sessions ended over %d steps: the test did not exercise reconnection", ended, len(steps))
	}
	pg.TerminateSessions(t)
	got, err := db.Rotation(ctx, "rot-1")
	if err != nil || got.Status != journal.StatusDone || got.Step != "done" || got.NewKeyID != "k-new" || got.StoreVersion != "7" {
		t.Fatalf("rotation = %+v, %v", got, err)
	}
	runs, err := db.Runs(ctx, journal.RunFilter{})
	if err != nil || len(runs) != 1 || runs[0].Status != journal.RunOK {
		t.Fatalf("runs = %+v, %v; want one, ok", runs, err)
	}
	ms, err := db.Messages(ctx, "", 0)
	if err != nil || len(ms) != 1 || ms[0].Status != journal.MsgSent || ms[0].Attempts != 1 {
		t.Fatalf("messages = %+v, %v; want one, sent after one attempt", ms, err)
	}
	if tokens, _, err := db.Usage(ctx, "client:a", "day:1"); err != nil || tokens != 100 {
		t.Fatalf("usage = %d, %v; want 100 (counted once)", tokens, err)
	}
	logs.check(t, 0)
}

// dsnPassword is in the DSN of openLogged's journal: the server trusts local
// connections and ignores it; it is there to check no log line shows it.
const dsnPassword = "Pa55-in-the-DSN-never-logged"

// logBuffer collects a journal's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// check fails t unless at least min recovery warnings, with their cause,
// were logged, and nothing of the DSN was.
func (l *logBuffer) check(t *testing.T, min int) {
	t.Helper()
	l.mu.Lock()
	out := l.b.String()
	l.mu.Unlock()
	n := strings.Count(out, `level=WARN msg="journal: statement did not run; retrying on a new session" engine=postgres`)
	if n < min || (n > 0 && !strings.Contains(out, "SQLSTATE 57P01")) {
		t.Fatalf("%d recovery warnings (want at least %d, with the cause):\n%s", n, min, out)
	}
	if strings.Contains(out, dsnPassword) {
		t.Fatalf("a log line shows the DSN's password:\n%s", out)
	}
	t.Logf("%d recovery warnings logged", n)
}

// openLogged opens the journal of pg with a password in its DSN, logging to
// the returned buffer.
func openLogged(t *testing.T, pg *testenv.PostgresDB) (*journal.DB, *logBuffer) {
	t.Helper()
	u, err := url.Parse(pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), dsnPassword)
	logs := &logBuffer{}
	db, err := postgres.Open(context.Background(), u.String(), journal.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, logs
}

// Sessions ended again and again under concurrent load: no call fails, no
// increment is lost or counted twice, no run is started twice.
func TestSessionsTerminatedUnderLoad(t *testing.T) {
	pg := testenv.Postgres(t)
	ctx := context.Background()
	db, logs := openLogged(t, pg)
	const workers, ops = 4, 60
	kick := make(chan struct{}, workers*ops)
	var terminator sync.WaitGroup
	ended := 0
	terminator.Add(1)
	go func() {
		defer terminator.Done()
		for range kick {
			ended += pg.TerminateSessions(t)
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < ops; i++ {
				if err := db.AddUsage(ctx, "client:load", "day:1", 1, 0.25); err != nil {
					t.Errorf("worker %d op %d: add usage: %v", w, i, err)
					return
				}
				if _, err := db.StartRun(ctx, "load", fmt.Sprint("w", w), fmt.Sprint(i)); err != nil {
					t.Errorf("worker %d op %d: start run: %v", w, i, err)
					return
				}
				if _, _, err := db.Enqueue(ctx, journal.Message{Dedupe: fmt.Sprintf("w%d-%d", w, i), Kind: "k"}); err != nil {
					t.Errorf("worker %d op %d: enqueue: %v", w, i, err)
					return
				}
				if i%10 == 9 {
					kick <- struct{}{}
				}
			}
		}(w)
	}
	wg.Wait()
	close(kick)
	terminator.Wait()
	if ended == 0 {
		t.Fatal("no session was ended: the test did not exercise reconnection")
	}
	tokens, usd, err := db.Usage(ctx, "client:load", "day:1")
	if err != nil || tokens != workers*ops || usd != workers*ops*0.25 {
		t.Fatalf("usage = %d tokens %v USD, %v; want %d and %v", tokens, usd, err, workers*ops, workers*ops*0.25)
	}
	runs, err := db.Runs(ctx, journal.RunFilter{Job: "load", Limit: 10 * workers * ops})
	if err != nil || len(runs) != workers*ops {
		t.Fatalf("runs = %d, %v; want %d", len(runs), err, workers*ops)
	}
	if n, err := db.PendingCount(ctx); err != nil || n != workers*ops {
		t.Fatalf("pending = %d, %v; want %d", n, err, workers*ops)
	}
	t.Logf("%d sessions ended during %d operations", ended, 3*workers*ops)
	// Sessions ended under load are met mid-use: the operator sees it.
	logs.check(t, 1)
}

// A leader whose sessions the server ends at every renewal keeps leading:
// its renewals go through on fresh sessions, the standby never takes over,
// and the token never changes.
func TestLeaderKeepsLeaseWhileSessionsEnd(t *testing.T) {
	pg := testenv.Postgres(t)
	const ttl = 1200 * time.Millisecond
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var es []*election.Elector
	for i := 0; i < 2; i++ {
		db, err := postgres.Open(context.Background(), pg.DSN)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		e, err := election.New(db, election.Config{Instance: fmt.Sprint("daemon-", i), TTL: ttl, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.Run(ctx, func(ctx context.Context) { <-ctx.Done() })
		}()
		defer func() { cancel(); <-done }()
		es = append(es, e)
		if i == 0 {
			testenv.WaitFor(t, 3*ttl, "daemon-0 leads", func() bool { return e.Status().Leader })
		}
	}
	first := es[0].Status()
	for i := 0; i < 6; i++ {
		until := es[0].Status().Until
		testenv.WaitFor(t, ttl, "a renewal", func() bool { return es[0].Status().Until.After(until) || !es[0].Status().Leader })
		pg.TerminateSessions(t)
		if s := es[0].Status(); !s.Leader || s.Token != first.Token || s.Elections != 1 || es[1].Status().Leader {
			t.Fatalf("after ending sessions %d times: leader %+v, standby %+v", i+1, s, es[1].Status())
		}
	}
}
