package journaltest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

func testOutbox(t *testing.T, h *harness) {
	ctx := context.Background()
	db, clk := h.journal(t), h.clk
	enq := []struct {
		m           journal.Message
		wantCreated bool
	}{
		{journal.Message{Dedupe: "digest:2026-11-27", Kind: "audit_digest", Severity: "info", Payload: []byte(`{"a":1}`)}, true},
		{journal.Message{Dedupe: "digest:2026-11-27", Kind: "audit_digest", Severity: "info", Payload: []byte(`{"a":2}`)}, false},
		{journal.Message{Kind: "job_failed", Severity: "critical", Channel: "#oncall", Payload: []byte(`{"b":1}`)}, true},
		{journal.Message{Kind: "job_failed", Severity: "critical", Payload: []byte(`{"b":2}`)}, true}, // no dedupe: never merged
		{journal.Message{Dedupe: "later", Kind: "x", NextAttempt: T0.Add(time.Hour)}, true},
	}
	var idList []int64
	for i, e := range enq {
		id, created, err := db.Enqueue(ctx, e.m)
		if err != nil || created != e.wantCreated {
			t.Fatalf("enqueue %d: id=%d created=%v err=%v", i, id, created, err)
		}
		idList = append(idList, id)
	}
	if idList[0] != idList[1] {
		t.Fatalf("duplicate dedupe got id %d, want %d", idList[1], idList[0])
	}
	if m, _ := db.Message(ctx, idList[0]); string(m.Payload) != `{"a":1}` || m.Status != journal.MsgPending || !m.CreatedAt.Equal(T0) {
		t.Fatalf("first message = %+v", m)
	}
	if n, _ := db.PendingCount(ctx); n != 4 {
		t.Fatalf("pending = %d, want 4", n)
	}
	due, err := db.Due(ctx, clk.Now(), 0)
	if err != nil || len(due) != 3 {
		t.Fatalf("due = %d %v, want 3", len(due), err)
	}
	// Claim 2; a second claim at the same instant gets only the third.
	c1, err := db.Claim(ctx, clk.Now(), time.Minute, 2)
	if err != nil || len(c1) != 2 || c1[0].Attempts != 1 {
		t.Fatalf("claim 1 = %+v %v", c1, err)
	}
	c2, err := db.Claim(ctx, clk.Now(), time.Minute, 10)
	if err != nil || len(c2) != 1 || c2[0].ID == c1[0].ID || c2[0].ID == c1[1].ID {
		t.Fatalf("claim 2 = %+v %v", c2, err)
	}
	if c3, _ := db.Claim(ctx, clk.Now(), time.Minute, 10); len(c3) != 0 {
		t.Fatalf("claim 3 = %+v, want none", c3)
	}
	// Outcomes.
	if err := db.MarkSent(ctx, c1[0].ID, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkRetry(ctx, c1[1].ID, clk.Now().Add(10*time.Second), "slack: 500"); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkDead(ctx, c2[0].ID, "channel_not_found"); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkRetry(ctx, c2[0].ID, clk.Now(), "x"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("retry of dead message = %v", err)
	}
	if err := db.MarkSent(ctx, 999, clk.Now()); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("MarkSent(999) = %v", err)
	}
	if n, _ := db.PendingCount(ctx); n != 2 {
		t.Fatalf("pending = %d, want 2", n)
	}
	next, ok, err := db.NextDue(ctx)
	if err != nil || !ok || !next.Equal(T0.Add(10*time.Second)) {
		t.Fatalf("NextDue = %v %v %v", next, ok, err)
	}
	// The lease of an abandoned claim expires: claimed but never marked.
	clk.Add(10 * time.Second)
	c4, _ := db.Claim(ctx, clk.Now(), time.Minute, 10)
	if len(c4) != 1 || c4[0].ID != c1[1].ID || c4[0].Attempts != 2 || c4[0].LastError != "slack: 500" || c4[0].InDoubt {
		t.Fatalf("claim after retry = %+v", c4)
	}
	clk.Add(time.Minute)
	c5, _ := db.Claim(ctx, clk.Now(), time.Minute, 10)
	if len(c5) != 1 || c5[0].ID != c1[1].ID || c5[0].Attempts != 3 || !c5[0].InDoubt {
		t.Fatalf("claim after lease expiry = %+v, want in doubt", c5)
	}
	// A timeout keeps the doubt; a definite failure clears it.
	if err := db.MarkUncertain(ctx, c5[0].ID, clk.Now(), "timeout"); err != nil {
		t.Fatal(err)
	}
	if c6, _ := db.Claim(ctx, clk.Now(), time.Minute, 10); len(c6) != 1 || !c6[0].InDoubt || c6[0].LastError != "timeout" {
		t.Fatalf("claim after uncertain = %+v, want in doubt", c6)
	}
	if err := db.MarkRetry(ctx, c5[0].ID, clk.Now(), "503"); err != nil {
		t.Fatal(err)
	}
	if c7, _ := db.Claim(ctx, clk.Now(), time.Minute, 10); len(c7) != 1 || c7[0].InDoubt {
		t.Fatalf("claim after retry = %+v, want not in doubt", c7)
	}
	// A dead message requeued becomes due again.
	if err := db.Requeue(ctx, c2[0].ID); err != nil {
		t.Fatal(err)
	}
	if m, _ := db.Message(ctx, c2[0].ID); m.Status != journal.MsgPending {
		t.Fatalf("requeued = %+v", m)
	}
	if err := db.Requeue(ctx, c1[0].ID); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("requeue of sent = %v", err)
	}
	if sent, _ := db.Messages(ctx, journal.MsgSent, 0); len(sent) != 1 || sent[0].SentAt.IsZero() {
		t.Fatalf("sent = %+v", sent)
	}
	if all, _ := db.Messages(ctx, "", 0); len(all) != 4 {
		t.Fatalf("all = %d", len(all))
	}
	if _, err := db.Claim(ctx, clk.Now(), 0, 1); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("Claim(lease 0) = %v", err)
	}
}

