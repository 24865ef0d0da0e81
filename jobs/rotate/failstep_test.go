package rotate

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// TestFailureEventStep checks that a failure's Event names the step that
// failed, not where the rotation ended (an aborted rotation ends at "abort").
func TestFailureEventStep(t *testing.T) {
	tests := []struct {
		name          string
		route         string // persistent 500 on it; "" for none
		storeOutage   bool
		wantStep      string // Event.Step
		wantFailed    string // Event.FailedStep
		wantInFlight  bool
		wantPublished bool
		wantStoreDown bool
	}{
		{name: "create refused", route: "POST /v1/admin/api-keys", wantStep: StepAbort, wantFailed: StepCreate},
		{name: "verify never succeeds", route: "GET /v1/models", wantStep: StepAbort, wantFailed: StepVerify},
		{name: "duplicate check and abort fail", route: "GET /v1/admin/api-keys", wantStep: StepAbort, wantFailed: StepCreate, wantInFlight: true},
		{name: "store unavailable at publish", storeOutage: true, wantStep: StepAbort, wantFailed: StepPublish, wantStoreDown: true},
		{name: "revoke refused", route: "DELETE /v1/admin/api-keys/{key_id}", wantStep: StepReverify, wantFailed: StepRevoke, wantInFlight: true, wantPublished: true},
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
		want string
	}{
		{"marked", stepFailed(StepVerify, errors.New("verify: 401")), StepVerify},
		{"marked, wrapped", fmt.Errorf("outer: %w", stepFailed(StepRevoke, errors.New("x"))), StepRevoke},
		{"journal text of a verify abort", errors.New("verify: unauthorized"), StepVerify},
		{"journal text of a create abort", errors.New("create: look for duplicates: 500"), StepCreate},
		{"journal text of a revoke", errors.New("revoke old key: 500"), StepRevoke},
		{"abort's own failure", errors.New("abort: delete new key: 500"), ""},
		{"no prefix", errors.New("boom"), ""},
		{"nil", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := failedStepOf(tc.err); got != tc.want {
				t.Fatalf("failedStepOf = %q, want %q", got, tc.want)
			}
		})
	}
}
