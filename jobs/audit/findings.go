package audit

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/journal"
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
	// KindPlatformChange: a change in the platform's audit log that mrbacd
	// did not make (see platformChanges).
	KindPlatformChange Kind = "platform_change"
)

// Kinds lists every kind in report order.
var Kinds = []Kind{KindDrift, KindExpiring, KindOverdue, KindPlatformChange, KindUndeclared, KindUnused, KindWorkspaceDrift}

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
	// Event, Actor and EventTime describe a platform_change: the audit
	// log's event type, who made the change and when (RFC 3339).
	Event     string `json:"event,omitempty"`
	Actor     string `json:"actor,omitempty"`
	EventTime string `json:"event_time,omitempty"`
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
	case f.Event != "" && f.Workspace != "":
		return f.Event + " in " + f.Workspace
	case f.Event != "":
		return f.Event
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
	// Changes are the audit log's events not read before (see Job.AuditLog),
	// oldest first; OwnKeyIDs and OwnKeyNames are the key ids and new key
	// names mrbacd's journaled rotations created or deleted, whose
	// api_key.create and api_key.delete events are its own, not findings.
	Changes     []mistral.AuditEvent
	OwnKeyIDs   map[string]bool
	OwnKeyNames map[string]bool
	// next is the cursor past Changes; changesErr why they could not be read.
	next       journal.AuditCursor
	changesErr error
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
// in inv, so it is deterministic. Each kind has its judge over a shared
// index (evalIndex): workspace drift, then per platform key undeclared,
// orphan drift, unused, overdue and expiring, then the records' drift.
func Evaluate(cfg *config.Config, pol Policy, inv Inventory, now time.Time) []Finding {
	ix := newEvalIndex(cfg, pol, inv, now)
	out := workspaceDrift(ix)
	for _, k := range inv.Keys {
		kv := ix.view(k)
		for _, judge := range keyJudges {
			if f, ok := judge(ix, kv); ok {
				out = append(out, f)
			}
		}
	}
	out = append(out, recordDrift(ix)...)
	out = append(out, spendLimitDrift(ix)...)
	out = append(out, platformChanges(ix)...)
	SortFindings(out)
	return out
}

// keyJudges judge one platform key each for one kind.
var keyJudges = []func(ix *evalIndex, kv keyView) (Finding, bool){undeclared, orphanDrift, unused, overdue, expiring}

// evalIndex is what every judge reads: the inputs, the workspaces resolved
// and the keys: entries indexed.
type evalIndex struct {
	cfg   *config.Config
	pol   Policy
	inv   Inventory
	now   time.Time
	today mistral.Date
	ws    workspaceIndex
	// entries are the keys: entries by name; names lists them longest
	// first, so "dev-team" wins over "dev" for "dev-team-...".
	entries map[string]config.Key
	names   []string
	// byRecordID maps the key id a store record names to its entry.
	byRecordID map[string]string
	// live holds the platform's key ids.
	live map[string]bool
	// unsure holds the workspaces with an entry whose record could not be
	// read: their keys may be that entry's under any name, so none is
	// judged undeclared.
	unsure map[string]bool
}

func newEvalIndex(cfg *config.Config, pol Policy, inv Inventory, now time.Time) *evalIndex {
	now = now.UTC()
	ix := &evalIndex{cfg: cfg, pol: pol, inv: inv, now: now, today: mistral.DateOf(now), ws: indexWorkspaces(cfg, inv.Workspaces),
		entries: map[string]config.Key{}, byRecordID: map[string]string{}, live: map[string]bool{}, unsure: map[string]bool{}}
	for _, e := range cfg.Keys {
		ix.entries[e.Name] = e
		ix.names = append(ix.names, e.Name)
		if r, ok := inv.Records[e.Name]; ok && r.Err != nil {
			ix.unsure[e.Workspace] = true
		}
	}
	sort.Slice(ix.names, func(i, j int) bool { return len(ix.names[i]) > len(ix.names[j]) })
	for name, r := range inv.Records {
		if r.Found && r.KeyID != "" {
			ix.byRecordID[r.KeyID] = name
		}
	}
	for _, k := range inv.Keys {
		ix.live[k.KeyID] = true
	}
	return ix
}

// keyView is one platform key as the judges see it.
type keyView struct {
	k mistral.Key
	// base is a finding about k with no kind yet.
	base Finding
	// declaredWS is the config workspace of k ("" when undeclared).
	declaredWS string
	// entry is the keys: entry k belongs to ("" for none); current is true
	// when the entry's store record names k.
	entry   string
	current bool
}

