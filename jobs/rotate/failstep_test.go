package rotate

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// TestFailureEventStep checks that a failure's Event names the step that
// failed, not where the rotation ended (an aborted rotation ends at "abort").
func TestFailureEventStep(t *testing.T) {
	tests := []struct {
		name          string
		route         string // persistent 500 on it; "" for none
		storeOutage   bool
		wantStep      journal.Step // Event.Step
		wantFailed    journal.Step // Event.FailedStep
		wantInFlight  bool
		wantPublished bool
		wantStoreDown bool
	}{
		{name: "create refused", route: "POST /v1/admin/api-keys", wantStep: journal.StepAbort, wantFailed: journal.StepCreate},
		{name: "verify never succeeds", route: "GET /v1/models", wantStep: journal.StepAbort, wantFailed: journal.StepVerify},
		{name: "duplicate check and abort fail", route: "GET /v1/admin/api-keys", wantStep: journal.StepAbort, wantFailed: journal.StepCreate, wantInFlight: true},
		{name: "store unavailable at publish", storeOutage: true, wantStep: journal.StepAbort, wantFailed: journal.StepPublish, wantStoreDown: true},
		{name: "revoke refused", route: "DELETE /v1/admin/api-keys/{key_id}", wantStep: journal.StepReverify, wantFailed: journal.StepRevoke, wantInFlight: true, wantPublished: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			fs := &flakyStore{Store: e.files}
			e.store = fs
			e.seed("k", 91*24*time.Hour, true)
			eng := e.engine(Options{}, e.spec("k"))
			if tc.route != "" {
				e.sb.InjectFault(sandbox.Fault{Route: tc.route, Status: 500})
			}
			if tc.storeOutage {
				fs.failWrites.Store(-1)
			}
			e.run(eng, jobs.Request{})
			e.notes.mu.Lock()
			evs := append([]Event(nil), e.notes.failures...)
			e.notes.mu.Unlock()
			if len(evs) != 1 {
				t.Fatalf("%d failure events, want 1: %+v", len(evs), evs)
			}
			ev := evs[0]
			if ev.Step != tc.wantStep || ev.FailedStep != tc.wantFailed || ev.StillInFlight != tc.wantInFlight ||
				ev.Published != tc.wantPublished || ev.StoreUnavailable != tc.wantStoreDown {
				t.Fatalf("event step %q failed step %q in flight %v published %v store down %v; want %q %q %v %v %v (err %s)",
					ev.Step, ev.FailedStep, ev.StillInFlight, ev.Published, ev.StoreUnavailable,
					tc.wantStep, tc.wantFailed, tc.wantInFlight, tc.wantPublished, tc.wantStoreDown, ev.Err)
			}
		})
	}
}

func TestFailedStepOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want journal.Step
	}{
		{name: "marked", err: stepFailed(journal.StepVerify, errors.New("verify: 401")), want: journal.StepVerify},
		{name: "marked, wrapped", err: fmt.Errorf("outer: %w", stepFailed(journal.StepRevoke, errors.New("x"))), want: journal.StepRevoke},
		{name: "journal text of a verify abort", err: errors.New("verify: unauthorized"), want: journal.StepVerify},
		{name: "journal text of a create abort", err: errors.New("create: look for duplicates: 500"), want: journal.StepCreate},
		{name: "journal text of a revoke", err: errors.New("revoke old key: 500"), want: journal.StepRevoke},
		{name: "abort's own failure", err: errors.New("abort: delete new key: 500"), want: ""},
		{name: "no prefix", err: errors.New("boom"), want: ""},
		{name: "nil", err: nil, want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := failedStepOf(tc.err); got != tc.want {
				t.Fatalf("failedStepOf = %q, want %q", got, tc.want)
			}
		})
	}
}
