package rotate

import (
	"errors"
	"strings"
)

// StepRevoke names the revoke of the old key in failure reports
// (Event.FailedStep). It is never journaled: a rotation that revoked its old
// key is journaled done.
const StepRevoke = "revoke"

// stepError marks an error with the rotation step that failed. Its message is
// the wrapped error's: the step is already in the text ("verify: ...").
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// stepFailed marks err as the failure of step.
func stepFailed(step string, err error) error { return &stepError{step: step, err: err} }

// failedStepOf returns the step err marks as failed. An error without a mark
// (one read back from the journal, where only its text survives) is named by
// its prefix ("verify: ..."); "" when neither tells.
func failedStepOf(err error) string {
	if err == nil {
		return ""
	}
	var se *stepError
	if errors.As(err, &se) {
		return se.step
	}
	prefix, _, ok := strings.Cut(err.Error(), ":")
	if !ok {
		return ""
	}
	switch prefix {
	case StepCreate, StepVerify, StepPublish, StepReverify:
		return prefix
	case "revoke old key":
		return StepRevoke
	}
	return ""
}