// view resolves k's workspace and the keys: entry it belongs to: the one
// whose record names it, else the rotation in flight that made it, else
// the entry whose managed-name pattern and workspace it matches.
func (ix *evalIndex) view(k mistral.Key) keyView {
	declaredWS, wsName := ix.ws.keyWorkspace(k)
	kv := keyView{k: k, declaredWS: declaredWS,
		base: Finding{KeyID: k.KeyID, KeyName: k.Name, HiddenKey: k.HiddenKey, Workspace: wsName}}
	kv.entry, kv.current = ix.byRecordID[k.KeyID]
	if !kv.current {
		kv.entry = ix.inv.InFlightKeys[k.KeyID]
	}
	if kv.entry == "" && declaredWS != "" {
		for _, n := range ix.names {
			if ManagedName(n, k.Name) && declaredWS == ix.entries[n].Workspace {
				kv.entry = n
				break
			}
		}
	}
	kv.base.Managed = kv.entry
	return kv
}

// workspaceDrift: declared workspaces missing on the platform, platform
// workspaces the config does not declare.
func workspaceDrift(ix *evalIndex) []Finding {
	var out []Finding
	for _, cw := range ix.cfg.Workspaces {
		if _, ok := ix.ws.uuidOf[cw.Name]; ok {
			continue
		}
		how := "name"
		if cw.UUID != "" {
			how = "uuid " + cw.UUID
		}
		out = append(out, Finding{ID: string(KindWorkspaceDrift) + "/missing/" + cw.Name, Kind: KindWorkspaceDrift, Severity: SeverityCritical,
			Workspace: cw.Name,
			Detail:    fmt.Sprintf("workspace %s is declared in the config but the platform has none with that %s", cw.Name, how),
			Action:    "create the workspace on the platform, fix its name/uuid in the config, or remove it from the config"})
	}
	for _, w := range ix.inv.Workspaces {
		if _, ok := ix.ws.declared[w.UUID]; ok {
			continue
		}
		sev := SeverityWarning
		if w.IsDefault {
			sev = SeverityInfo
		}
		out = append(out, Finding{ID: string(KindWorkspaceDrift) + "/undeclared/" + w.UUID, Kind: KindWorkspaceDrift, Severity: sev,
			Workspace: w.Name,
			Detail:    fmt.Sprintf("workspace %s (%s) exists on the platform but the config does not declare it", w.Name, w.UUID),
			Action:    "declare it under workspaces: (with a budget) or archive it"})
	}
	return out
}

// undeclared: a live key no keys: entry accounts for.
func undeclared(ix *evalIndex, kv keyView) (Finding, bool) {
	if kv.entry != "" || (kv.declaredWS != "" && ix.unsure[kv.declaredWS]) {
		return Finding{}, false
	}
	k, f := kv.k, kv.base
	f.ID, f.Kind, f.Severity = string(KindUndeclared)+"/"+k.KeyID, KindUndeclared, SeverityWarning
	if kv.declaredWS == "" {
		f.Detail = fmt.Sprintf("key %s in workspace %s, which the config does not declare, is not managed by any keys: entry", k.Name, f.Workspace)
	} else {
		f.Detail = fmt.Sprintf("key %s in workspace %s is not managed by any keys: entry", k.Name, f.Workspace)
	}
	f.Action = "declare it under keys: so mrbacd rotates it, or revoke it"
	if k.Product != "" && k.Product != "API" {
		// A key a Mistral product made for its user (Mistral Code, Vibe).
		f.Severity = SeverityInfo
		f.Detail += fmt.Sprintf(" (a %s key)", k.Product)
		f.Action = fmt.Sprintf("check with its owner that the %s key is still wanted", k.Product)
	}
	return f, true
}

// orphanDrift: an mrbacd-created key that its entry's readable record does
// not name, with no rotation of the entry in flight.
func orphanDrift(ix *evalIndex, kv keyView) (Finding, bool) {
	if kv.entry == "" || kv.current || ix.inv.InFlight[kv.entry] {
		return Finding{}, false
	}
	r, ok := ix.inv.Records[kv.entry]
	if !ok || r.Err != nil {
		return Finding{}, false
	}
	k, f := kv.k, kv.base
	f.ID, f.Kind, f.Severity = string(KindDrift)+"/"+k.KeyID, KindDrift, SeverityWarning
	if r.Found {
		f.Detail = fmt.Sprintf("key %s was created by mrbacd for %s but the store's record names key %s", k.Name, kv.entry, r.KeyID)
	} else {
		f.Detail = fmt.Sprintf("key %s was created by mrbacd for %s but the store holds no record", k.Name, kv.entry)
	}
	f.Action = fmt.Sprintf("no rotation of %s is in flight: revoke this key (it is an orphan of an interrupted rotation) after checking nothing uses it", kv.entry)
	return f, true
}

