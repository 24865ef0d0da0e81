package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/notify"
	"github.com/mrbacd/mrbacd/notify/slack"
)

// FlushTimeout bounds how long a one-shot command tries to deliver its
// notifications before exiting; what is not delivered stays in the
// journal's outbox for the daemon (or the next run).
const FlushTimeout = 30 * time.Second

// newNotifier returns the sender notifications go through: Slack (bot token
// or incoming webhook, see slack.FromConfig) when notify.slack is
// configured, else w. The token or webhook URL is read from its _env or
// _file source and never logged.
func newNotifier(cfg *config.Config, w io.Writer, logger *slog.Logger) (notify.Sender, error) {
	if cfg.Notify.Slack == nil {
		return notify.NewStdout(w), nil
	}
	n, err := slack.FromConfig(cfg.Notify.Slack, logger)
	if err != nil {
		return nil, err // a nil *slack.Notifier must not become a non-nil Sender
	}
	return n, nil
}

// rotationNotes turns the rotation engine's events into the outbox's
// rotation messages: one digest of the successes per run, one message per
// failure. It is the engine's Notifier in the daemon, the one-shot `mrbacd
// rotate` and the demo; enqueue queues what one run produced.
type rotationNotes struct {
	mu     sync.Mutex
	done   []notify.RotationDone
	failed []rotate.Event
}

// OnRotated implements rotate.Notifier.
func (n *rotationNotes) OnRotated(_ context.Context, ev rotate.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.done = append(n.done, notify.RotationDone{KeyName: ev.KeyName, RotationID: ev.RotationID,
		OldKeyID: ev.OldKeyID, NewKeyID: ev.NewKeyID, NewKeyName: ev.NewKeyName, Note: ev.Note})
}

// OnFailed implements rotate.Notifier.
func (n *rotationNotes) OnFailed(_ context.Context, ev rotate.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.failed = append(n.failed, ev)
}

// enqueue queues what the run that ended produced and resets the notes. It
// returns how many rotation failures it reported.
func (n *rotationNotes) enqueue(ctx context.Context, outbox *notify.Outbox, res jobs.Result, at time.Time) (int, error) {
	n.mu.Lock()
	done, failed := n.done, n.failed
	n.done, n.failed = nil, nil
	n.mu.Unlock()
	var errs []error
	sort.Slice(failed, func(i, j int) bool { return failed[i].KeyName < failed[j].KeyName })
	for _, ev := range failed {
		errs = append(errs, outbox.Enqueue(ctx, notify.RotationFailureMessage(notify.RotationFailure{
			KeyName: ev.KeyName, RotationID: ev.RotationID, Step: failedStep(ev), Error: ev.Err,
			OldKeyID: ev.OldKeyID, NewKeyID: ev.NewKeyID, NewKeyName: ev.NewKeyName,
			Published: ev.Published, InFlight: ev.StillInFlight, StoreUnavailable: ev.StoreUnavailable,
			NewKeyDeleted: !ev.StillInFlight && !ev.Published && ev.NewKeyID != "", At: at,
		})))
	}
	if len(done) > 0 {
		notDue := 0
		reps, _ := res.Details.([]rotate.KeyReport)
		for _, r := range reps {
			if r.Outcome == rotate.OutcomeNotDue {
				notDue++
			}
		}
		errs = append(errs, outbox.Enqueue(ctx, notify.RotationDigestMessage(notify.RotationDigest{
			At: at, Rotated: done, Failed: len(failed), NotDue: notDue})))
	}
	return len(failed), errors.Join(errs...)
}

// failedStep is the step a failed rotation failed at: the engine's
// FailedStep, or the step it reached when an older event lacks one.
func failedStep(ev rotate.Event) journal.Step {
	if ev.FailedStep != "" {
		return ev.FailedStep
	}
	return ev.Step
}
