package audit

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/mistral"
)

var evalNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func date(s string) *mistral.Date {
	d, err := mistral.ParseDate(s)
	if err != nil {
		panic(err)
	}
	return &d
}

func ts(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

// evalConfig declares dev-workspace and ml-workspace and two managed keys.
func evalConfig() *config.Config {
	return &config.Config{
		Workspaces: []config.Workspace{{Name: "dev-workspace"}, {Name: "ml-workspace", UUID: "w-ml"}},
		Keys: []config.Key{
			{Name: "dev-team-key", Workspace: "dev-workspace", RotateEvery: config.Duration(90 * config.Day),
				Store: config.KeyStore{Backend: "file", Path: "mistral/dev-team"}},
			{Name: "ml-key", Workspace: "ml-workspace", RotateEvery: config.Duration(30 * config.Day),
				Store: config.KeyStore{Backend: "file", Path: "mistral/ml"}},
		},
	}
}

var evalWorkspaces = []mistral.Workspace{
	{UUID: "w-dev", Name: "dev-workspace"},
	{UUID: "w-ml", Name: "ml-workspace"},
}

// healthy are keys that must raise no finding with healthyRecords.
func healthy() []mistral.Key {
	return []mistral.Key{
		{KeyID: "k-dev", Name: "dev-team-key-20261101-ab12cd34", HiddenKey: "abcd...wxyz", WorkspaceID: "w-dev",
			CreatedAt: ts("2026-11-01"), LastUsed: date("2026-11-26"), ExpirationDate: date("2027-03-01")},
		// Adopted: a hand-made key the store's record names, used yesterday.
		{KeyID: "k-ml", Name: "ml-original", WorkspaceID: "w-ml", WorkspaceName: "ml-workspace",
			CreatedAt: ts("2026-11-20"), LastUsed: date("2026-11-27")},
	}
}

func healthyRecords() map[string]Record {
	return map[string]Record{"dev-team-key": {Found: true, KeyID: "k-dev"}, "ml-key": {Found: true, KeyID: "k-ml"}}
}

func TestEvaluate(t *testing.T) {
	type tc struct {
		name     string
		cfg      func(*config.Config)
		keys     []mistral.Key // added to healthy()
		records  map[string]Record
		inFlight map[string]bool
		// inFlightKeys maps key ids of rotations in flight to their entry.
		inFlightKeys map[string]string
		ws           []mistral.Workspace // replaces evalWorkspaces when set
		want         []string            // finding ids
		sev          map[string]Severity // optional severity checks
	}
	cases := []tc{
		{name: "healthy keys raise nothing", want: nil},
		{name: "unused undeclared key used long ago",
			keys: []mistral.Key{{KeyID: "k1", Name: "old-script", WorkspaceID: "w-dev", CreatedAt: ts("2026-01-01"), LastUsed: date("2026-10-01")}},
			want: []string{"undeclared/k1", "unused/k1"},
			sev:  map[string]Severity{"unused/k1": SeverityWarning, "undeclared/k1": SeverityWarning}},
		{name: "never used and created long ago",
			keys: []mistral.Key{{KeyID: "k1", Name: "never", WorkspaceID: "w-dev", CreatedAt: ts("2026-09-01")}},
			want: []string{"undeclared/k1", "unused/k1"}},
		{name: "never used but young is not unused",
			keys: []mistral.Key{{KeyID: "k1", Name: "fresh", WorkspaceID: "w-dev", CreatedAt: ts("2026-11-20")}},
			want: []string{"undeclared/k1"}},
		{name: "last used just inside unused_after is not unused",
			keys: []mistral.Key{{KeyID: "k1", Name: "recent", WorkspaceID: "w-dev", CreatedAt: ts("2026-01-01"), LastUsed: date("2026-10-29")}},
			want: []string{"undeclared/k1"}},
		{name: "unused managed key is info",
			records: map[string]Record{"dev-team-key": {Found: true, KeyID: "k-dev"}, "ml-key": {Found: true, KeyID: "k-ml2"}},
			keys:    []mistral.Key{{KeyID: "k-ml2", Name: "ml-key-20261120-aaaa1111", WorkspaceID: "w-ml", CreatedAt: ts("2026-11-20"), LastUsed: date("2026-10-01")}},
			// k-ml (the adopted key) is now undeclared: the record moved on.
			want: []string{"undeclared/k-ml", "unused/k-ml2"},
			sev:  map[string]Severity{"unused/k-ml2": SeverityInfo}},
		{name: "overdue managed key",
			records: map[string]Record{"dev-team-key": {Found: true, KeyID: "k-old"}, "ml-key": {Found: true, KeyID: "k-ml"}},
			keys:    []mistral.Key{{KeyID: "k-old", Name: "dev-team-key-20260801-cafe0001", WorkspaceID: "w-dev", CreatedAt: ts("2026-08-01"), LastUsed: date("2026-11-27")}},
			want:    []string{"drift/k-dev", "overdue/k-old"}},
		{name: "due today is not yet overdue (grace for tonight's rotation)",
			records: map[string]Record{"dev-team-key": {Found: true, KeyID: "k-due"}, "ml-key": {Found: true, KeyID: "k-ml"}},
			keys:    []mistral.Key{{KeyID: "k-due", Name: "dev-team-key-20260829-cafe0002", WorkspaceID: "w-dev", CreatedAt: ts("2026-08-29"), LastUsed: date("2026-11-27")}},
			want:    []string{"drift/k-dev"}},
		{name: "expiring undeclared key",
			keys: []mistral.Key{{KeyID: "k1", Name: "contractor", WorkspaceID: "w-ml", CreatedAt: ts("2026-11-01"), LastUsed: date("2026-11-26"), ExpirationDate: date("2026-12-05")}},
			want: []string{"expiring/k1", "undeclared/k1"},
			sev:  map[string]Severity{"expiring/k1": SeverityWarning}},
		{name: "expired key",
			keys: []mistral.Key{{KeyID: "k1", Name: "gone-soon", WorkspaceID: "w-ml", CreatedAt: ts("2026-11-01"), LastUsed: date("2026-11-26"), ExpirationDate: date("2026-11-20")}},
			want: []string{"expiring/k1", "undeclared/k1"}},
		{name: "expiration beyond expiring_within is fine",
			keys: []mistral.Key{{KeyID: "k1", Name: "later", WorkspaceID: "w-ml", CreatedAt: ts("2026-11-01"), LastUsed: date("2026-11-26"), ExpirationDate: date("2026-12-12")}},
			want: []string{"undeclared/k1"}},
		{name: "a product's per-user key is undeclared but only info",
			keys: []mistral.Key{{KeyID: "k1", Name: "vibe-alice", Product: "Vibe", WorkspaceID: "w-dev", CreatedAt: ts("2026-11-01"), LastUsed: date("2026-11-26")}},
			want: []string{"undeclared/k1"},
			sev:  map[string]Severity{"undeclared/k1": SeverityInfo}},
		{name: "mrbacd-looking name in the wrong workspace is undeclared",
			keys: []mistral.Key{{KeyID: "k1", Name: "dev-team-key-20261101-ffff0000", WorkspaceID: "w-ml", CreatedAt: ts("2026-11-01"), LastUsed: date("2026-11-26")}},
			want: []string{"undeclared/k1"}},
		{name: "key in an undeclared workspace",
			ws:   append(slices.Clone(evalWorkspaces), mistral.Workspace{UUID: "w-x", Name: "shadow"}),
			keys: []mistral.Key{{KeyID: "k1", Name: "shadow-key", WorkspaceID: "w-x", CreatedAt: ts("2026-11-01"), LastUsed: date("2026-11-26")}},
			want: []string{"undeclared/k1", "workspace_drift/undeclared/w-x"}},
		{name: "store record names a key the platform lacks",
			records: map[string]Record{"dev-team-key": {Found: true, KeyID: "k-vanished"}, "ml-key": {Found: true, KeyID: "k-ml"}},
			// k-dev still carries an mrbacd name for dev-team-key: an orphan.
			want: []string{"drift/k-vanished", "drift/k-dev"},
			sev:  map[string]Severity{"drift/k-vanished": SeverityCritical, "drift/k-dev": SeverityWarning}},
		{name: "managed entry without a record",
			records: map[string]Record{"dev-team-key": {Found: true, KeyID: "k-dev"}, "ml-key": {Found: false}},
			// The adopted ml key is then nobody's.
			want: []string{"drift/entry/ml-key", "undeclared/k-ml"}},
		{name: "record without a key id",
			records: map[string]Record{"dev-team-key": {Found: true, KeyID: "k-dev"}, "ml-key": {Found: true}},
			want:    []string{"drift/entry/ml-key", "undeclared/k-ml"}},
		{name: "orphan of a crashed rotation",
			keys: []mistral.Key{{KeyID: "k-orphan", Name: "dev-team-key-20261127-0badf00d", WorkspaceID: "w-dev", CreatedAt: ts("2026-11-27")}},
			want: []string{"drift/k-orphan"}},
		{name: "rotation in flight: its new key is not drift",
			keys:     []mistral.Key{{KeyID: "k-new", Name: "dev-team-key-20261127-0badf00d", WorkspaceID: "w-dev", CreatedAt: ts("2026-11-27")}},
			inFlight: map[string]bool{"dev-team-key": true},
			want:     nil},
		{name: "rotation in flight after publish: the adopted old key is still the entry's",
			records:      map[string]Record{"dev-team-key": {Found: true, KeyID: "k-dev"}, "ml-key": {Found: true, KeyID: "k-ml2"}},
			keys:         []mistral.Key{{KeyID: "k-ml2", Name: "ml-key-20261127-aaaa1111", WorkspaceID: "w-ml", CreatedAt: ts("2026-11-27")}},
			inFlight:     map[string]bool{"ml-key": true},
			inFlightKeys: map[string]string{"k-ml": "ml-key", "k-ml2": "ml-key"},
			want:         nil},
		{name: "unreadable store: no drift judged for the entry",
			records: map[string]Record{"dev-team-key": {Err: errors.New("vault sealed")}, "ml-key": {Found: true, KeyID: "k-ml"}},
			want:    nil},
		{name: "unreadable store: keys of its workspace are not called undeclared",
			records: map[string]Record{"dev-team-key": {Err: errors.New("vault sealed")}, "ml-key": {Found: true, KeyID: "k-ml"}},
			keys: []mistral.Key{
				{KeyID: "k-adopted", Name: "dev-original", WorkspaceID: "w-dev", CreatedAt: ts("2026-01-01"), LastUsed: date("2026-11-26")},
				{KeyID: "k-other", Name: "elsewhere", WorkspaceID: "w-ml", CreatedAt: ts("2026-01-01"), LastUsed: date("2026-11-26")},
			},
			want: []string{"undeclared/k-other"}},
		{name: "no store records read at all: no drift judged",
			records: map[string]Record{},
			want:    []string{"undeclared/k-ml"}},
		{name: "declared workspace missing on the platform",
			cfg: func(c *config.Config) {
				c.Workspaces = append(c.Workspaces, config.Workspace{Name: "research"}, config.Workspace{Name: "ops", UUID: "w-nope"})
			},
			want: []string{"workspace_drift/missing/ops", "workspace_drift/missing/research"},
			sev:  map[string]Severity{"workspace_drift/missing/ops": SeverityCritical}},
		{name: "undeclared default workspace is info",
			ws:   append(slices.Clone(evalWorkspaces), mistral.Workspace{UUID: "w-def", Name: "Default Workspace", IsDefault: true}),
			want: []string{"workspace_drift/undeclared/w-def"},
			sev:  map[string]Severity{"workspace_drift/undeclared/w-def": SeverityInfo}},
		{name: "longest entry name wins",
			cfg: func(c *config.Config) {
				c.Keys = append(c.Keys, config.Key{Name: "dev", Workspace: "dev-workspace", Store: config.KeyStore{Backend: "file", Path: "d"}})
			},
			records: map[string]Record{"dev-team-key": {Found: true, KeyID: "k-dev"}, "ml-key": {Found: true, KeyID: "k-ml"}, "dev": {Found: true, KeyID: "k-d"}},
			keys:    []mistral.Key{{KeyID: "k-d", Name: "dev-20261120-12345678", WorkspaceID: "w-dev", CreatedAt: ts("2026-11-20"), LastUsed: date("2026-11-27")}},
			want:    nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := evalConfig()
			if c.cfg != nil {
				c.cfg(cfg)
			}
			inv := Inventory{Workspaces: evalWorkspaces, Keys: append(healthy(), c.keys...), Records: healthyRecords(), InFlight: c.inFlight,
				InFlightKeys: c.inFlightKeys}
			if c.ws != nil {
				inv.Workspaces = c.ws
			}
			if c.records != nil {
				inv.Records = c.records
			}
			got := Evaluate(cfg, PolicyFrom(cfg), inv, evalNow)
			var ids []string
			for _, f := range got {
				ids = append(ids, f.ID)
				if f.Detail == "" || f.Action == "" || f.Severity == "" {
					t.Errorf("finding %s lacks detail, action or severity: %+v", f.ID, f)
				}
				if !strings.HasPrefix(f.ID, string(f.Kind)+"/") {
					t.Errorf("finding id %q does not start with its kind %q", f.ID, f.Kind)
				}
				if want, ok := c.sev[f.ID]; ok && f.Severity != want {
					t.Errorf("%s severity = %s, want %s", f.ID, f.Severity, want)
				}
			}
			slices.Sort(ids)
			want := slices.Clone(c.want)
			slices.Sort(want)
			if !slices.Equal(ids, want) {
				t.Errorf("findings = %v\nwant       %v", ids, want)
			}
		})
	}
}

