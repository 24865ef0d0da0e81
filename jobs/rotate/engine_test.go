package rotate

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/secrets"
)

// TestRunScenarios covers bootstrap, adoption and the due computation end to
// end against the sandbox, a file store and the journal.
func TestRunScenarios(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		name string
		// setup prepares the key "k" and returns the old platform key ("" for none).
		setup       func(e *env) string
		req         jobs.Request
		wantOutcome string
		wantRotated bool // a new key in the store
	}{
		{name: "bootstrap: no record", setup: func(e *env) string { return "" }, req: jobs.Request{}, wantOutcome: OutcomeBootstrapped, wantRotated: true},
		{name: "adopt a record with key_id, due by age", setup: func(e *env) string { return e.seed("k", 91*day, true).ID }, req: jobs.Request{}, wantOutcome: OutcomeRotated, wantRotated: true},
		{name: "adopt a record without key_id (hidden match)", setup: func(e *env) string { return e.seed("k", 91*day, false).ID }, req: jobs.Request{}, wantOutcome: OutcomeRotated, wantRotated: true},
		{name: "fresh record not due", setup: func(e *env) string { return e.seed("k", 10*day, true).ID }, req: jobs.Request{}, wantOutcome: OutcomeNotDue, wantRotated: false},
		{name: "fresh record forced", setup: func(e *env) string { return e.seed("k", 10*day, true).ID }, req: jobs.Request{Force: true}, wantOutcome: OutcomeRotated, wantRotated: true},
		{name: "record without created_at: platform age (new key, not due)", setup: func(e *env) string {
			k, _ := e.sb.AddKey("legacy-k", "", nil)
			_, err := e.files.Write(context.Background(), secrets.WriteRequest{Target: e.spec("k").Target,
				Record: secrets.Record{APIKey: k.Plaintext, KeyID: k.ID}})
			if err != nil {
				e.t.Fatal(err)
			}
			return k.ID
		}, req: jobs.Request{}, wantOutcome: OutcomeNotDue, wantRotated: false},
		{name: "record without created_at: platform age (old key, due)", setup: func(e *env) string {
			e.sb.SetNow(time.Now().Add(-100 * day))
			k, _ := e.sb.AddKey("legacy-k", "", nil)
			e.sb.SetNow(time.Now())
			_, err := e.files.Write(context.Background(), secrets.WriteRequest{Target: e.spec("k").Target,
				Record: secrets.Record{APIKey: k.Plaintext, KeyID: k.ID}})
			if err != nil {
				e.t.Fatal(err)
			}
			return k.ID
		}, req: jobs.Request{}, wantOutcome: OutcomeRotated, wantRotated: true},
		{name: "dry run changes nothing", setup: func(e *env) string { return e.seed("k", 91*day, true).ID }, req: jobs.Request{DryRun: true}, wantOutcome: OutcomeWouldRotate, wantRotated: false},
		{name: "dry run bootstrap", setup: func(e *env) string { return "" }, req: jobs.Request{DryRun: true}, wantOutcome: OutcomeWouldBootstrap, wantRotated: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			old := tc.setup(e)
			before, hadRecord := e.read("k")
			eng := e.engine(Options{}, e.spec("k"))
			res, reps := e.run(eng, tc.req)
			if len(reps) != 1 || reps[0].Outcome != tc.wantOutcome {
				t.Fatalf("reports %+v, want one with outcome %s", reps, tc.wantOutcome)
			}
			if res.Failed {
				t.Fatalf("result failed: %+v", res)
			}
			after, hasRecord := e.read("k")
			if !tc.wantRotated {
				if hadRecord != hasRecord || (hasRecord && after.Version != before.Version) {
					t.Fatalf("store changed: %v -> %v", before, after)
				}
				if old != "" && e.deleted(old) {
					t.Fatal("old key deleted although nothing rotated")
				}
				if tc.req.DryRun && len(e.rotations("k")) != 0 {
					t.Fatal("dry run journaled a rotation")
				}
				e.checkNoLeak()
				return
			}
			v := e.checkSettled("k")
			if v.RotationID == "" || v.KeyID == old || v.RotationID != reps[0].RotationID {
				t.Fatalf("record %v, report %+v", v, reps[0])
			}
			if old != "" && !e.deleted(old) {
				t.Fatal("old key not revoked")
			}
			if old == "" {
				for _, ev := range e.sb.Events() {
					if ev.Kind == sandbox.EventDelete {
						t.Fatalf("bootstrap deleted a key: %+v", ev)
					}
				}
			}
			rots := e.rotations("k")
			if len(rots) != 1 || rots[0].Status != journal.StatusDone || rots[0].OldKeyID != old || rots[0].NewKeyID != v.KeyID {
				t.Fatalf("journal %+v", rots)
			}
			if !strings.HasPrefix(v.KeyName, "k-"+time.Now().UTC().Format("20060102")+"-"+v.RotationID[:8]) {
				t.Fatalf("new key name %q is not deterministic", v.KeyName)
			}
			k, _ := e.sb.Key(v.KeyID)
			wantExp := time.Now().UTC().Add(120 * day).Format("2006-01-02")
			if k.Expiration == nil || k.Expiration.String() != wantExp {
				t.Fatalf("expiration %v, want %s", k.Expiration, wantExp)
			}
			if n, _ := e.notes.counts(); n != 1 {
				t.Fatalf("%d rotated notifications, want 1", n)
			}
			e.checkNoLeak()
		})
	}
}

