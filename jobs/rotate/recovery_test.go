package rotate

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/secrets"
)

// TestRecovery journals a rotation as a crash at each step would have left
// it (with the matching platform and store state), then runs the engine: it
// must resume and settle with I1–I3 holding.
func TestRecovery(t *testing.T) {
	const id = "0123456789abcdef"
	name := "k-" + time.Now().UTC().Format("20060102") + "-01234567"
	type world struct {
		old     sandbox.KeyState // the key in the store before the rotation
		created *sandbox.KeyState
	}
	// publishNew writes the created key to the store as publish would have.
	publishNew := func(e *env, w *world) secrets.Version {
		v, _ := e.read("k")
		ver, err := e.files.Write(context.Background(), secrets.WriteRequest{Target: e.spec("k").Target, IfVersion: v.Version, Token: id,
			Record: secrets.Record{APIKey: w.created.Plaintext, KeyID: w.created.ID, KeyName: name, CreatedAt: w.created.CreatedAt, RotationID: id}})
		if err != nil {
			e.t.Fatal(err)
		}
		return ver
	}
	create := func(e *env, w *world) {
		k, err := e.sb.AddKey(name, "", nil)
		if err != nil {
			e.t.Fatal(err)
		}
		w.created = &k
	}
	tests := []struct {
		name string
		// prepare sets the platform and store up and returns the journaled rotation.
		prepare       func(e *env, w *world, r *journal.Rotation)
		bootstrap     bool
		wantOutcome   string
		wantKeepsNew  bool // the created key ends up in the store (publish had happened)
		wantAttempts  int
		wantMinElapse time.Duration
		// testRevokes: the test itself deletes the old key, so I3 is not the engine's to show.
		testRevokes bool
	}{
		{name: "begin, nothing created", prepare: func(e *env, w *world, r *journal.Rotation) {}, wantOutcome: OutcomeRotated, wantAttempts: 1},
		{name: "begin, key created but its id never journaled", prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
		}, wantOutcome: OutcomeRotated, wantAttempts: 1},
		{name: "create journaled", prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID = journal.StepCreate, w.created.ID
		}, wantOutcome: OutcomeRotated, wantAttempts: 1},
		{name: "create journaled, a duplicate exists too", prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID = journal.StepCreate, w.created.ID
			if _, err := e.sb.AddKey(name, "", nil); err != nil {
				e.t.Fatal(err)
			}
		}, wantOutcome: OutcomeRotated, wantAttempts: 1},
		{name: "verify journaled", prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID = journal.StepVerify, w.created.ID
		}, wantOutcome: OutcomeRotated, wantAttempts: 1},
		{name: "verify journaled but the store already holds the new key", prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID = journal.StepVerify, w.created.ID
			publishNew(e, w)
		}, wantOutcome: OutcomeRotated, wantKeepsNew: true},
		{name: "publish journaled, propagation deadline ahead", prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID = journal.StepPublish, w.created.ID
			r.StoreVersion = string(publishNew(e, w))
			r.PropagateUntil = time.Now().Add(400 * time.Millisecond)
		}, wantOutcome: OutcomeRotated, wantKeepsNew: true, wantMinElapse: 300 * time.Millisecond},
		{name: "publish journaled, deadline passed", prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID = journal.StepPublish, w.created.ID
			r.StoreVersion = string(publishNew(e, w))
			r.PropagateUntil = time.Now().Add(-time.Minute)
		}, wantOutcome: OutcomeRotated, wantKeepsNew: true},
		{name: "reverify journaled", prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID = journal.StepReverify, w.created.ID
			r.StoreVersion = string(publishNew(e, w))
		}, wantOutcome: OutcomeRotated, wantKeepsNew: true},
		{name: "reverify journaled, old key already deleted", prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID = journal.StepReverify, w.created.ID
			r.StoreVersion = string(publishNew(e, w))
			if err := e.client.DeleteKey(context.Background(), w.old.ID); err != nil {
				e.t.Fatal(err)
			}
		}, wantOutcome: OutcomeRotated, wantKeepsNew: true, testRevokes: true},
		{name: "abort journaled", prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID, r.Error = journal.StepAbort, w.created.ID, "verify: unauthorized"
		}, wantOutcome: OutcomeFailed},
		{name: "bootstrap begun", bootstrap: true, prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID = journal.StepCreate, w.created.ID
		}, wantOutcome: OutcomeBootstrapped, wantAttempts: 1},
		{name: "bootstrap published", bootstrap: true, prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID = journal.StepPublish, w.created.ID
			r.StoreVersion = string(publishNew(e, w))
		}, wantOutcome: OutcomeBootstrapped, wantKeepsNew: true},
		{name: "store changed by someone else before publish", prepare: func(e *env, w *world, r *journal.Rotation) {
			create(e, w)
			r.Step, r.NewKeyID = journal.StepVerify, w.created.ID
			other, _ := e.sb.AddKey("someone-else", "", nil)
			if _, err := e.files.Write(context.Background(), secrets.WriteRequest{Target: e.spec("k").Target, IfVersion: "1",
				Record: secrets.Record{APIKey: other.Plaintext, KeyID: other.ID, CreatedAt: time.Now()}}); err != nil {
				e.t.Fatal(err)
			}
		}, wantOutcome: OutcomeFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			w := &world{}
			if !tc.bootstrap {
				w.old = e.seed("k", time.Hour, true)
			}
			r := journal.Rotation{ID: id, KeyName: "k", Step: journal.StepBegin, Status: journal.StatusInFlight, OldKeyID: w.old.ID, NewKeyName: name}
			if err := e.db.BeginRotation(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			tc.prepare(e, w, &r)
			if err := e.db.UpdateRotation(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			storeBefore, _ := e.read("k")
			spec := e.spec("k")
			spec.PropagationWait = 50 * time.Millisecond
			eng := e.engine(Options{}, spec)
			start := time.Now()
			_, reps := e.run(eng, jobs.Request{Force: true})
			elapsed := time.Since(start)
			if len(reps) != 1 || reps[0].Outcome != tc.wantOutcome || !reps[0].Resumed || reps[0].RotationID != id {
				t.Fatalf("reports %+v, want one resumed %s", reps, tc.wantOutcome)
			}
			if elapsed < tc.wantMinElapse {
				t.Fatalf("took %s, want at least the remaining wait %s", elapsed, tc.wantMinElapse)
			}
			got, err := e.db.Rotation(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantOutcome == OutcomeFailed {
				after, _ := e.read("k")
				if got.Status != journal.StatusFailed || after.Version != storeBefore.Version {
					t.Fatalf("journal %+v, store %v (was %v)", got, after, storeBefore)
				}
				if live := e.liveManaged("k"); len(live) != 0 {
					t.Fatalf("new keys left alive: %+v", live)
				}
				if !e.sb.Accepts(after.APIKey) {
					t.Fatal("the store's key is not valid")
				}
				e.checkNoLeak()
				return
			}
			v := e.checkSettled("k")
			if got.Status != journal.StatusDone || got.Attempts != tc.wantAttempts || got.NewKeyID != v.KeyID {
				t.Fatalf("journal %+v, store %v", got, v)
			}
			if tc.wantKeepsNew != (w.created != nil && v.KeyID == w.created.ID) {
				t.Fatalf("store holds %s, created %s, want kept %v", v.KeyID, w.created.ID, tc.wantKeepsNew)
			}
			if w.created != nil && !tc.wantKeepsNew && !e.deleted(w.created.ID) {
				t.Fatal("the unpublished key was not deleted")
			}
			if !tc.bootstrap && !e.deleted(w.old.ID) {
				t.Fatal("old key not revoked")
			}
			if !tc.testRevokes {
				checkRevokeLast(t, e)
			}
			e.checkNoLeak()
		})
	}
}