// Two handles (as two processes would) claiming concurrently never get the
// same message.
func testOutboxClaimRace(t *testing.T, h *harness) {
	ctx := context.Background()
	a, b := h.realTime(t), h.realTime(t)
	const n = 60
	for i := 0; i < n; i++ {
		if _, _, err := a.Enqueue(ctx, journal.Message{Kind: "k", Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	got := map[int64]int{}
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		db := a
		if w%2 == 1 {
			db = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ms, err := db.Claim(ctx, time.Now(), time.Hour, 3)
				if err != nil {
					t.Errorf("claim: %v", err)
					return
				}
				if len(ms) == 0 {
					return
				}
				for _, m := range ms {
					mu.Lock()
					got[m.ID]++
					mu.Unlock()
					if err := db.MarkSent(ctx, m.ID, time.Now()); err != nil {
						t.Errorf("mark sent: %v", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if len(got) != n {
		t.Fatalf("claimed %d distinct messages, want %d", len(got), n)
	}
	for id, c := range got {
		if c != 1 {
			t.Fatalf("message %d claimed %d times", id, c)
		}
	}
}

func testPrune(t *testing.T, h *harness) {
	ctx := context.Background()
	db, clk := h.journal(t), h.clk
	old := clk.Now()
	// Old history.
	rid, _ := db.StartRun(ctx, "audit", "cron", "")
	db.FinishRun(ctx, rid, journal.RunOK, "", "")
	running, _ := db.StartRun(ctx, "rotate", "cron", "")
	sentID, _, _ := db.Enqueue(ctx, journal.Message{Dedupe: "s", Kind: "k"})
	db.MarkSent(ctx, sentID, old)
	pendID, _, _ := db.Enqueue(ctx, journal.Message{Dedupe: "p", Kind: "k"})
	db.BeginRotation(ctx, journal.Rotation{ID: "a1", KeyName: "a"})
	db.UpdateRotation(ctx, journal.Rotation{ID: "a1", Status: journal.StatusDone, Step: "done"})
	clk.Add(time.Hour)
	db.BeginRotation(ctx, journal.Rotation{ID: "a2", KeyName: "a"})
	db.UpdateRotation(ctx, journal.Rotation{ID: "a2", Status: journal.StatusDone, Step: "done"}) // latest done of a: kept
	db.BeginRotation(ctx, journal.Rotation{ID: "b1", KeyName: "b"})                              // in flight: kept
	d, _ := db.SyncFindings(ctx, "audit", []journal.Finding{{ID: "x", Kind: "x"}, {ID: "y", Kind: "y"}}, clk.Now())
	db.MarkFindingsReported(ctx, "audit", d, clk.Now())
	d, _ = db.SyncFindings(ctx, "audit", []journal.Finding{{ID: "y", Kind: "y"}}, clk.Now())
	db.MarkFindingsReported(ctx, "audit", d, clk.Now())
	db.MarkOnce(ctx, "m1")
	db.AddUsage(ctx, "s", "day:1", 1, 1)
	db.AcquireLease(ctx, "l", "o", time.Minute)
	settled, _ := db.RequestRun(ctx, "audit", "uid:0", "", "standby")
	db.TakeRunRequest(ctx, settled, "leader")
	db.SettleRunRequest(ctx, settled, rid, "")
	queued, _ := db.RequestRun(ctx, "budget", "uid:0", "", "standby") // never taken: kept
	if _, err := db.LeaseBudget(ctx, journal.LeaseRequest{Owner: "gw", Subject: "s", Window: "day:1", Limit: journal.Amounts{Tokens: 10},
		Want: journal.Amounts{Tokens: 5}, TTL: time.Minute}); err != nil { // a crashed instance's grant
		t.Fatal(err)
	}
	clk.Add(60 * 24 * time.Hour)
	// Recent history.
	newRun, _ := db.StartRun(ctx, "audit", "cron", "")
	db.FinishRun(ctx, newRun, journal.RunOK, "", "")
	db.MarkOnce(ctx, "m2")

	res, err := db.Prune(ctx, journal.PruneOptions{Before: clk.Now().Add(-45 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	want := journal.PruneResult{Runs: 1, Messages: 1, Rotations: 1, Findings: 1, Marks: 1, Usage: 1, Leases: 1, Requests: 1, Grants: 1}
	if res != want {
		t.Fatalf("prune = %+v, want %+v", res, want)
	}
	checks := []struct {
		name string
		err  error
	}{
		{name: "running run kept", err: func() error { _, err := db.GetRun(ctx, running); return err }()},
		{name: "recent run kept", err: func() error { _, err := db.GetRun(ctx, newRun); return err }()},
		{name: "pending message kept", err: func() error { _, err := db.Message(ctx, pendID); return err }()},
		{name: "last done rotation kept", err: func() error { _, err := db.Rotation(ctx, "a2"); return err }()},
		{name: "in-flight rotation kept", err: func() error { _, err := db.Rotation(ctx, "b1"); return err }()},
		{name: "queued run request kept", err: func() error { _, err := db.GetRunRequest(ctx, queued); return err }()},
	}
	for _, c := range checks {
		if c.err != nil {
			t.Errorf("%s: %v", c.name, c.err)
		}
	}
	if _, err := db.Rotation(ctx, "a1"); !errors.Is(err, journal.ErrNotFound) {
		t.Errorf("old rotation a1 not pruned: %v", err)
	}
	if open, _ := db.OpenFindings(ctx, "audit"); len(open) != 1 || open[0].ID != "y" {
		t.Errorf("open findings after prune = %+v", open)
	}
	if first, _ := db.MarkOnce(ctx, "m2"); first {
		t.Errorf("recent mark pruned")
	}
	if _, err := db.Prune(ctx, journal.PruneOptions{}); !errors.Is(err, journal.ErrInvalid) {
		t.Errorf("Prune(zero) = %v", err)
	}
}