// TestFailures covers failures before and after publish: the old key must
// stay untouched and valid, no new key may be left behind, and a rotation that
// failed after publish resumes on the next run.
func TestFailures(t *testing.T) {
	day := 24 * time.Hour
	type fault struct {
		route  string
		status int
		times  int // 0: until cleared
	}
	type failureCase struct {
		name   string
		faults []fault
		// storeOutage makes every store write fail as unavailable.
		storeOutage bool
		// storeOutageWrites fails that many writes only.
		storeOutageWrites int
		wantOutcome       string
		wantInFlight      bool // stays journaled; a second run (faults cleared) finishes it
		wantPublished     bool
	}
	tests := []failureCase{
		{name: "verification never succeeds", faults: []fault{{route: "GET /v1/models", status: 401, times: 0}}, wantOutcome: OutcomeFailed},
		{name: "verification succeeds after warm-up", faults: []fault{{route: "GET /v1/models", status: 401, times: 2}}, wantOutcome: OutcomeRotated, wantPublished: true},
		{name: "store unavailable at publish", storeOutage: true, wantOutcome: OutcomeFailed},
		{name: "store unavailable briefly at publish", storeOutageWrites: 2, wantOutcome: OutcomeRotated, wantPublished: true},
	}
	for _, route := range []string{"POST /v1/admin/api-keys", "GET /v1/admin/api-keys", "GET /v1/models", "DELETE /v1/admin/api-keys/{key_id}", "GET /v1/admin/workspaces"} {
		for _, status := range []int{429, 500, 503} {
			tests = append(tests, failureCase{name: fmt.Sprintf("transient %d on %s", status, route), faults: []fault{{route: route, status: status, times: 2}},
				wantOutcome: OutcomeRotated, wantPublished: true})
			want := OutcomeFailed
			inflight, published := false, false
			switch route {
			case "DELETE /v1/admin/api-keys/{key_id}":
				// Fails at revoke, after publish: stays in flight; abort of
				// nothing else is needed.
				inflight, published = true, true
			case "GET /v1/models":
				// verify fails before publish: clean abort.
			case "GET /v1/admin/api-keys":
				// The duplicate check after create fails: abort, whose own
				// listing fails too, so the abort stays in flight.
				inflight = true
			}
			tests = append(tests, failureCase{name: fmt.Sprintf("persistent %d on %s", status, route), faults: []fault{{route: route, status: status, times: 0}},
				wantOutcome: want, wantInFlight: inflight, wantPublished: published})
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			fs := &flakyStore{Store: e.files}
			e.store = fs
			old := e.seed("k", 91*day, true)
			before, _ := e.read("k")
			eng := e.engine(Options{}, e.spec("k"))
			for _, f := range tc.faults {
				e.sb.InjectFault(sandbox.Fault{Route: f.route, Status: f.status, Times: f.times})
			}
			if tc.storeOutage {
				fs.failWrites.Store(-1)
			}
			fs.failWrites.Add(int32(tc.storeOutageWrites))
			res, reps := e.run(eng, jobs.Request{})
			if len(reps) != 1 || reps[0].Outcome != tc.wantOutcome || reps[0].InFlight != tc.wantInFlight {
				t.Fatalf("reports %+v, want outcome %s in flight %v", reps, tc.wantOutcome, tc.wantInFlight)
			}
			if res.Failed != (tc.wantOutcome == OutcomeFailed) {
				t.Fatalf("Result.Failed = %v", res.Failed)
			}
			after, _ := e.read("k")
			if tc.wantPublished {
				if after.KeyID == old.ID || !e.sb.Accepts(after.APIKey) {
					t.Fatalf("store %v: want the new, valid key", after)
				}
			} else {
				// Old key untouched and valid, store untouched.
				if after.Version != before.Version || after.KeyID != old.ID || !e.sb.Accepts(old.Plaintext) {
					t.Fatalf("store %v (was %v), old key accepted %v", after, before, e.sb.Accepts(old.Plaintext))
				}
			}
			if tc.wantOutcome == OutcomeFailed && !tc.wantInFlight {
				if live := e.liveManaged("k"); len(live) != 0 {
					t.Fatalf("a failed rotation left new keys alive: %+v", live)
				}
				if _, n := e.notes.counts(); n != 1 {
					t.Fatalf("%d failure notifications, want 1", n)
				}
				rots := e.rotations("k")
				if len(rots) != 1 || rots[0].Status != journal.StatusFailed || rots[0].Error == "" {
					t.Fatalf("journal %+v", rots)
				}
			}
			if tc.wantOutcome == OutcomeRotated {
				e.checkSettled("k")
				if !e.deleted(old.ID) {
					t.Fatal("old key not revoked")
				}
			}
			if tc.wantInFlight {
				// The fault clears; the next run resumes and finishes.
				e.sb.ClearFaults()
				_, reps2 := e.run(eng, jobs.Request{})
				if len(reps2) != 1 || !reps2[0].Resumed || (reps2[0].Outcome != OutcomeRotated && reps2[0].Outcome != OutcomeFailed) {
					t.Fatalf("second run %+v", reps2)
				}
				if reps2[0].Outcome == OutcomeRotated {
					e.checkSettled("k")
					if !e.deleted(old.ID) {
						t.Fatal("old key not revoked after resume")
					}
				} else if live := e.liveManaged("k"); len(live) != 0 || !e.sb.Accepts(old.Plaintext) {
					t.Fatalf("aborted rotation left keys %+v / old key invalid", live)
				}
			}
			e.checkNoLeak()
		})
	}
}