// checkRevokeLast asserts I3 from the sandbox events: every delete of a key
// that was in the store is preceded by a use of its successor after it was
// created.
func checkRevokeLast(t *testing.T, e *env) {
	t.Helper()
	v, _ := e.read("k")
	var used, deleted int64
	for _, ev := range e.sb.Events() {
		if ev.Kind == sandbox.EventUse && ev.KeyID == v.KeyID && used == 0 {
			used = ev.Seq
		}
		if ev.Kind == sandbox.EventDelete && len(ev.KeyName) > 7 && ev.KeyName[:7] == "legacy-" {
			deleted = ev.Seq
		}
	}
	if deleted != 0 && (used == 0 || used > deleted) {
		t.Fatalf("old key deleted (event %d) before the new key was used (event %d)", deleted, used)
	}
}

// TestTwoEngines shares one journal between two engines (as two processes
// would) and runs them, and a second run of the first, on the same keys at
// once: no key ever has two rotations in flight, and every key settles.
func TestTwoEngines(t *testing.T) {
	e := newEnv(t)
	db2, err := journal.Open(context.Background(), e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	var specs []KeySpec
	for i := 0; i < 6; i++ {
		n := "k" + strconv.Itoa(i)
		e.seed(n, time.Hour, true)
		s := e.spec(n)
		s.PropagationWait = 100 * time.Millisecond
		specs = append(specs, s)
	}
	a := e.engine(Options{Concurrency: 2}, specs...)
	b, err := New(Deps{Platform: e.client, Stores: map[string]secrets.Store{"file": e.files}, Journal: db2},
		Options{Concurrency: 2, VerifyTimeout: time.Second, MinBackoff: 5 * time.Millisecond}, specs)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([][]KeyReport, 3)
	// Two runs of one engine (claims per key) and one of another process's
	// engine (journal lease, unique in-flight index), all at once.
	for i, eng := range []*Engine{a, b, a} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := eng.Run(context.Background(), jobs.Request{Force: true})
			if err != nil {
				t.Error(err)
				return
			}
			results[i] = res.Details.([]KeyReport)
		}()
	}
	wg.Wait()
	for i := range specs {
		n := specs[i].Name
		e.checkSettled(n)
		rots := e.rotations(n)
		for x := range rots {
			for y := range rots {
				if x != y && rots[x].StartedAt.Before(rots[y].FinishedAt) && rots[y].StartedAt.Before(rots[x].FinishedAt) {
					t.Fatalf("%s: rotations %s and %s overlapped", n, rots[x].ID, rots[y].ID)
				}
			}
			if rots[x].Status != journal.StatusDone {
				t.Fatalf("%s: rotation %+v not done", n, rots[x])
			}
		}
	}
	for _, reps := range results {
		for _, r := range reps {
			if r.Outcome == OutcomeFailed || r.Outcome == OutcomeInterrupted {
				t.Fatalf("report %+v", r)
			}
		}
	}
}

