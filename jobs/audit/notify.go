package audit

import (
	"context"
	"fmt"

	"github.com/mrbacd/mrbacd/notify"
)

// Enqueuer durably queues a notification (*notify.Outbox implements it).
type Enqueuer interface {
	Enqueue(ctx context.Context, n notify.Notification) error
}

// OutboxNotifier turns the audit's digest into notify's audit digest
// message and queues it in the outbox.
type OutboxNotifier struct {
	Outbox Enqueuer
	// Top is how many new findings the message lists (notify.DefaultTop when 0).
	Top int
}

// NotifyAudit queues the digest. Its dedupe id derives from the day and the
// findings it reports, so a run repeated after a crash queues nothing new.
func (o OutboxNotifier) NotifyAudit(ctx context.Context, d Digest) error {
	n := notify.AuditDigestMessage(DigestMessage(d, o.Top))
	if err := o.Outbox.Enqueue(ctx, n); err != nil {
		return fmt.Errorf("queue audit digest: %w", err)
	}
	return nil
}

// DigestMessage converts a digest to notify's input.
func DigestMessage(d Digest, top int) notify.AuditDigest {
	ad := notify.AuditDigest{At: d.At, Scope: Scope, Delta: d.Delta, Top: top}
	if d.Report != nil {
		ad.Workspaces, ad.Keys, ad.DryRun = d.Report.Workspaces, d.Report.Keys, d.Report.DryRun
		ad.Errors = d.Report.Errors
	}
	for _, r := range d.Revoked {
		line := fmt.Sprintf("%s (%s) in %s", r.KeyName, r.KeyID, r.Workspace)
		if r.HiddenKey != "" {
			line += ", " + r.HiddenKey
		}
		ad.Revoked = append(ad.Revoked, line)
	}
	return ad
}
