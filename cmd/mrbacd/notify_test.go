package main

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
		{"failed where it stopped", rotate.Event{Step: rotate.StepReverify, Err: "reverify: 401"}, rotate.StepReverify},
		{"aborted after verify", rotate.Event{Step: rotate.StepAbort, Err: "verify: mistral: GET /v1/models: 401"}, rotate.StepVerify},
		{"aborted after create", rotate.Event{Step: rotate.StepAbort, Err: "create: look for duplicates: 500"}, rotate.StepCreate},
		{"aborted after publish", rotate.Event{Step: rotate.StepAbort, Err: "publish: store down"}, rotate.StepPublish},
		{"abort itself failed", rotate.Event{Step: rotate.StepAbort, Err: "abort: delete new key: 500"}, rotate.StepAbort},
		{"no error text", rotate.Event{Step: rotate.StepAbort}, rotate.StepAbort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := failedStep(tc.ev); got != tc.want {
				t.Fatalf("failedStep = %q, want %q", got, tc.want)
			}
		})
	}
}