// TestCancelDuringPropagation stops a run while rotations are parked: they
// stay journaled and the next run finishes them without waiting again in full.
func TestCancelDuringPropagation(t *testing.T) {
	e := newEnv(t)
	spec := e.spec("k")
	spec.PropagationWait = 500 * time.Millisecond
	old := e.seed("k", time.Hour, true)
	eng := e.engine(Options{}, spec)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		if testenv.Until(ctx, func() bool {
			rots, _ := e.db.InFlightRotations(context.Background())
			return len(rots) == 1 && rots[0].Step == journal.StepPublish
		}) {
			cancel()
		}
	}()
	res, err := eng.Run(ctx, jobs.Request{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	reps := res.Details.([]KeyReport)
	if !res.Failed || reps[0].Outcome != OutcomeInterrupted || !reps[0].InFlight {
		t.Fatalf("result %+v", res)
	}
	if e.deleted(old.ID) || !e.sb.Accepts(old.Plaintext) {
		t.Fatal("old key revoked by an interrupted rotation")
	}
	_, reps = e.run(eng, jobs.Request{})
	if reps[0].Outcome != OutcomeRotated || !reps[0].Resumed {
		t.Fatalf("second run %+v", reps)
	}
	e.checkSettled("k")
	if !e.deleted(old.ID) {
		t.Fatal("old key not revoked")
	}
}

// TestLeases: a lease held by a live process makes the key busy; one left by
// a dead process of this host is taken over.
func TestLeases(t *testing.T) {
	host, _ := os.Hostname()
	tests := []struct {
		name  string
		owner string
		want  string
	}{
		{name: "live owner (pid 1)", owner: "mrbacd:" + host + ":1:abcd", want: OutcomeBusy},
		{name: "dead owner", owner: "mrbacd:" + host + ":999999999:abcd", want: OutcomeRotated},
		{name: "owner on another host", owner: "mrbacd:elsewhere.example:999999999:abcd", want: OutcomeBusy},
		{name: "foreign owner format", owner: "cron-job", want: OutcomeBusy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.seed("k", time.Hour, true)
			ok, err := e.db.AcquireLease(context.Background(), LeaseName, tc.owner, time.Minute)
			if err != nil || !ok {
				t.Fatal(ok, err)
			}
			_, reps := e.run(e.engine(Options{}, e.spec("k")), jobs.Request{Force: true})
			if reps[0].Outcome != tc.want {
				t.Fatalf("report %+v, want %s", reps[0], tc.want)
			}
		})
	}
}

