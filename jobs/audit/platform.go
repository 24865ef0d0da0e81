package audit

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/jobs/budget"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
)

// spendLimitDrift: a declared workspace whose platform spend_limit differs
// from its monthly_budget_usd (a workspace_drift, warning). A platform that
// sends no spend_limit object is not judged.
func spendLimitDrift(ix *evalIndex) []Finding {
	var out []Finding
	for _, cw := range ix.cfg.Workspaces {
		uuid, ok := ix.ws.uuidOf[cw.Name]
		if !ok {
			continue
		}
		diff, differs := budget.LimitDiffers(cw.MonthlyBudgetUSD, ix.ws.byUUID[uuid].SpendLimit)
		if !differs {
			continue
		}
		out = append(out, Finding{ID: string(KindWorkspaceDrift) + "/spend_limit/" + cw.Name, Kind: KindWorkspaceDrift,
			Severity: SeverityWarning, Workspace: cw.Name,
			Detail: fmt.Sprintf("workspace %s: %s", cw.Name, diff),
			Action: "set the workspace's spend limit in the platform's console to monthly_budget_usd, or change monthly_budget_usd to match"})
	}
	return out
}

// Audit log event types and target types the judge ranks.
const (
	eventKeyCreate = "api_key.create"
	eventKeyDelete = "api_key.delete"
)

// platformChanges: each new audit log event that mrbacd did not make is
// reported once. Rate-limit rule, key-policy and spend-limit changes are
// warnings; a key created by hand is info unless no keys: entry accounts
// for it (then a warning); any other change is info.
func platformChanges(ix *evalIndex) []Finding {
	var out []Finding
	for _, e := range ix.inv.Changes {
		if ix.own(e) {
			continue
		}
		f := Finding{ID: string(KindPlatformChange) + "/" + eventID(e), Kind: KindPlatformChange,
			Event: e.EventType, Actor: e.Actor(), EventTime: e.Time.UTC().Format(time.RFC3339Nano)}
		if e.WorkspaceUUID != "" {
			f.Workspace = e.WorkspaceUUID
			if w, ok := ix.ws.byUUID[e.WorkspaceUUID]; ok && w.Name != "" {
				f.Workspace = w.Name
			}
		}
		target := e.TargetType
		if t := e.Target(); t != "" {
			target += " " + t
		}
		if isKeyEvent(e) {
			f.KeyID, f.KeyName = targetKeyID(e), e.TargetMetadata["name"]
		}
		f.Detail = fmt.Sprintf("%s by %s at %s on %s", e.EventType, e.Actor(), f.EventTime, strings.TrimSpace(target))
		if v := changeValues(e); v != "" {
			f.Detail += " (" + v + ")"
		}
		f.Severity, f.Action = ix.judgeChange(e)
		out = append(out, f)
	}
	return out
}

// judgeChange ranks one change and says what to do about it.
func (ix *evalIndex) judgeChange(e mistral.AuditEvent) (Severity, string) {
	ev, target := strings.ToLower(e.EventType), strings.ToUpper(e.TargetType)
	switch {
	case strings.HasPrefix(ev, "rate_limit.") || strings.HasPrefix(target, "RATE_LIMIT"):
		return SeverityWarning, "confirm the rate-limit rule change was intended: it changes what every key of the organization may send"
	case strings.HasPrefix(ev, "api_key_policy.") || target == "API_KEY_POLICY":
		return SeverityWarning, "confirm the key-expiration policy change was intended: it shortens the life of every key created from now on (mrbacd plan shows the keys it makes due early)"
	case strings.Contains(ev, "limit") || strings.Contains(target, "LIMIT"):
		return SeverityWarning, "confirm the spend limit change was intended and that monthly_budget_usd in the config still matches it"
	case ev == eventKeyCreate && !ix.declaredKey(e):
		return SeverityWarning, "a key no keys: entry accounts for was created by hand: declare it under keys: so mrbacd rotates it, or revoke it"
	case ev == eventKeyCreate:
		return SeverityInfo, "a key a keys: entry accounts for was created by hand: check it was meant to replace the managed key"
	}
	return SeverityInfo, "check that the change was intended"
}

// own reports whether mrbacd made the change: an API key's creation or
// deletion of a key its journaled rotations created or replaced (by id, or
// by the new key's name for a duplicate a retried create made).
func (ix *evalIndex) own(e mistral.AuditEvent) bool {
	if e.ActorType != mistral.ActorAPIKey || !isKeyEvent(e) {
		return false
	}
	if id := targetKeyID(e); id != "" && ix.inv.OwnKeyIDs[id] {
		return true
	}
	name := e.TargetMetadata["name"]
	if ix.inv.OwnKeyNames == nil {
		// No journal to tell: a key named as mrbacd names its keys.
		for _, n := range ix.names {
			if ManagedName(n, name) {
				return true
			}
		}
		return false
	}
	return name != "" && ix.inv.OwnKeyNames[name]
}

