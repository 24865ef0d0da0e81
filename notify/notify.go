// Package notify turns mrbacd's findings and failures into notifications and
// delivers them durably.
//
// A Notification is plain data (kind, severity, title, a plain-text fallback,
// fields, sections, a dedupe id); builders (AuditDigestMessage,
// BudgetAlertMessage, RotationDigestMessage, RotationFailureMessage,
// JobFailureMessage, FindingResolvedMessage) make them from the jobs' results
// so jobs never format messages themselves. A Sender makes one delivery
// attempt: notify/slack (chat.postMessage or an incoming webhook, Block Kit
// plus fallback text) or Stdout (readable text, for the demo).
//
// # Delivery guarantees
//
// Every notification goes through the Outbox, which writes it to the
// journal's outbox table (package journal) before anything is sent; a worker
// (Run, or Flush/Drain for one-shot commands) then claims due messages one at
// a time and sends them:
//
//   - nothing is lost: a message stays pending until the sender acknowledges
//     it; a Slack outage, a 5xx or a 429 only delays it (exponential backoff
//     between MinBackoff and MaxBackoff, Retry-After honoured, and the whole
//     worker pauses while Slack rate-limits or is down so order is kept and
//     Slack is not hammered); a restart resends whatever was not acknowledged.
//     With MaxAge zero (the default) a message is retried forever.
//   - no duplicates from enqueueing: a message's Dedupe id is unique in the
//     journal, so a job that re-runs after a crash and enqueues the same
//     notification again adds nothing. Builders derive Dedupe from the
//     event's identity (rotation id, run id, workspace+threshold+month...).
//   - nothing acknowledged is sent twice: MarkSent is written immediately
//     after the sender returns success. Two workers (even in two processes)
//     never send the same message concurrently: Claim leases it.
//   - the one unavoidable window: the process dies (or the response is lost)
//     after Slack accepted a message but before MarkSent committed. Slack has
//     no idempotency key, so the next attempt is flagged InDoubt by the
//     journal, and a Sender that implements Confirmer is asked first whether
//     the message is already there: notify/slack in bot-token mode posts each
//     message with metadata {event_type: mrbacd_notification, dedupe} and
//     looks for it in the channel's recent history (conversations.history;
//     needs the channels:history / groups:history scope). If found the
//     message is marked sent without posting again. If the check is not
//     possible (webhook mode, missing scope, history unavailable) the message
//     is sent again: at-least-once, never at-most-once.
//   - permanent failures (invalid_auth, channel_not_found, invalid_blocks...)
//     are not retried: the message is marked dead in the journal (kept for
//     inspection and journal.DB.Requeue) and logged at ERROR level. Retrying them
//     would block the queue behind a configuration error forever.
//
// No key material ever goes into a notification: builders take names, ids and
// hidden_key values only.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Severity ranks a notification and routes it (per-severity Slack channels).
type Severity int

// Severities, in increasing order.
const (
	Info Severity = iota
	Warning
	Critical
)

// String returns "info", "warning" or "critical".
func (s Severity) String() string {
	switch s {
	case Info:
		return "info"
	case Warning:
		return "warning"
	case Critical:
		return "critical"
	}
	return fmt.Sprintf("severity(%d)", int(s))
}

// ParseSeverity parses String's output (case-insensitive).
func ParseSeverity(s string) (Severity, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "info":
		return Info, nil
	case "warning", "warn":
		return Warning, nil
	case "critical", "crit":
		return Critical, nil
	}
	return Info, fmt.Errorf("unknown severity %q (want info, warning or critical)", s)
}