// unused: last used (or, never used, created) longer ago than unused_after.
func unused(ix *evalIndex, kv keyView) (Finding, bool) {
	k := kv.k
	since, isUnused := unusedFor(k, ix.now, ix.pol.UnusedAfter)
	if !isUnused {
		return Finding{}, false
	}
	f := kv.base
	f.ID, f.Kind = string(KindUnused)+"/"+k.KeyID, KindUnused
	if k.LastUsed == nil {
		f.Detail = fmt.Sprintf("key %s has never been used and was created %s (%d days ago)", k.Name, k.CreatedAt.UTC().Format(time.DateOnly), days(since))
	} else {
		f.Detail = fmt.Sprintf("key %s was last used %s (%d days ago)", k.Name, k.LastUsed, days(since))
	}
	if kv.entry == "" {
		f.Severity = SeverityWarning
		f.Action = "revoke it (or set jobs.audit.revoke_unused: true to have the audit do so)"
	} else {
		f.Severity = SeverityInfo
		f.Action = fmt.Sprintf("check whether %s's consumers still need it; remove the keys: entry and revoke the key if not", kv.entry)
	}
	return f, true
}

// overdue: a managed key older than its rotate_every plus the grace.
func overdue(ix *evalIndex, kv keyView) (Finding, bool) {
	k := kv.k
	if kv.entry == "" || k.CreatedAt.IsZero() {
		return Finding{}, false
	}
	every := ix.entries[kv.entry].RotateEvery.D()
	if every <= 0 {
		every = config.DefaultRotateEvery
	}
	age := ix.now.Sub(k.CreatedAt)
	if age <= every+ix.pol.OverdueGrace {
		return Finding{}, false
	}
	f := kv.base
	f.ID, f.Kind, f.Severity = string(KindOverdue)+"/"+k.KeyID, KindOverdue, SeverityWarning
	f.Detail = fmt.Sprintf("key %s of %s is %d days old; rotate_every is %s", k.Name, kv.entry, days(age), config.Duration(every))
	f.Action = fmt.Sprintf("rotation is failing or off: check the rotate job's last runs, then run mrbacd rotate --key %s", kv.entry)
	return f, true
}

// expiring: an expiration date within expiring_within (or past).
func expiring(ix *evalIndex, kv keyView) (Finding, bool) {
	k := kv.k
	if k.ExpirationDate == nil {
		return Finding{}, false
	}
	// Valid through the end of its expiration date.
	left := k.ExpirationDate.AddDays(1).In(time.UTC).Sub(ix.now)
	if left > ix.pol.ExpiringWithin {
		return Finding{}, false
	}
	f := kv.base
	f.ID, f.Kind = string(KindExpiring)+"/"+k.KeyID, KindExpiring
	if k.Expired(ix.today) {
		f.Detail = fmt.Sprintf("key %s expired on %s", k.Name, k.ExpirationDate)
	} else {
		f.Detail = fmt.Sprintf("key %s expires on %s (in %d days)", k.Name, k.ExpirationDate, days(left))
	}
	if kv.entry != "" {
		f.Severity = SeverityCritical
		f.Action = fmt.Sprintf("rotate it before it expires: mrbacd rotate --key %s --force", kv.entry)
	} else {
		f.Severity = SeverityWarning
		f.Action = "tell its owner; replace it or let it expire and delete it"
	}
	return f, true
}

// recordDrift: entries without a (complete) record, and records naming keys
// the platform lacks.
func recordDrift(ix *evalIndex) []Finding {
	var out []Finding
	for _, e := range ix.cfg.Keys {
		r, ok := ix.inv.Records[e.Name]
		if !ok || r.Err != nil {
			continue
		}
		entry := Finding{ID: string(KindDrift) + "/entry/" + e.Name, Kind: KindDrift, Severity: SeverityWarning,
			Managed: e.Name, Workspace: e.Workspace}
		switch {
		case !r.Found:
			entry.Detail = fmt.Sprintf("managed key %s has no record in its %s store at %s", e.Name, e.Store.Backend, e.Store.Location())
			entry.Action = fmt.Sprintf("run mrbacd rotate --key %s --force to create and publish a key", e.Name)
			out = append(out, entry)
		case r.KeyID == "":
			entry.Detail = fmt.Sprintf("the record of managed key %s in its %s store at %s names no key id", e.Name, e.Store.Backend, e.Store.Location())
			entry.Action = fmt.Sprintf("run mrbacd rotate --key %s --force to publish a complete record", e.Name)
			out = append(out, entry)
		case !ix.live[r.KeyID] && !ix.inv.InFlight[e.Name]:
			out = append(out, Finding{ID: string(KindDrift) + "/" + r.KeyID, Kind: KindDrift, Severity: SeverityCritical,
				KeyID: r.KeyID, Managed: e.Name, Workspace: e.Workspace,
				Detail: fmt.Sprintf("the store's record for %s names key %s, which the platform no longer has: its consumers hold a dead key", e.Name, r.KeyID),
				Action: fmt.Sprintf("run mrbacd rotate --key %s --force now", e.Name)})
		}
	}
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
