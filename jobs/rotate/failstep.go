package rotate

import (
	"errors"
	"strings"

	"github.com/mrbacd/mrbacd/journal"
)

// stepError marks an error with the rotation step that failed. Its message is
// the wrapped error's: the step is already in the text ("verify: ...").
type stepError struct {
	step journal.Step
	err  error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// stepFailed marks err as the failure of step.
func stepFailed(step journal.Step, err error) error { return &stepError{step: step, err: err} }

// failedStepOf returns the step err marks as failed. An error without a mark
// (one read back from the journal, where only its text survives) is named by
// its prefix ("verify: ..."); "" when neither tells.
func failedStepOf(err error) journal.Step {
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
	switch step := journal.Step(prefix); step {
	case journal.StepCreate, journal.StepVerify, journal.StepPublish, journal.StepReverify:
		return step
	case "revoke old key":
		return journal.StepRevoke
	}
	return ""
}
