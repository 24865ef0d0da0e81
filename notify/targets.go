package notify

import (
	"strings"

	"github.com/mrbacd/mrbacd/journal"
)

// Target is something an operator may act on from a message: a finding, or
// a failed rotation. A Sender that supports actions (notify/slack over Socket
// Mode) renders buttons for it; others ignore it. Ids and names only.
type Target struct {
	// Scope is the findings scope ("audit"); empty for a rotation failure.
	Scope string `json:"scope,omitempty"`
	// ID is the finding id ("unused/<key_id>"), or "rotation/<rotation id>".
	ID string `json:"id"`
	// Kind is the finding kind (unused, undeclared, overdue...) or
	// rotation_failed.
	Kind     string `json:"kind"`
	Severity string `json:"severity,omitempty"`
	// Subject is a short human name of what it is about.
	Subject string `json:"subject"`
	// KeyID is the platform key id the target names, if any.
	KeyID string `json:"key_id,omitempty"`
	// KeyName is the managed keys: entry, when the target names one.
	KeyName string `json:"key_name,omitempty"`
}

// findingKeyKinds are the finding kinds whose id is "<kind>/<key_id>".
var findingKeyKinds = map[string]bool{"unused": true, "undeclared": true, "overdue": true, "expiring": true, "drift": true}

// FindingTargets returns a target for each of the first top findings.
func FindingTargets(scope string, fs []journal.Finding, top int) []Target {
	var out []Target
	for i, f := range fs {
		if top > 0 && i == top {
			break
		}
		t := Target{Scope: scope, ID: f.ID, Kind: f.Kind, Severity: f.Severity, Subject: f.Subject}
		if rest, ok := strings.CutPrefix(f.ID, f.Kind+"/"); ok && findingKeyKinds[f.Kind] && !strings.Contains(rest, "/") {
			t.KeyID = rest
		}
		out = append(out, t)
	}
	return out
}

// RotationTarget is the target of a failed rotation: the managed key.
func RotationTarget(f RotationFailure) Target {
	return Target{ID: "rotation/" + f.RotationID, Kind: KindRotationFailed, Severity: Critical.String(),
		Subject: f.KeyName, KeyName: f.KeyName, KeyID: f.OldKeyID}
}
