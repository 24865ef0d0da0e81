package audit

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/mistral"
)

// Kind is what a finding is about.
type Kind string

// Finding kinds.
const (
	// KindUnused: last_used older than unused_after, or never used and
	// created longer ago.
	KindUnused Kind = "unused"
	// KindOverdue: a managed key older than its rotate_every.
	KindOverdue Kind = "overdue"
	// KindExpiring: expiration_date within expiring_within (or past).
	KindExpiring Kind = "expiring"
	// KindUndeclared: a live key no keys: entry accounts for.
	KindUndeclared Kind = "undeclared"
	// KindDrift: the store and the platform disagree about a managed key.
	KindDrift Kind = "drift"
	// KindWorkspaceDrift: a declared workspace missing on the platform, or a
	// platform workspace the config does not declare.
	KindWorkspaceDrift Kind = "workspace_drift"
)

// Kinds lists every kind in report order.
var Kinds = []Kind{KindDrift, KindExpiring, KindOverdue, KindUndeclared, KindUnused, KindWorkspaceDrift}

// Severity ranks findings; it also routes notifications.
type Severity string

// Severities, from loudest.
const (
	SeverityCritical Severity = "critical"
	SeverityWarning  Severity = "warning"
	SeverityInfo     Severity = "info"
)

// Rank orders severities: critical 0, warning 1, info 2, unknown 3.
func (s Severity) Rank() int {
	switch s {
	case SeverityCritical:
		return 0
	case SeverityWarning:
		return 1
	case SeverityInfo:
		return 2
	}
	return 3
}

// Finding is one observation of the audit. It never holds key material:
// only names, ids and the platform's hidden_key.
type Finding struct {
	// ID is the stable identity: "<kind>/<subject>", e.g. "unused/<key_id>",
	// "drift/entry/<key name>", "workspace_drift/missing/<workspace>".
	ID       string   `json:"id"`
	Kind     Kind     `json:"kind"`
	Severity Severity `json:"severity"`
	// KeyID, KeyName and HiddenKey describe the platform key, if any.
	KeyID     string `json:"key_id,omitempty"`
	KeyName   string `json:"key_name,omitempty"`
	HiddenKey string `json:"hidden_key,omitempty"`
	// Workspace is the workspace's name (or uuid when it has no name).
	Workspace string `json:"workspace,omitempty"`
	// Managed is the keys: entry the key belongs to, if any.
	Managed string `json:"managed_key,omitempty"`
	// Detail says what was observed; Action what the operator should do.
	Detail string `json:"detail"`
	Action string `json:"action"`
	// Revoked is set when the audit deleted the key (jobs.audit.revoke_unused);
	// WouldRevoke when a dry run would have.
	Revoked     bool `json:"revoked,omitempty"`
	WouldRevoke bool `json:"would_revoke,omitempty"`
}

// Subject is the short human name of what the finding is about.
func (f Finding) Subject() string {
	switch {
	case f.KeyName != "" && f.KeyID != "":
		return fmt.Sprintf("%s (%s)", f.KeyName, f.KeyID)
	case f.KeyID != "":
		return f.KeyID
	case f.Managed != "":
		return f.Managed
	}
	return f.Workspace
}

// Record is what a keys: entry's store target holds, as the audit needs it:
// whether there is a record and the key id it names. Never the key.
type Record struct {
	// Found is false when the target holds nothing.
	Found bool
	// KeyID is the platform key id the record names.
	KeyID string
	// Err is set when the store could not be read; drift is then not judged
	// for the entry.
	Err error
}

// Inventory is everything the audit judges: the platform's workspaces and
// keys, and each keys: entry's store record.
type Inventory struct {
	Workspaces []mistral.Workspace
	Keys       []mistral.Key
	// Records maps a keys: entry name to its store record.
	Records map[string]Record
	// InFlight names keys: entries with a rotation in flight: their extra
	// mrbacd-created keys are the rotation's, not drift.
	InFlight map[string]bool
	// InFlightKeys maps the old and new key ids of rotations in flight to
	// their keys: entry: between publish and revoke the old key is still the
	// entry's (whatever its name), not undeclared.
	InFlightKeys map[string]string
}

// Policy holds the audit's thresholds.
type Policy struct {
	UnusedAfter    time.Duration
	ExpiringWithin time.Duration
	// OverdueGrace is added to rotate_every before a key counts as overdue,
	// so a key due today that tonight's rotation will pick up is not flagged
	// by an audit that runs first.
	OverdueGrace time.Duration
}

