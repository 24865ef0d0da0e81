package audit

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/mistral"
)

// One table test per finding kind: each judge alone over the index
// Evaluate builds (evalConfig: dev-team-key in dev-workspace every 90 days,
// ml-key in ml-workspace every 30 days).

var judgePolicy = Policy{UnusedAfter: 30 * config.Day, ExpiringWithin: 14 * config.Day, OverdueGrace: DefaultOverdueGrace}

// judgeCase is one key judged by one judge.
type judgeCase struct {
	name string
	key  mistral.Key
	// records and inFlight override the healthy records and no rotation in flight.
	records  map[string]Record
	inFlight map[string]bool
	// want is "" when no finding is expected, else the finding's severity.
	want       Severity
	wantDetail string
}

func runJudge(t *testing.T, judge func(*evalIndex, keyView) (Finding, bool), kind Kind, tests []judgeCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			records := tc.records
			if records == nil {
				records = healthyRecords()
			}
			inv := Inventory{Workspaces: evalWorkspaces, Keys: []mistral.Key{tc.key}, Records: records, InFlight: tc.inFlight}
			ix := newEvalIndex(evalConfig(), judgePolicy, inv, evalNow)
			f, ok := judge(ix, ix.view(tc.key))
			if ok != (tc.want != "") {
				t.Fatalf("finding %v (%+v), want one: %v", ok, f, tc.want != "")
			}
			if !ok {
				return
			}
			if f.Kind != kind || f.Severity != tc.want || f.ID != string(kind)+"/"+tc.key.KeyID || !strings.Contains(f.Detail, tc.wantDetail) || f.Action == "" {
				t.Fatalf("got %+v, want kind %s severity %s detail with %q and an action", f, kind, tc.want, tc.wantDetail)
			}
		})
	}
}

func TestJudgeUndeclared(t *testing.T) {
	runJudge(t, undeclared, KindUndeclared, []judgeCase{
		{name: "the record names it", key: mistral.Key{KeyID: "k-dev", Name: "anything", WorkspaceID: "w-dev"}},
		{name: "managed name in its workspace", key: mistral.Key{KeyID: "k-x", Name: "dev-team-key-20261101-ab12cd34", WorkspaceID: "w-dev"}},
		{name: "managed name in another workspace", key: mistral.Key{KeyID: "k-x", Name: "dev-team-key-20261101-ab12cd34", WorkspaceID: "w-ml"},
			want: SeverityWarning, wantDetail: "not managed by any keys: entry"},
		{name: "hand-made key", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev"},
			want: SeverityWarning, wantDetail: "key laptop in workspace dev-workspace is not managed"},
		{name: "undeclared workspace", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-other"},
			want: SeverityWarning, wantDetail: "which the config does not declare"},
		{name: "a product's key", key: mistral.Key{KeyID: "k-x", Name: "vibe", WorkspaceID: "w-dev", Product: "Vibe"},
			want: SeverityInfo, wantDetail: "(a Vibe key)"},
		{name: "workspace with an unreadable record", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev"},
			records: map[string]Record{"dev-team-key": {Err: errors.New("store down")}}},
	})
}

