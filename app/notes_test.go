package app

import (
	"testing"

	"github.com/mrbacd/mrbacd/jobs/rotate"
)

func TestFailedStep(t *testing.T) {
	tests := []struct {
		name string
		ev   rotate.Event
		want string
	}{
		{"failed where it stopped", rotate.Event{Step: rotate.StepPublish, FailedStep: rotate.StepReverify, Err: "reverify: 401"}, rotate.StepReverify},
		{"aborted at verify", rotate.Event{Step: rotate.StepAbort, FailedStep: rotate.StepVerify, Err: "verify: mistral: GET /v1/models: 401"}, rotate.StepVerify},
		{"aborted at create", rotate.Event{Step: rotate.StepAbort, FailedStep: rotate.StepCreate, Err: "create: look for duplicates: 500"}, rotate.StepCreate},
		{"revoke failed", rotate.Event{Step: rotate.StepReverify, FailedStep: rotate.StepRevoke, Err: "revoke old key: 500"}, rotate.StepRevoke},
		{"no failed step: the step reached", rotate.Event{Step: rotate.StepAbort}, rotate.StepAbort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := failedStep(tc.ev); got != tc.want {
				t.Fatalf("failedStep = %q, want %q", got, tc.want)
			}
		})
	}
}