// DefaultOverdueGrace is one day: the rotation job runs daily.
const DefaultOverdueGrace = 24 * time.Hour

// PolicyFrom reads the audit thresholds from the config, with defaults for
// unset values.
func PolicyFrom(cfg *config.Config) Policy {
	p := Policy{
		UnusedAfter:    cfg.Jobs.Audit.UnusedAfter.D(),
		ExpiringWithin: cfg.Jobs.Audit.ExpiringWithin.D(),
		OverdueGrace:   DefaultOverdueGrace,
	}
	if p.UnusedAfter <= 0 {
		p.UnusedAfter = config.DefaultUnusedAfter
	}
	if p.ExpiringWithin <= 0 {
		p.ExpiringWithin = config.DefaultExpiringWithin
	}
	return p
}

// managedName matches the names mrbacd gives the keys it creates:
// <entry name>-<yyyymmdd>-<short rotation id>.
var managedSuffix = regexp.MustCompile(`^-[0-9]{8}-[0-9A-Za-z]{4,32}$`)

// ManagedName reports whether keyName is one mrbacd creates for the keys:
// entry named entry.
func ManagedName(entry, keyName string) bool {
	rest, ok := strings.CutPrefix(keyName, entry)
	return ok && managedSuffix.MatchString(rest)
}

// workspaceIndex resolves config workspaces against the platform's.
type workspaceIndex struct {
	byUUID map[string]mistral.Workspace
	byName map[string]mistral.Workspace
	// declared maps a platform uuid to the config workspace name declaring it.
	declared map[string]string
	// uuidOf maps a config workspace name to the platform uuid ("" if missing).
	uuidOf map[string]string
}

func indexWorkspaces(cfg *config.Config, ws []mistral.Workspace) workspaceIndex {
	ix := workspaceIndex{byUUID: map[string]mistral.Workspace{}, byName: map[string]mistral.Workspace{},
		declared: map[string]string{}, uuidOf: map[string]string{}}
	for _, w := range ws {
		ix.byUUID[w.UUID] = w
		if _, dup := ix.byName[w.Name]; !dup {
			ix.byName[w.Name] = w
		}
	}
	for _, cw := range cfg.Workspaces {
		var w mistral.Workspace
		var ok bool
		if cw.UUID != "" {
			w, ok = ix.byUUID[cw.UUID]
		} else {
			w, ok = ix.byName[cw.Name]
		}
		if ok {
			ix.declared[w.UUID] = cw.Name
			ix.uuidOf[cw.Name] = w.UUID
		}
	}
	return ix
}

// keyWorkspace returns the config workspace name of a key ("" when the
// config declares none) and a display name.
func (ix workspaceIndex) keyWorkspace(k mistral.Key) (declared, display string) {
	display = k.WorkspaceName
	if display == "" {
		if w, ok := ix.byUUID[k.WorkspaceID]; ok {
			display = w.Name
		} else {
			display = k.WorkspaceID
		}
	}
	return ix.declared[k.WorkspaceID], display
}