// declaredKey reports whether a keys: entry accounts for the key e created:
// its record names it, or it is live and its name and workspace are an
// entry's managed ones.
func (ix *evalIndex) declaredKey(e mistral.AuditEvent) bool {
	id := targetKeyID(e)
	if _, ok := ix.byRecordID[id]; ok && id != "" {
		return true
	}
	for _, k := range ix.inv.Keys {
		if k.KeyID == id {
			return ix.view(k).entry != ""
		}
	}
	// Gone since: judge by name only.
	name := e.TargetMetadata["name"]
	for _, n := range ix.names {
		if ManagedName(n, name) {
			return true
		}
	}
	return false
}

func isKeyEvent(e mistral.AuditEvent) bool {
	return e.EventType == eventKeyCreate || e.EventType == eventKeyDelete
}

func targetKeyID(e mistral.AuditEvent) string {
	for _, k := range []string{"key_id", "api_key_id", "id"} {
		if v := e.TargetMetadata[k]; v != "" {
			return v
		}
	}
	return ""
}

// eventID is the event's stable id: its log_id, else its time and type.
func eventID(e mistral.AuditEvent) string {
	if e.ID != 0 {
		return strconv.FormatInt(e.ID, 10)
	}
	return e.Time.UTC().Format(time.RFC3339Nano) + "/" + e.EventType + "/" + e.Target()
}

// changeValues renders the event's metadata ("max_days=30, value=50"),
// sorted, without anything that looks like a secret.
func changeValues(e mistral.AuditEvent) string {
	var parts []string
	for k, v := range e.EventMetadata {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "key") && !strings.Contains(lk, "id") && !strings.Contains(lk, "name") ||
			strings.Contains(lk, "secret") || strings.Contains(lk, "token") {
			continue
		}
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// AuditSource names the platform's audit log in the journal's cursors.
const AuditSource = "mistral"

// ChangeLookback is how far back the first read of the audit log goes
// (and every read without a journal).
const ChangeLookback = 7 * 24 * time.Hour

// ownLookback is how long before the cursor a rotation may have begun and
// still make or delete keys after it (a propagation wait is hours).
const ownLookback = 30 * 24 * time.Hour

// readChanges reads the audit log's events past the journaled cursor and
// the keys mrbacd's rotations made or replaced. An unreadable log is kept
// in inv.changesErr, not returned: the rest of the audit goes on.
func (j *Job) readChanges(ctx context.Context, inv *Inventory) error {
	if j.AuditLog == nil {
		return nil
	}
	var cursor journal.AuditCursor
	if j.Journal != nil {
		var err error
		if cursor, err = j.Journal.AuditCursor(ctx, AuditSource); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	since := cursor.Time
	if since.IsZero() {
		since = j.now().Add(-ChangeLookback)
	}
	// From just before the cursor's time: events sharing it that were not
	// read yet come back, and the cursor's ids drop the ones that were.
	events, err := j.AuditLog.AuditLogs(ctx, mistral.AuditQuery{After: since.Add(-time.Microsecond)})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("audit: audit log: %w", err)
		}
		inv.changesErr = err
		return nil
	}
	next := cursor
	for _, e := range events {
		id := eventID(e)
		if cursor.Seen(id, e.Time) || e.Time.Before(since) {
			continue
		}
		inv.Changes = append(inv.Changes, e)
		next = next.Advance(id, e.Time)
	}
	inv.next = next
	if j.Journal == nil || len(inv.Changes) == 0 {
		return nil
	}
	inv.OwnKeyIDs, inv.OwnKeyNames = map[string]bool{}, map[string]bool{}
	rots, err := j.Journal.RecentRotations(ctx, since.Add(-ownLookback), 0)
	if err != nil {
		return fmt.Errorf("audit: rotations: %w", err)
	}
	for _, r := range rots {
		for _, id := range []string{r.OldKeyID, r.NewKeyID} {
			if id != "" {
				inv.OwnKeyIDs[id] = true
			}
		}
		if r.NewKeyName != "" {
			inv.OwnKeyNames[r.NewKeyName] = true
		}
	}
	return nil
}

// advanceCursor moves the journal's cursor past the events this run read
// and settles their findings (reported now, or never to be), in one
// transaction. Called once the findings are synced and the digest queued:
// a crash before it reads the same events again, which the journal already
// holds as reported (persisting, not new).
func (j *Job) advanceCursor(ctx context.Context, inv Inventory, current []Finding, now time.Time) error {
	if inv.next.IsZero() || len(inv.Changes) == 0 {
		return nil
	}
	var settle []string
	for _, f := range current {
		if f.Kind == KindPlatformChange {
			settle = append(settle, f.ID)
		}
	}
	if err := j.Journal.AdvanceAuditCursor(ctx, AuditSource, inv.next, Scope, settle, now); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}