// TestStoreUnreadableAtPublish: writes and reads fail, so nobody can tell
// whether the write landed: nothing is deleted, the rotation stays in flight
// and the next run settles it from what the store shows.
func TestStoreUnreadableAtPublish(t *testing.T) {
	e := newEnv(t)
	fs := &flakyStore{Store: e.files}
	e.store = fs
	old := e.seed("k", 91*24*time.Hour, true)
	eng := e.engine(Options{}, e.spec("k"))
	fs.failWrites.Store(-1)
	// Reads fail from the first write on (the due check read works).
	fs.failReadsAfterWrite.Store(true)
	_, reps := e.run(eng, jobs.Request{})
	if len(reps) != 1 || reps[0].Outcome != OutcomeFailed || !reps[0].InFlight {
		t.Fatalf("reports %+v", reps)
	}
	if !e.sb.Accepts(old.Plaintext) {
		t.Fatal("old key no longer valid")
	}
	fs.failWrites.Store(0)
	fs.failReadsAfterWrite.Store(false)
	_, reps = e.run(eng, jobs.Request{})
	if len(reps) != 1 || reps[0].Outcome != OutcomeRotated || !reps[0].Resumed {
		t.Fatalf("second run %+v", reps)
	}
	e.checkSettled("k")
	if !e.deleted(old.ID) {
		t.Fatal("old key not revoked")
	}
	e.checkNoLeak()
}
