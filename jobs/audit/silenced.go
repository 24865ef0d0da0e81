package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/mrbacd/mrbacd/state"
)

// silencer is implemented by journals that hold the snoozes and
// acknowledgements operators give from Slack (*state.DB).
type silencer interface {
	WithoutSuppressed(ctx context.Context, scope string, d state.FindingsDelta, now time.Time) (state.FindingsDelta, []state.Finding, error)
}

// withoutSilenced leaves the snoozed and acknowledged findings out of the
// delta, so the digest does not report them again. A snoozed new finding is
// not marked reported: it is news again when the snooze ends.
func (j *Job) withoutSilenced(ctx context.Context, d state.FindingsDelta, now time.Time) (state.FindingsDelta, error) {
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