// MarshalText encodes the severity as its name.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText decodes a severity name.
func (s *Severity) UnmarshalText(b []byte) error {
	v, err := ParseSeverity(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Notification kinds the builders produce.
const (
	KindAuditDigest     = "audit_digest"
	KindBudgetAlert     = "budget_alert"
	KindBudgetForecast  = "budget_forecast"
	KindRotationDigest  = "rotation_digest"
	KindRotationFailed  = "rotation_failed"
	KindJobFailed       = "job_failed"
	KindJobPanic        = "job_panic"
	KindFindingResolved = "finding_resolved"
)

// Field is one label/value pair (a Slack section field).
type Field struct {
	Label string `json:"label"`
	Value string `json:"value"`
}

// Section is a titled list of lines (a Slack section block).
type Section struct {
	Title string   `json:"title,omitempty"`
	Lines []string `json:"lines"`
}

// Notification is one message to on-call.
type Notification struct {
	Kind     string    `json:"kind"`
	Severity Severity  `json:"severity"`
	Title    string    `json:"title"`
	Text     string    `json:"text"` // plain-text fallback: complete on its own
	Fields   []Field   `json:"fields,omitempty"`
	Sections []Section `json:"sections,omitempty"`
	Context  string    `json:"context,omitempty"` // footer line
	// Dedupe identifies the event: enqueuing the same Dedupe twice sends once.
	Dedupe string `json:"dedupe,omitempty"`
	// Targets are what an operator may act on from the message (buttons).
	Targets []Target `json:"targets,omitempty"`
}

// Validate reports a notification the outbox cannot take.
func (n Notification) Validate() error {
	switch {
	case n.Kind == "":
		return errors.New("notification without kind")
	case n.Title == "" && n.Text == "":
		return fmt.Errorf("%s notification without title or text", n.Kind)
	case n.Severity < Info || n.Severity > Critical:
		return fmt.Errorf("%s notification with invalid severity %d", n.Kind, int(n.Severity))
	}
	return nil
}

// FallbackText is n.Text, or the title when Text is empty.
func (n Notification) FallbackText() string {
	if n.Text != "" {
		return n.Text
	}
	return n.Title
}

func encode(n Notification) ([]byte, error) { return json.Marshal(n) }

func decode(b []byte) (Notification, error) {
	var n Notification
	err := json.Unmarshal(b, &n)
	return n, err
}

// Sender makes one delivery attempt. Errors say whether to retry: wrap them
// with Permanent, Retry or Uncertain; any other error is retried with backoff.
type Sender interface {
	Send(ctx context.Context, n Notification) error
}

// Confirmer is implemented by senders that can tell whether a notification
// was already delivered (e.g. by looking in the channel's history), which the
// outbox asks before resending a message whose previous attempt had no
// recorded outcome. since is when that attempt began.
type Confirmer interface {
	Delivered(ctx context.Context, n Notification, since time.Time) (bool, error)
}

// SendError classifies a failed delivery attempt.
type SendError struct {
	Err error
	// Permanent: retrying cannot help (bad token, unknown channel, bad payload).
	Permanent bool
	// Uncertain: the request may have been delivered (timeout, connection
	// lost after the request was written).
	Uncertain bool
	// RetryAfter is the server's requested delay (HTTP 429 Retry-After).
	RetryAfter time.Duration
}

// Error returns the underlying error's text.
func (e *SendError) Error() string {
	switch {
	case e.Permanent:
		return "permanent: " + e.Err.Error()
	case e.RetryAfter > 0:
		return fmt.Sprintf("%v (retry after %s)", e.Err, e.RetryAfter)
	}
	return e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *SendError) Unwrap() error { return e.Err }

// Permanent marks err as not worth retrying.
func Permanent(err error) error { return &SendError{Err: err, Permanent: true} }

// Retry marks err as temporary, to retry no sooner than after (0: backoff).
func Retry(err error, after time.Duration) error { return &SendError{Err: err, RetryAfter: after} }

// Uncertain marks err as an attempt that may have been delivered.
func Uncertain(err error) error { return &SendError{Err: err, Uncertain: true} }

// Classify reads a Sender's error: permanent, uncertain, and the requested
// retry delay. Unclassified errors are temporary with no delay.
func Classify(err error) (permanent, uncertain bool, retryAfter time.Duration) {
	var se *SendError
	if errors.As(err, &se) {
		return se.Permanent, se.Uncertain, se.RetryAfter
	}
	return false, false, 0
}
