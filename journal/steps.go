package journal

// Step is a rotation's step: what Rotation.Step journals, what the rotation
// engine reports (rotate.KeyReport, rotate.Event) and what a failure
// notification names (notify.RotationFailure). The rotation protocol is
// described in package rotate.
type Step string

// The rotation steps, in protocol order.
const (
	// StepBegin: journaled, nothing created yet.
	StepBegin Step = "begin"
	// StepCreate: the new key is created on the platform.
	StepCreate Step = "create"
	// StepVerify: the new key answered the platform.
	StepVerify Step = "verify"
	// StepPublish: the store serves the new key; the propagation wait runs.
	StepPublish Step = "publish"
	// StepPropagate names the propagation wait in logs and failure reports;
	// it is journaled as StepPublish with a deadline.
	StepPropagate Step = "propagate"
	// StepReverify: the new key, read back from the store, answered again.
	StepReverify Step = "reverify"
	// StepRevoke names the revoke of the old key in failure reports; it is
	// never journaled: a rotation that revoked its old key is journaled done.
	StepRevoke Step = "revoke"
	// StepDone: the old key is revoked; the rotation is over.
	StepDone Step = "done"
	// StepAbort: the rotation ended before publish and was cleaned up.
	StepAbort Step = "abort"
)