func TestJudgeOrphanDrift(t *testing.T) {
	orphan := mistral.Key{KeyID: "k-old", Name: "dev-team-key-20260801-ef56ab78", WorkspaceID: "w-dev"}
	runJudge(t, orphanDrift, KindDrift, []judgeCase{
		{name: "the current key", key: mistral.Key{KeyID: "k-dev", Name: "dev-team-key-20261101-ab12cd34", WorkspaceID: "w-dev"}},
		{name: "orphan of an interrupted rotation", key: orphan, want: SeverityWarning, wantDetail: "record names key k-dev"},
		{name: "entry without a record", key: orphan, records: map[string]Record{"ml-key": {Found: true, KeyID: "k-ml"}, "dev-team-key": {}},
			want: SeverityWarning, wantDetail: "store holds no record"},
		{name: "rotation in flight", key: orphan, inFlight: map[string]bool{"dev-team-key": true}},
		{name: "record unreadable", key: orphan, records: map[string]Record{"dev-team-key": {Err: errors.New("store down")}}},
		{name: "not mrbacd's", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev"}},
	})
}

func TestJudgeUnused(t *testing.T) {
	runJudge(t, unused, KindUnused, []judgeCase{
		{name: "used yesterday", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev", CreatedAt: ts("2026-01-01"), LastUsed: date("2026-11-26")}},
		{name: "unmanaged, last used long ago", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev", CreatedAt: ts("2026-01-01"), LastUsed: date("2026-09-01")},
			want: SeverityWarning, wantDetail: "last used 2026-09-01"},
		{name: "managed, never used", key: mistral.Key{KeyID: "k-dev", Name: "dev-team-key-20260901-ab12cd34", WorkspaceID: "w-dev", CreatedAt: ts("2026-09-01")},
			want: SeverityInfo, wantDetail: "never been used"},
		{name: "never used, new", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev", CreatedAt: ts("2026-11-20")}},
		{name: "no dates at all", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev"}},
	})
}

func TestJudgeOverdue(t *testing.T) {
	runJudge(t, overdue, KindOverdue, []judgeCase{
		{name: "young", key: mistral.Key{KeyID: "k-dev", Name: "x", WorkspaceID: "w-dev", CreatedAt: ts("2026-11-01")}},
		{name: "older than rotate_every", key: mistral.Key{KeyID: "k-dev", Name: "x", WorkspaceID: "w-dev", CreatedAt: ts("2026-08-01")},
			want: SeverityWarning, wantDetail: "rotate_every is 90d"},
		{name: "due today, within the grace", key: mistral.Key{KeyID: "k-ml", Name: "x", WorkspaceID: "w-ml", CreatedAt: evalNow.Add(-30*config.Day - time.Hour)}},
		{name: "unmanaged keys are never overdue", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev", CreatedAt: ts("2020-01-01")}},
		{name: "no creation date", key: mistral.Key{KeyID: "k-dev", Name: "x", WorkspaceID: "w-dev"}},
	})
}

func TestJudgeExpiring(t *testing.T) {
	runJudge(t, expiring, KindExpiring, []judgeCase{
		{name: "no expiration", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev"}},
		{name: "far off", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev", ExpirationDate: date("2027-03-01")}},
		{name: "just beyond expiring_within", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev", ExpirationDate: date("2026-12-12")}},
		{name: "just within expiring_within", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev", ExpirationDate: date("2026-12-10")},
			want: SeverityWarning, wantDetail: "(in 13 days)"},
		{name: "unmanaged, soon", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev", ExpirationDate: date("2026-12-01")},
			want: SeverityWarning, wantDetail: "expires on 2026-12-01 (in 4 days)"},
		{name: "managed, soon", key: mistral.Key{KeyID: "k-dev", Name: "x", WorkspaceID: "w-dev", ExpirationDate: date("2026-12-01")},
			want: SeverityCritical, wantDetail: "expires on 2026-12-01"},
		{name: "valid through today", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev", ExpirationDate: date("2026-11-27")},
			want: SeverityWarning, wantDetail: "expires on 2026-11-27 (in 0 days)"},
		{name: "expired", key: mistral.Key{KeyID: "k-x", Name: "laptop", WorkspaceID: "w-dev", ExpirationDate: date("2026-11-20")},
			want: SeverityWarning, wantDetail: "expired on 2026-11-20"},
	})
}

func TestJudgeWorkspaceDrift(t *testing.T) {
	tests := []struct {
		name       string
		workspaces []mistral.Workspace
		wantIDs    []string
		wantSev    []Severity
	}{
		{name: "all declared and present", workspaces: evalWorkspaces},
		{name: "declared by name, missing", workspaces: []mistral.Workspace{{UUID: "w-ml", Name: "ml-workspace"}},
			wantIDs: []string{"workspace_drift/missing/dev-workspace"}, wantSev: []Severity{SeverityCritical}},
		{name: "declared by uuid, renamed is still found", workspaces: []mistral.Workspace{{UUID: "w-dev", Name: "dev-workspace"}, {UUID: "w-ml", Name: "renamed"}}},
		{name: "undeclared, and the default", workspaces: append([]mistral.Workspace{{UUID: "w-x", Name: "x"}, {UUID: "w-d", Name: "Default", IsDefault: true}}, evalWorkspaces...),
			wantIDs: []string{"workspace_drift/undeclared/w-x", "workspace_drift/undeclared/w-d"}, wantSev: []Severity{SeverityWarning, SeverityInfo}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ix := newEvalIndex(evalConfig(), judgePolicy, Inventory{Workspaces: tc.workspaces}, evalNow)
			got := workspaceDrift(ix)
			if len(got) != len(tc.wantIDs) {
				t.Fatalf("got %+v, want %v", got, tc.wantIDs)
			}
			for i, f := range got {
				if f.ID != tc.wantIDs[i] || f.Severity != tc.wantSev[i] || f.Kind != KindWorkspaceDrift {
					t.Fatalf("finding %d: %+v, want %s %s", i, f, tc.wantIDs[i], tc.wantSev[i])
				}
			}
		})
	}
}

func TestJudgeRecordDrift(t *testing.T) {
	tests := []struct {
		name     string
		records  map[string]Record
		inFlight map[string]bool
		wantIDs  []string
		wantSev  Severity
	}{
		{name: "healthy", records: healthyRecords()},
		{name: "no record", records: map[string]Record{"dev-team-key": {}, "ml-key": {Found: true, KeyID: "k-ml"}},
			wantIDs: []string{"drift/entry/dev-team-key"}, wantSev: SeverityWarning},
		{name: "record without a key id", records: map[string]Record{"dev-team-key": {Found: true}, "ml-key": {Found: true, KeyID: "k-ml"}},
			wantIDs: []string{"drift/entry/dev-team-key"}, wantSev: SeverityWarning},
		{name: "record names a dead key", records: map[string]Record{"dev-team-key": {Found: true, KeyID: "k-gone"}, "ml-key": {Found: true, KeyID: "k-ml"}},
			wantIDs: []string{"drift/k-gone"}, wantSev: SeverityCritical},
		{name: "dead key, rotation in flight", records: map[string]Record{"dev-team-key": {Found: true, KeyID: "k-gone"}, "ml-key": {Found: true, KeyID: "k-ml"}},
			inFlight: map[string]bool{"dev-team-key": true}},
		{name: "unreadable or unknown records are not judged", records: map[string]Record{"dev-team-key": {Err: errors.New("down")}, "ml-key": {Found: true, KeyID: "k-ml"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inv := Inventory{Workspaces: evalWorkspaces, Keys: healthy(), Records: tc.records, InFlight: tc.inFlight}
			got := recordDrift(newEvalIndex(evalConfig(), judgePolicy, inv, evalNow))
			if len(got) != len(tc.wantIDs) {
				t.Fatalf("got %+v, want %v", got, tc.wantIDs)
			}
			for i, f := range got {
				if f.ID != tc.wantIDs[i] || f.Severity != tc.wantSev || f.Kind != KindDrift || f.Action == "" {
					t.Fatalf("finding %d: %+v, want %s %s", i, f, tc.wantIDs[i], tc.wantSev)
				}
			}
		})
	}
}

func TestJudgeSpendLimitDrift(t *testing.T) {
	v := func(f float64) *float64 { return &f }
	tests := []struct {
		name       string
		budget     float64
		limit      *mistral.WorkspaceSpendLimit
		wantDetail string // "" for no finding
	}{
		{name: "platform sent no limit object", budget: 50},
		{name: "equal", budget: 50, limit: &mistral.WorkspaceSpendLimit{Value: v(50), Currency: "USD"}},
		{name: "no budget, no limit", limit: &mistral.WorkspaceSpendLimit{NoMonthlyLimit: true, Currency: "USD"}},
		{name: "amounts differ", budget: 50, limit: &mistral.WorkspaceSpendLimit{Value: v(80), Currency: "USD"},
			wantDetail: "config monthly_budget_usd $50.00, platform spend_limit $80.00"},
		{name: "platform uncapped", budget: 50, limit: &mistral.WorkspaceSpendLimit{NoMonthlyLimit: true, Currency: "USD"},
			wantDetail: "platform spend_limit none"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := evalConfig()
			cfg.Workspaces[0].MonthlyBudgetUSD = tc.budget
			ws := []mistral.Workspace{{UUID: "w-dev", Name: "dev-workspace", SpendLimit: tc.limit}, evalWorkspaces[1]}
			fs := spendLimitDrift(newEvalIndex(cfg, judgePolicy, Inventory{Workspaces: ws}, evalNow))
			if tc.wantDetail == "" {
				if len(fs) != 0 {
					t.Fatalf("findings %+v, want none", fs)
				}
				return
			}
			if len(fs) != 1 || fs[0].ID != "workspace_drift/spend_limit/dev-workspace" || fs[0].Severity != SeverityWarning ||
				!strings.Contains(fs[0].Detail, tc.wantDetail) || fs[0].Action == "" {
				t.Fatalf("findings %+v, want one warning with %q", fs, tc.wantDetail)
			}
		})
	}
}
