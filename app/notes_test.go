package app

import (
	"testing"

	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/journal"
)

func TestFailedStep(t *testing.T) {
	tests := []struct {
		name string
		ev   rotate.Event
		want journal.Step
	}{
		{name: "failed where it stopped", ev: rotate.Event{Step: journal.StepPublish, FailedStep: journal.StepReverify, Err: "reverify: 401"}, want: journal.StepReverify},
		{name: "aborted at verify", ev: rotate.Event{Step: journal.StepAbort, FailedStep: journal.StepVerify, Err: "verify: mistral: GET /v1/models: 401"}, want: journal.StepVerify},
		{name: "aborted at create", ev: rotate.Event{Step: journal.StepAbort, FailedStep: journal.StepCreate, Err: "create: look for duplicates: 500"}, want: journal.StepCreate},
		{name: "revoke failed", ev: rotate.Event{Step: journal.StepReverify, FailedStep: journal.StepRevoke, Err: "revoke old key: 500"}, want: journal.StepRevoke},
		{name: "no failed step: the step reached", ev: rotate.Event{Step: journal.StepAbort}, want: journal.StepAbort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := failedStep(tc.ev); got != tc.want {
				t.Fatalf("failedStep = %q, want %q", got, tc.want)
			}
		})
	}
}
