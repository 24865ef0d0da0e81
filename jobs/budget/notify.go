package budget

import (
	"context"
	"fmt"
	"time"

	"github.com/mrbacd/mrbacd/notify"
)

// Enqueuer durably queues a notification (*notify.Outbox implements it).
type Enqueuer interface {
	Enqueue(ctx context.Context, n notify.Notification) error
}

// OutboxNotifier turns alerts into notify's budget messages and queues them
// in the outbox, whose dedupe makes each alert go out once.
type OutboxNotifier struct {
	Outbox Enqueuer
	// Now stamps the messages (time.Now when nil).
	Now func() time.Time
}

// NotifyBudget queues a.
func (o OutboxNotifier) NotifyBudget(ctx context.Context, a Alert) error {
	at := time.Now()
	if o.Now != nil {
		at = o.Now()
	}
	n := Message(a, at)
	if err := o.Outbox.Enqueue(ctx, n); err != nil {
		return fmt.Errorf("queue budget alert: %w", err)
	}
	return nil
}

// Message builds the notification of an alert: notify.BudgetAlertMessage
// for thresholds and forecasts, a critical message of its own for the
// organization's spend limit.
func Message(a Alert, at time.Time) notify.Notification {
	switch a.Kind {
	case AlertThreshold, AlertForecast:
		return notify.BudgetAlertMessage(notify.BudgetAlert{Workspace: a.Workspace, Month: a.Month, Threshold: a.Threshold,
			SpendUSD: a.SpendUSD, BudgetUSD: a.BudgetUSD, Forecast: a.Kind == AlertForecast, ForecastUSD: a.ForecastUSD,
			OrgSpendLimitUSD: a.OrgLimitUSD, At: at})
	}
	n := notify.Notification{Kind: notify.KindBudgetAlert, Severity: notify.Critical,
		Title: fmt.Sprintf("Organization spend limit reached for %s (%s of %s)", a.Month, usd(a.SpendUSD), usd(a.BudgetUSD)),
		Fields: []notify.Field{{Label: "Month", Value: a.Month}, {Label: "Spend", Value: usd(a.SpendUSD)},
			{Label: "Spend limit", Value: usd(a.BudgetUSD)}},
		Sections: []notify.Section{{Title: "What to do", Lines: []string{
			"The platform refuses requests until the month ends or the limit is raised (POST /v1/admin/spend-limit); check which workspaces drive the spend with mrbacd budget --json."}}},
		Context: "mrbacd budget · " + at.UTC().Format(time.RFC3339),
		Dedupe:  a.Dedupe,
	}
	n.Text = a.Text
	return n
}