// Evaluate judges inv against the config at time now and returns the
// findings sorted by severity, kind and id. It calls nothing: all input is
// in inv, so it is deterministic.
func Evaluate(cfg *config.Config, pol Policy, inv Inventory, now time.Time) []Finding {
	now = now.UTC()
	ix := indexWorkspaces(cfg, inv.Workspaces)
	var out []Finding
	add := func(f Finding) { out = append(out, f) }

	// Workspace drift.
	for _, cw := range cfg.Workspaces {
		if _, ok := ix.uuidOf[cw.Name]; ok {
			continue
		}
		how := "name"
		if cw.UUID != "" {
			how = "uuid " + cw.UUID
		}
		add(Finding{ID: string(KindWorkspaceDrift) + "/missing/" + cw.Name, Kind: KindWorkspaceDrift, Severity: SeverityCritical,
			Workspace: cw.Name,
			Detail:    fmt.Sprintf("workspace %s is declared in the config but the platform has none with that %s", cw.Name, how),
			Action:    "create the workspace on the platform, fix its name/uuid in the config, or remove it from the config"})
	}
	for _, w := range inv.Workspaces {
		if _, ok := ix.declared[w.UUID]; ok {
			continue
		}
		sev := SeverityWarning
		if w.IsDefault {
			sev = SeverityInfo
		}
		add(Finding{ID: string(KindWorkspaceDrift) + "/undeclared/" + w.UUID, Kind: KindWorkspaceDrift, Severity: sev,
			Workspace: w.Name,
			Detail:    fmt.Sprintf("workspace %s (%s) exists on the platform but the config does not declare it", w.Name, w.UUID),
			Action:    "declare it under workspaces: (with a budget) or archive it"})
	}

	// Which keys each keys: entry accounts for.
	entries := map[string]config.Key{}
	names := make([]string, 0, len(cfg.Keys))
	for _, e := range cfg.Keys {
		entries[e.Name] = e
		names = append(names, e.Name)
	}
	// Longest names first, so "dev-team" wins over "dev" for "dev-team-...".
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	byRecordID := map[string]string{}
	for name, r := range inv.Records {
		if r.Found && r.KeyID != "" {
			byRecordID[r.KeyID] = name
		}
	}
	live := map[string]bool{}
	for _, k := range inv.Keys {
		live[k.KeyID] = true
	}
	// A workspace with an entry whose record could not be read may hold that
	// entry's current key under any name: its keys are not judged undeclared.
	unsure := map[string]bool{}
	for _, e := range cfg.Keys {
		if r, ok := inv.Records[e.Name]; ok && r.Err != nil {
			unsure[e.Workspace] = true
		}
	}

	today := mistral.DateOf(now)
	for _, k := range inv.Keys {
		declaredWS, wsName := ix.keyWorkspace(k)
		base := Finding{KeyID: k.KeyID, KeyName: k.Name, HiddenKey: k.HiddenKey, Workspace: wsName}

		entry, current := byRecordID[k.KeyID]
		if !current {
			entry = inv.InFlightKeys[k.KeyID]
		}
		if entry == "" {
			for _, n := range names {
				e := entries[n]
				if ManagedName(n, k.Name) && declaredWS == e.Workspace && declaredWS != "" {
					entry = n
					break
				}
			}
		}
		base.Managed = entry

		// Undeclared.
		if entry == "" && !(declaredWS != "" && unsure[declaredWS]) {
			f := base
			f.ID, f.Kind, f.Severity = string(KindUndeclared)+"/"+k.KeyID, KindUndeclared, SeverityWarning
			if declaredWS == "" {
				f.Detail = fmt.Sprintf("key %s in workspace %s, which the config does not declare, is not managed by any keys: entry", k.Name, wsName)
			} else {
				f.Detail = fmt.Sprintf("key %s in workspace %s is not managed by any keys: entry", k.Name, wsName)
			}
			f.Action = "declare it under keys: so mrbacd rotates it, or revoke it"
			if k.Product != "" && k.Product != "API" {
				// A key a Mistral product made for its user (Mistral Code, Vibe).
				f.Severity = SeverityInfo
				f.Detail += fmt.Sprintf(" (a %s key)", k.Product)
				f.Action = fmt.Sprintf("check with its owner that the %s key is still wanted", k.Product)
			}
			add(f)
		}

		// Drift: an mrbacd-created key that the entry's record does not name.
		if entry != "" && !current && !inv.InFlight[entry] {
			if r, ok := inv.Records[entry]; ok && r.Err == nil {
				f := base
				f.ID, f.Kind, f.Severity = string(KindDrift)+"/"+k.KeyID, KindDrift, SeverityWarning
				if r.Found {
					f.Detail = fmt.Sprintf("key %s was created by mrbacd for %s but the store's record names key %s", k.Name, entry, r.KeyID)
				} else {
					f.Detail = fmt.Sprintf("key %s was created by mrbacd for %s but the store holds no record", k.Name, entry)
				}
				f.Action = fmt.Sprintf("no rotation of %s is in flight: revoke this key (it is an orphan of an interrupted rotation) after checking nothing uses it", entry)
				add(f)
			}
		}

		// Unused.
		unusedSince, unused := unusedFor(k, now, pol.UnusedAfter)
		if unused {
			f := base
			f.ID, f.Kind = string(KindUnused)+"/"+k.KeyID, KindUnused
			if k.LastUsed == nil {
				f.Detail = fmt.Sprintf("key %s has never been used and was created %s (%d days ago)", k.Name, k.CreatedAt.UTC().Format(time.DateOnly), days(unusedSince))
			} else {
				f.Detail = fmt.Sprintf("key %s was last used %s (%d days ago)", k.Name, k.LastUsed, days(unusedSince))
			}
			if entry == "" {
				f.Severity = SeverityWarning
				f.Action = "revoke it (or set jobs.audit.revoke_unused: true to have the audit do so)"
			} else {
				f.Severity = SeverityInfo
				f.Action = fmt.Sprintf("check whether %s's consumers still need it; remove the keys: entry and revoke the key if not", entry)
			}
			add(f)
		}

		// Overdue.
		if entry != "" {
			every := entries[entry].RotateEvery.D()
			if every <= 0 {
				every = config.DefaultRotateEvery
			}
			if age := now.Sub(k.CreatedAt); !k.CreatedAt.IsZero() && age > every+pol.OverdueGrace {
				f := base
				f.ID, f.Kind, f.Severity = string(KindOverdue)+"/"+k.KeyID, KindOverdue, SeverityWarning
				f.Detail = fmt.Sprintf("key %s of %s is %d days old; rotate_every is %s", k.Name, entry, days(age), config.Duration(every))
				f.Action = fmt.Sprintf("rotation is failing or off: check the rotate job's last runs, then run mrbacd rotate --key %s", entry)
				add(f)
			}
		}

		// Expiring.
		if k.ExpirationDate != nil {
			// Valid through the end of its expiration date.
			end := k.ExpirationDate.AddDays(1).In(time.UTC)
			if left := end.Sub(now); left <= pol.ExpiringWithin {
				f := base
				f.ID, f.Kind = string(KindExpiring)+"/"+k.KeyID, KindExpiring
				if k.Expired(today) {
					f.Detail = fmt.Sprintf("key %s expired on %s", k.Name, k.ExpirationDate)
				} else {
					f.Detail = fmt.Sprintf("key %s expires on %s (in %d days)", k.Name, k.ExpirationDate, days(left))
				}
				if entry != "" {
					f.Severity = SeverityCritical
					f.Action = fmt.Sprintf("rotate it before it expires: mrbacd rotate --key %s --force", entry)
				} else {
					f.Severity = SeverityWarning
					f.Action = "tell its owner; replace it or let it expire and delete it"
				}
				add(f)
			}
		}
	}

	// Drift: records naming keys the platform lacks; entries without records.
	for _, e := range cfg.Keys {
		r, ok := inv.Records[e.Name]
		if !ok || r.Err != nil {
			continue
		}
		if !r.Found {
			add(Finding{ID: string(KindDrift) + "/entry/" + e.Name, Kind: KindDrift, Severity: SeverityWarning,
				Managed: e.Name, Workspace: e.Workspace,
				Detail: fmt.Sprintf("managed key %s has no record in its %s store at %s", e.Name, e.Store.Backend, e.Store.Location()),
				Action: fmt.Sprintf("run mrbacd rotate --key %s --force to create and publish a key", e.Name)})
			continue
		}
		if r.KeyID == "" {
			add(Finding{ID: string(KindDrift) + "/entry/" + e.Name, Kind: KindDrift, Severity: SeverityWarning,
				Managed: e.Name, Workspace: e.Workspace,
				Detail: fmt.Sprintf("the record of managed key %s in its %s store at %s names no key id", e.Name, e.Store.Backend, e.Store.Location()),
				Action: fmt.Sprintf("run mrbacd rotate --key %s --force to publish a complete record", e.Name)})
			continue
		}
		if !live[r.KeyID] && !inv.InFlight[e.Name] {
			add(Finding{ID: string(KindDrift) + "/" + r.KeyID, Kind: KindDrift, Severity: SeverityCritical,
				KeyID: r.KeyID, Managed: e.Name, Workspace: e.Workspace,
				Detail: fmt.Sprintf("the store's record for %s names key %s, which the platform no longer has: its consumers hold a dead key", e.Name, r.KeyID),
				Action: fmt.Sprintf("run mrbacd rotate --key %s --force now", e.Name)})
		}
	}

	SortFindings(out)
	return out
}

// unusedFor reports how long k has gone unused and whether that exceeds after.
func unusedFor(k mistral.Key, now time.Time, after time.Duration) (time.Duration, bool) {
	if k.LastUsed != nil && !k.LastUsed.IsZero() {
		// last_used is a day: count from the end of it.
		since := now.Sub(k.LastUsed.AddDays(1).In(time.UTC))
		return max(since, 0), since > after
	}
	if k.CreatedAt.IsZero() {
		return 0, false
	}
	since := now.Sub(k.CreatedAt)
	return since, since > after
}

func days(d time.Duration) int { return int(d / (24 * time.Hour)) }

// SortFindings orders findings by severity, kind, then id.
func SortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Severity.Rank() != b.Severity.Rank() {
			return a.Severity.Rank() < b.Severity.Rank()
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.ID < b.ID
	})
}