// TestRecoveryRefusesEmptyName: a journaled rotation without a new key name
// (a corrupt or hand-edited journal) must not make recovery list every key
// by the empty name and delete them.
func TestRecoveryRefusesEmptyName(t *testing.T) {
	e := newEnv(t)
	old := e.seed("k", time.Hour, true)
	bystander, _ := e.sb.AddKey("someone-elses-key", "", nil)
	r := journal.Rotation{ID: "feedfacefeedface", KeyName: "k", Step: journal.StepCreate, Status: journal.StatusInFlight, OldKeyID: old.ID}
	if err := e.db.BeginRotation(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	_, reps := e.run(e.engine(Options{}, e.spec("k")), jobs.Request{})
	if len(reps) != 1 || reps[0].Outcome != OutcomeFailed || !reps[0].InFlight {
		t.Fatalf("reports %+v", reps)
	}
	for _, k := range []sandbox.KeyState{old, bystander} {
		if e.deleted(k.ID) {
			t.Fatalf("key %s (%s) deleted", k.ID, k.Name)
		}
	}
}

// TestPlanAndResume: Plan reports an in-flight rotation as "resume" and a
// due key as due without touching anything; Resume finishes the in-flight
// rotation only.
func TestPlanAndResume(t *testing.T) {
	e := newEnv(t)
	a := e.seed("a", time.Hour, true)
	b := e.seed("b", 100*24*time.Hour, true)
	name := "a-" + time.Now().UTC().Format("20060102") + "-aaaaaaaa"
	r := journal.Rotation{ID: "aaaaaaaaaaaaaaaa", KeyName: "a", Step: journal.StepBegin, Status: journal.StatusInFlight, OldKeyID: a.ID, NewKeyName: name}
	if err := e.db.BeginRotation(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	eng := e.engine(Options{}, e.spec("a"), e.spec("b"))
	before := len(e.sb.Events())
	items, err := eng.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || items[0].Action != ActionResume || items[0].InFlight == nil || items[0].InFlight.RotationID != r.ID ||
		items[1].Action != ActionRotate || !items[1].Due || items[1].CurrentKeyID != b.ID {
		t.Fatalf("plan %+v", items)
	}
	if len(e.sb.Events()) != before {
		t.Fatal("Plan changed the platform")
	}
	res, err := eng.Resume(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	reps := res.Details.([]KeyReport)
	if len(reps) != 1 || reps[0].Key != "a" || reps[0].Outcome != OutcomeRotated {
		t.Fatalf("resume %+v", reps)
	}
	e.checkSettled("a")
	if e.deleted(b.ID) || len(e.rotations("b")) != 0 {
		t.Fatal("Resume rotated a key that had no rotation in flight")
	}
}

// TestResumeAtReverifyAfterRollback: a rotation journaled at reverify (a
// revoke that failed) whose store was rolled back to the old key since must
// re-verify on resume, find the store moved, and leave the old key alone (I3).
func TestResumeAtReverifyAfterRollback(t *testing.T) {
	e := newEnv(t)
	old := e.seed("k", time.Hour, true)
	name := "k-" + time.Now().UTC().Format("20060102") + "-0badc0de"
	created, err := e.sb.AddKey(name, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The store still (or again) holds the old key: an operator rolled back.
	r := journal.Rotation{ID: "0badc0de0badc0de", KeyName: "k", Step: journal.StepBegin, Status: journal.StatusInFlight,
		OldKeyID: old.ID, NewKeyName: name}
	if err := e.db.BeginRotation(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	r.Step, r.NewKeyID, r.StoreVersion, r.Error = journal.StepReverify, created.ID, "2", "revoke old key: platform unavailable"
	if err := e.db.UpdateRotation(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	_, reps := e.run(e.engine(Options{}, e.spec("k")), jobs.Request{})
	if len(reps) != 1 || reps[0].Outcome != OutcomeFailed || !reps[0].Resumed {
		t.Fatalf("reports %+v, want one resumed failure", reps)
	}
	if e.deleted(old.ID) || !e.sb.Accepts(old.Plaintext) {
		t.Fatal("the old key, still in the store, was revoked")
	}
	if v, _ := e.read("k"); v.KeyID != old.ID {
		t.Fatalf("store holds %s, want the old key %s", v.KeyID, old.ID)
	}
	e.checkNoLeak()
}