func TestEvaluateExpiringManagedIsCritical(t *testing.T) {
	cfg := evalConfig()
	keys := healthy()
	keys[0].ExpirationDate = date("2026-12-01")
	got := Evaluate(cfg, PolicyFrom(cfg), Inventory{Workspaces: evalWorkspaces, Keys: keys, Records: healthyRecords()}, evalNow)
	if len(got) != 1 || got[0].ID != "expiring/k-dev" || got[0].Severity != SeverityCritical || got[0].Managed != "dev-team-key" {
		t.Fatalf("findings = %+v, want one critical expiring/k-dev for dev-team-key", got)
	}
	if !strings.Contains(got[0].Action, "mrbacd rotate --key dev-team-key") {
		t.Errorf("action %q does not say how to rotate", got[0].Action)
	}
}

func TestEvaluateStableAndSorted(t *testing.T) {
	cfg := evalConfig()
	cfg.Workspaces = append(cfg.Workspaces, config.Workspace{Name: "research"})
	keys := append(healthy(),
		mistral.Key{KeyID: "k1", Name: "a", WorkspaceID: "w-dev", CreatedAt: ts("2026-01-01")},
		mistral.Key{KeyID: "k2", Name: "b", WorkspaceID: "w-dev", CreatedAt: ts("2026-01-01"), ExpirationDate: date("2026-12-01")})
	inv := Inventory{Workspaces: evalWorkspaces, Keys: keys, Records: healthyRecords()}
	a := Evaluate(cfg, PolicyFrom(cfg), inv, evalNow)
	slices.Reverse(inv.Keys)
	b := Evaluate(cfg, PolicyFrom(cfg), inv, evalNow)
	if !slices.EqualFunc(a, b, func(x, y Finding) bool { return x.ID == y.ID && x.Detail == y.Detail }) {
		t.Fatalf("findings depend on listing order:\n%v\n%v", a, b)
	}
	for i := 1; i < len(a); i++ {
		if a[i-1].Severity.Rank() > a[i].Severity.Rank() {
			t.Fatalf("not sorted by severity: %s before %s", a[i-1].ID, a[i].ID)
		}
	}
	if a[0].Severity != SeverityCritical {
		t.Fatalf("first finding %s is not critical", a[0].ID)
	}
}

func TestManagedName(t *testing.T) {
	cases := []struct {
		entry, name string
		want        bool
	}{
		{entry: "dev-team-key", name: "dev-team-key-20261127-ab12cd34", want: true},
		{entry: "dev-team-key", name: "dev-team-key", want: false},
		{entry: "dev-team-key", name: "dev-team-key-2026112-ab12cd34", want: false},
		{entry: "dev-team-key", name: "dev-team-key-20261127-", want: false},
		{entry: "dev", name: "dev-team-key-20261127-ab12cd34", want: false},
		{entry: "dev-team-key", name: "xdev-team-key-20261127-ab12cd34", want: false},
		{entry: "dev-team-key", name: "dev-team-key-20261127-ab12cd34-copy", want: false},
	}
	for _, c := range cases {
		if got := ManagedName(c.entry, c.name); got != c.want {
			t.Errorf("ManagedName(%q, %q) = %v, want %v", c.entry, c.name, got, c.want)
		}
	}
}
