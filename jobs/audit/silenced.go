package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// silencer is implemented by journals that hold the snoozes and
// acknowledgements operators give from Slack (*journal.DB).
type silencer interface {
	WithoutSuppressed(ctx context.Context, scope string, d journal.FindingsDelta, now time.Time) (journal.FindingsDelta, []journal.Finding, error)
}

// withoutSilenced leaves the snoozed and acknowledged findings out of the
// delta, so the digest does not report them again. A snoozed new finding is
// not marked reported: it is news again when the snooze ends.
func (j *Job) withoutSilenced(ctx context.Context, d journal.FindingsDelta, now time.Time) (journal.FindingsDelta, error) {
	s, ok := j.Journal.(silencer)
	if !ok {
		return d, nil
	}
	kept, quiet, err := s.WithoutSuppressed(ctx, Scope, d, now)
	if err != nil {
		return d, fmt.Errorf("audit: %w", err)
	}
	if len(quiet) > 0 {
		j.logger().Info("findings silenced from Slack left out of the digest", "job", "audit", "silenced", len(quiet))
	}
	return kept, nil
}
