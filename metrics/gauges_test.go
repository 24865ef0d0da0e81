package metrics

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/journal"
)

const gaugeConfig = `workspaces: [{name: dev, monthly_budget_usd: 100}, {name: prod}]
keys:
  - {name: dev-key, workspace: dev, rotate_every: 30d, expiration_grace: 10d, store: {backend: file, path: dev}}
  - {name: prod-key, workspace: prod, store: {backend: file, path: prod}}
  - {name: new-key, workspace: prod, store: {backend: file, path: new}}
jobs:
  rotate: {schedule: "0 3 * * *"}
  audit: {schedule: "30 2 * * 1"}
  budget: {disabled: true}
`

func TestStateGauges(t *testing.T) {
	ctx := context.Background()
	cfg, err := config.Parse("g.yaml", []byte(gaugeConfig))
	if err != nil {
		t.Fatal(err)
	}
	db, err := journal.Open(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	rotated := now.Add(-10 * 24 * time.Hour)
	steps := []journal.Rotation{
		{ID: "r1", KeyName: "dev-key", Status: journal.StatusDone, NewKeyID: "k1", StartedAt: rotated},
		{ID: "r2", KeyName: "prod-key", Status: journal.StatusDone, NewKeyID: "k2", StartedAt: now.Add(-100 * 24 * time.Hour)},
		{ID: "r3", KeyName: "prod-key", Status: journal.StatusFailed, StartedAt: now.Add(-time.Hour), Error: "verify: 401"},
	}
	for _, r := range steps {
		if err := db.BeginRotation(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.SyncFindings(ctx, "audit", []journal.Finding{
		{ID: "unused/a", Kind: "unused", Severity: "warning"}, {ID: "unused/b", Kind: "unused", Severity: "warning"},
		{ID: "expiring/c", Kind: "expiring", Severity: "critical"},
	}, now); err != nil {
		t.Fatal(err)
	}
	for job, summary := range map[string]string{
		"budget": `{"failed":false,"summary":"x","details":{"workspaces":[{"workspace":"dev","spend_usd":40,"budget_usd":100,"forecast_usd":120},{"workspace":"prod","spend_usd":5},{"workspace":"gone","error":"403"}]}}`,
		"audit":  `{"failed":false,"summary":"ok"}`,
	} {
		id, _ := db.StartRun(ctx, job, "cron", "")
		if err := db.FinishRun(ctx, id, journal.RunOK, "", summary); err != nil {
			t.Fatal(err)
		}
	}
	id, _ := db.StartRun(ctx, "rotate", "cron", "")
	db.FinishRun(ctx, id, journal.RunFailed, "boom", "{}")

	m := New("test", nil)
	m.RegisterStateGauges(GaugeSources{Journal: db, Config: func() *config.Config { return cfg }, Now: func() time.Time { return now },
		KeyCreated: func(context.Context) (map[string]time.Time, error) {
			return map[string]time.Time{"prod-key": now.Add(-95 * 24 * time.Hour)}, nil // the platform knows better
		}})
	day := 24 * 3600.0
	want := `
# HELP mrbacd_managed_key_age_seconds Age of each managed key's current platform key.
# TYPE mrbacd_managed_key_age_seconds gauge
mrbacd_managed_key_age_seconds{key="dev-key",workspace="dev"} ` + f(10*day) + `
mrbacd_managed_key_age_seconds{key="prod-key",workspace="prod"} ` + f(95*day) + `
# HELP mrbacd_managed_key_rotation_period_seconds Each managed key's rotate_every.
# TYPE mrbacd_managed_key_rotation_period_seconds gauge
mrbacd_managed_key_rotation_period_seconds{key="dev-key",workspace="dev"} ` + f(30*day) + `
mrbacd_managed_key_rotation_period_seconds{key="new-key",workspace="prod"} ` + f(90*day) + `
mrbacd_managed_key_rotation_period_seconds{key="prod-key",workspace="prod"} ` + f(90*day) + `
# HELP mrbacd_managed_key_rotation_failing 1 when the latest rotation attempt of the key failed, else 0.
# TYPE mrbacd_managed_key_rotation_failing gauge
mrbacd_managed_key_rotation_failing{key="dev-key",workspace="dev"} 0
mrbacd_managed_key_rotation_failing{key="new-key",workspace="prod"} 0
mrbacd_managed_key_rotation_failing{key="prod-key",workspace="prod"} 1
# HELP mrbacd_managed_key_expiry_timestamp_seconds Unix time at which each managed key's current platform key expires (mrbacd sets rotate_every + expiration_grace).
# TYPE mrbacd_managed_key_expiry_timestamp_seconds gauge
mrbacd_managed_key_expiry_timestamp_seconds{key="dev-key",workspace="dev"} ` + f(unix(rotated.Add(40*24*time.Hour))) + `
mrbacd_managed_key_expiry_timestamp_seconds{key="prod-key",workspace="prod"} ` + f(unix(now.Add(25*24*time.Hour))) + `
# HELP mrbacd_findings_open Open findings by kind and severity.
# TYPE mrbacd_findings_open gauge
mrbacd_findings_open{kind="expiring",severity="critical"} 1
mrbacd_findings_open{kind="unused",severity="warning"} 2
# HELP mrbacd_budget_used_ratio Spend this month over the workspace's monthly budget, at the last budget run.
# TYPE mrbacd_budget_used_ratio gauge
mrbacd_budget_used_ratio{workspace="dev"} 0.4
# HELP mrbacd_budget_forecast_ratio Forecast spend at the month's end over the monthly budget, at the last budget run.
# TYPE mrbacd_budget_forecast_ratio gauge
mrbacd_budget_forecast_ratio{workspace="dev"} 1.2
# HELP mrbacd_budget_spend_usd Spend this month in USD, at the last budget run.
# TYPE mrbacd_budget_spend_usd gauge
mrbacd_budget_spend_usd{workspace="dev"} 40
mrbacd_budget_spend_usd{workspace="prod"} 5
# HELP mrbacd_job_period_seconds Interval between two scheduled runs of each job.
# TYPE mrbacd_job_period_seconds gauge
mrbacd_job_period_seconds{job="audit"} ` + f(7*day) + `
mrbacd_job_period_seconds{job="rotate"} ` + f(day) + `
`
	names := []string{"mrbacd_managed_key_age_seconds", "mrbacd_managed_key_rotation_period_seconds", "mrbacd_managed_key_rotation_failing",
		"mrbacd_managed_key_expiry_timestamp_seconds", "mrbacd_findings_open", "mrbacd_budget_used_ratio", "mrbacd_budget_forecast_ratio",
		"mrbacd_budget_spend_usd", "mrbacd_job_period_seconds"}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// Last successes: audit and budget, not the failed rotate.
	if n, err := testutil.GatherAndCount(m.Registry(), "mrbacd_job_last_success_timestamp_seconds"); err != nil || n != 2 {
		t.Errorf("last success series = %d, %v", n, err)
	}
	if n, _ := testutil.GatherAndCount(m.Registry(), "mrbacd_managed_key_next_rotation_timestamp_seconds"); n != 2 {
		t.Errorf("next rotation series = %d, want 2 (new-key has no age yet)", n)
	}
}

func f(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
