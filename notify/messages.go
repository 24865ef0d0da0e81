package notify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

// Message builders: jobs pass plain data, get a Notification with a stable
// Dedupe id, and hand it to Outbox.Enqueue. Inputs carry names, ids and
// hidden_key values only, never key material.

// DefaultTop is how many findings a digest lists by default.
const DefaultTop = 10

// AuditDigest is one audit run's outcome, for AuditDigestMessage.
type AuditDigest struct {
	At         time.Time
	Scope      string // findings scope given to journal.SyncFindings (default "audit")
	Workspaces int    // workspaces scanned
	Keys       int    // keys scanned
	// Delta is journal.SyncFindings's answer: what is new, persisting, resolved.
	Delta journal.FindingsDelta
	// Revoked lists keys revoked by revoke_unused ("name (key_id)").
	Revoked []string
	DryRun  bool
	// Errors are partial failures (a workspace that could not be listed...).
	Errors []string
	// Top is how many new findings to list (default DefaultTop).
	Top int
}

// AuditDigestMessage is the nightly digest: counts by kind, the top new
// findings, what was resolved since the last audit. Persisting findings get a
// count line only. Severity: critical when a new finding is critical or the
// audit had errors, warning when anything is new, info otherwise.
func AuditDigestMessage(d AuditDigest) Notification {
	if d.Scope == "" {
		d.Scope = "audit"
	}
	if d.Top <= 0 {
		d.Top = DefaultTop
	}
	at := d.At.UTC()
	open := len(d.Delta.New) + len(d.Delta.Persisting)
	sev := Info
	if len(d.Delta.New) > 0 {
		sev = Warning
	}
	for _, f := range d.Delta.New {
		if s, err := ParseSeverity(f.Severity); err == nil && s > sev {
			sev = s
		}
	}
	if len(d.Errors) > 0 {
		sev = Critical
	}
	title := fmt.Sprintf("Key audit %s: %d new, %d open, %d resolved", at.Format("2006-01-02"), len(d.Delta.New), open, len(d.Delta.Resolved))
	if d.DryRun {
		title += " (dry run)"
	}
	n := Notification{
		Kind: KindAuditDigest, Severity: sev, Title: title,
		Fields: []Field{
			{"Workspaces scanned", strconv.Itoa(d.Workspaces)},
			{"Keys scanned", strconv.Itoa(d.Keys)},
			{"New findings", strconv.Itoa(len(d.Delta.New))},
			{"Still open", strconv.Itoa(len(d.Delta.Persisting))},
			{"Resolved", strconv.Itoa(len(d.Delta.Resolved))},
		},
		Context: "mrbacd audit · " + at.Format(time.RFC3339),
	}
	if open > 0 {
		counts := map[string]int{}
		for _, f := range d.Delta.New {
			counts[f.Kind]++
		}
		for _, f := range d.Delta.Persisting {
			counts[f.Kind]++
		}
		kinds := make([]string, 0, len(counts))
		for k := range counts {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		lines := make([]string, 0, len(kinds))
		for _, k := range kinds {
			lines = append(lines, fmt.Sprintf("%s: %d", k, counts[k]))
		}
		n.Sections = append(n.Sections, Section{Title: "Open findings by kind", Lines: lines})
	}
	if len(d.Delta.New) > 0 {
		fs := sortedFindings(d.Delta.New)
		lines := findingLines(fs, d.Top)
		n.Targets = FindingTargets(d.Scope, fs, d.Top)
		n.Sections = append(n.Sections, Section{Title: "New since the last audit", Lines: lines})
	}
	if len(d.Delta.Resolved) > 0 {
		fs := sortedFindings(d.Delta.Resolved)
		var lines []string
		for i, f := range fs {
			if i == d.Top {
				lines = append(lines, fmt.Sprintf("… and %d more", len(fs)-d.Top))
				break
			}
			lines = append(lines, fmt.Sprintf("%s: %s", f.Kind, f.Subject))
		}
		n.Sections = append(n.Sections, Section{Title: "Resolved since the last audit", Lines: lines})
	}
	if len(d.Revoked) > 0 {
		t := "Revoked (unused, undeclared)"
		if d.DryRun {
			t = "Would revoke (dry run)"
		}
		n.Sections = append(n.Sections, Section{Title: t, Lines: d.Revoked})
	}
	if len(d.Errors) > 0 {
		n.Sections = append(n.Sections, Section{Title: "Audit errors (results incomplete)", Lines: d.Errors})
	}
	n.Text = plainText(n)
	ids := []string{d.Scope, at.Format("2006-01-02"), strconv.FormatBool(d.DryRun)}
	for _, f := range d.Delta.New {
		ids = append(ids, "n:"+f.ID)
	}
	for _, f := range d.Delta.Persisting {
		ids = append(ids, "p:"+f.ID)
	}
	for _, f := range d.Delta.Resolved {
		ids = append(ids, "r:"+f.ID)
	}
	ids = append(ids, d.Revoked...)
	ids = append(ids, d.Errors...)
	n.Dedupe = KindAuditDigest + ":" + d.Scope + ":" + at.Format("2006-01-02") + ":" + digest(ids)
	return n
}

var severityRank = map[string]int{"critical": 0, "warning": 1, "info": 2}

func sortedFindings(in []journal.Finding) []journal.Finding {
	fs := append([]journal.Finding(nil), in...)
	sort.SliceStable(fs, func(i, j int) bool {
		ri, okI := severityRank[fs[i].Severity]
		rj, okJ := severityRank[fs[j].Severity]
		if !okI {
			ri = 3
		}
		if !okJ {
			rj = 3
		}
		if ri != rj {
			return ri < rj
		}
		if fs[i].Kind != fs[j].Kind {
			return fs[i].Kind < fs[j].Kind
		}
		return fs[i].ID < fs[j].ID
	})
	return fs
}

func findingLines(fs []journal.Finding, top int) []string {
	var lines []string
	for i, f := range fs {
		if i == top {
			lines = append(lines, fmt.Sprintf("… and %d more", len(fs)-top))
			break
		}
		l := fmt.Sprintf("[%s] %s: %s", f.Severity, f.Kind, f.Subject)
		if f.Detail != "" {
			l += " — " + f.Detail
		}
		if f.Action != "" {
			l += ". Action: " + f.Action
		}
		lines = append(lines, l)
	}
	return lines
}

// FindingResolvedMessage announces, once, that a reported finding is gone.
func FindingResolvedMessage(scope string, f journal.Finding) Notification {
	n := Notification{
		Kind: KindFindingResolved, Severity: Info,
		Title:  fmt.Sprintf("Resolved: %s %s", f.Kind, f.Subject),
		Fields: []Field{{"Finding", f.ID}, {"First seen", day(f.FirstSeen)}, {"Resolved", day(f.ResolvedAt)}},
	}
	if f.Detail != "" {
		n.Sections = []Section{{Title: "Was", Lines: []string{f.Detail}}}
	}
	n.Text = plainText(n)
	n.Dedupe = fmt.Sprintf("%s:%s:%s:%d", KindFindingResolved, scope, f.ID, f.ResolvedAt.Unix())
	return n
}

// BudgetAlert is one workspace's spend crossing a threshold, or its forecast
// exceeding the budget.
type BudgetAlert struct {
	Workspace string
	Month     string  // "2006-01"
	Threshold float64 // the crossed fraction (0.5, 0.8, 1.0); ignored for forecasts
	SpendUSD  float64 // spend so far this month
	BudgetUSD float64 // monthly_budget_usd
	// Forecast marks a forecast alert: ForecastUSD (month-end spend at the
	// current run rate) exceeds the budget.
	Forecast    bool
	ForecastUSD float64
	// OrgSpendLimitUSD is the organization's spend limit (0: unknown).
	OrgSpendLimitUSD float64
	At               time.Time
}

// BudgetAlertMessage alerts once per workspace, threshold and month (the
// Dedupe id says so), or once per workspace and month for a forecast.
// Severity: critical at 100%, warning from 80% and for forecasts, info below.
func BudgetAlertMessage(a BudgetAlert) Notification {
	pct := 0.0
	if a.BudgetUSD > 0 {
		pct = a.SpendUSD / a.BudgetUSD * 100
	}
	n := Notification{Kind: KindBudgetAlert, Context: "mrbacd budget · " + a.At.UTC().Format(time.RFC3339)}
	n.Fields = []Field{
		{"Workspace", a.Workspace},
		{"Month", a.Month},
		{"Spend", usd(a.SpendUSD)},
		{"Budget", usd(a.BudgetUSD)},
		{"Used", fmt.Sprintf("%.0f%%", pct)},
	}
	if a.Forecast {
		n.Kind, n.Severity = KindBudgetForecast, Warning
		n.Title = fmt.Sprintf("Budget forecast: %s on track for %s of %s in %s", a.Workspace, usd(a.ForecastUSD), usd(a.BudgetUSD), a.Month)
		n.Fields = append(n.Fields, Field{"Forecast", usd(a.ForecastUSD)})
		n.Sections = []Section{{Title: "What to do", Lines: []string{
			"Check which keys and models drive the spend (mrbacd budget --json), then lower rpm or model access for the workspace, or raise monthly_budget_usd if expected."}}}
		n.Dedupe = fmt.Sprintf("%s:%s:%s", KindBudgetForecast, a.Workspace, a.Month)
	} else {
		switch {
		case a.Threshold >= 1:
			n.Severity = Critical
		case a.Threshold >= 0.8:
			n.Severity = Warning
		default:
			n.Severity = Info
		}
		n.Title = fmt.Sprintf("Budget: %s passed %.0f%% of its %s monthly budget (%s spent)", a.Workspace, a.Threshold*100, a.Month, usd(a.SpendUSD))
		n.Fields = append(n.Fields, Field{"Threshold", fmt.Sprintf("%.0f%%", a.Threshold*100)})
		if a.ForecastUSD > 0 {
			n.Fields = append(n.Fields, Field{"Forecast", usd(a.ForecastUSD)})
		}
		n.Dedupe = fmt.Sprintf("%s:%s:%s:%s", KindBudgetAlert, a.Workspace, strconv.FormatFloat(a.Threshold, 'f', -1, 64), a.Month)
	}
	if a.OrgSpendLimitUSD > 0 {
		n.Fields = append(n.Fields, Field{"Org spend limit", usd(a.OrgSpendLimitUSD)})
	}
	n.Text = plainText(n)
	return n
}

// RotationDone is one successful rotation in a digest.
type RotationDone struct {
	KeyName    string
	RotationID string
	OldKeyID   string // "" for a bootstrap
	NewKeyID   string
	NewKeyName string
	// Note says how the key-expiration policy moved the rotation ("" when
	// it did not).
	Note string
}

// RotationDigest summarizes one rotation pass (quiet: info severity).
type RotationDigest struct {
	At      time.Time
	Rotated []RotationDone
	Failed  int // failures are reported one by one by RotationFailureMessage
	NotDue  int // keys checked and not due
}

// RotationDigestMessage is the quiet summary of successful rotations. Its
// Dedupe id derives from the rotation ids, so re-running a pass that rotated
// nothing new does not repeat it. Callers skip it when Rotated is empty.
func RotationDigestMessage(d RotationDigest) Notification {
	n := Notification{
		Kind: KindRotationDigest, Severity: Info,
		Title:   fmt.Sprintf("Key rotation: %d rotated, %d failed, %d not due", len(d.Rotated), d.Failed, d.NotDue),
		Context: "mrbacd rotate · " + d.At.UTC().Format(time.RFC3339),
	}
	rs := append([]RotationDone(nil), d.Rotated...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].KeyName < rs[j].KeyName })
	var lines, ids []string
	for _, r := range rs {
		old := r.OldKeyID
		if old == "" {
			old = "none (bootstrap)"
		}
		line := fmt.Sprintf("%s: %s → %s (%s, rotation %s)", r.KeyName, old, r.NewKeyID, r.NewKeyName, r.RotationID)
		if r.Note != "" {
			line += ". " + r.Note
		}
		lines = append(lines, line)
		ids = append(ids, r.RotationID)
	}
	if len(lines) > 0 {
		n.Sections = []Section{{Title: "Rotated", Lines: lines}}
	}
	n.Text = plainText(n)
	n.Dedupe = KindRotationDigest + ":" + digest(ids)
	return n
}

// RotationFailure is one failed rotation (loud: critical, one message each).
type RotationFailure struct {
	KeyName    string
	Workspace  string
	RotationID string
	Step       journal.Step // the step that failed: create, verify, publish, propagate, reverify, revoke
	Error      string       // no key material
	OldKeyID   string
	NewKeyID   string
	NewKeyName string
	// Published: the store already serves the new key (failure after publish).
	Published bool
	// NewKeyDeleted: the new key was deleted on failure (before publish).
	NewKeyDeleted bool
	// InFlight: the rotation stays journaled and the next run resumes it
	// (always so after publish; before publish when cleaning up failed).
	InFlight bool
	// StoreUnavailable: the failure was the secret store being unreachable.
	StoreUnavailable bool
	Attempts         int
	At               time.Time
}

// RotationFailureMessage says which step failed, what state the key is in
// and what the operator should do.
func RotationFailureMessage(f RotationFailure) Notification {
	n := Notification{
		Kind: KindRotationFailed, Severity: Critical,
		Title:   fmt.Sprintf("Rotation of %s failed at %s", f.KeyName, f.Step),
		Context: "mrbacd rotate · rotation " + f.RotationID + " · " + f.At.UTC().Format(time.RFC3339),
	}
	n.Fields = []Field{{"Key", f.KeyName}, {"Failed step", string(f.Step)}, {"Rotation", f.RotationID}}
	if f.Workspace != "" {
		n.Fields = append(n.Fields, Field{"Workspace", f.Workspace})
	}
	n.Fields = append(n.Fields, Field{"Old key id", orNone(f.OldKeyID)}, Field{"New key id", orNone(f.NewKeyID)})
	if f.Attempts > 0 {
		n.Fields = append(n.Fields, Field{"Attempts", strconv.Itoa(f.Attempts)})
	}
	state, todo := rotationFailureGuidance(f)
	n.Sections = []Section{{Title: "Error", Lines: []string{f.Error}}, {Title: "State", Lines: state}, {Title: "What to do", Lines: todo}}
	n.Text = plainText(n)
	n.Dedupe = KindRotationFailed + ":" + f.RotationID
	n.Targets = []Target{RotationTarget(f)}
	return n
}

// JobFailure is a job run that failed or panicked.
type JobFailure struct {
	Job      string
	RunID    int64
	Trigger  string
	Error    string // or the panic value; no stack trace, no key material
	Panic    bool
	Duration time.Duration
	At       time.Time
}

// JobFailureMessage reports a failed or panicked run (critical).
func JobFailureMessage(j JobFailure) Notification {
	n := Notification{Kind: KindJobFailed, Severity: Critical,
		Title:   fmt.Sprintf("Job %s failed", j.Job),
		Context: "mrbacd · " + j.At.UTC().Format(time.RFC3339)}
	if j.Panic {
		n.Kind = KindJobPanic
		n.Title = fmt.Sprintf("Job %s panicked", j.Job)
	}
	n.Fields = []Field{{"Job", j.Job}, {"Run", strconv.FormatInt(j.RunID, 10)}, {"Trigger", orNone(j.Trigger)}}
	if j.Duration > 0 {
		n.Fields = append(n.Fields, Field{"Duration", j.Duration.Round(time.Millisecond).String()})
	}
	todo := fmt.Sprintf("See `mrbacd ctl history` and the daemon's log for run %d; re-run with `mrbacd ctl run %s --wait`.", j.RunID, j.Job)
	n.Sections = []Section{{Title: "Error", Lines: []string{j.Error}}, {Title: "What to do", Lines: []string{todo}}}
	n.Text = plainText(n)
	if j.RunID != 0 {
		n.Dedupe = fmt.Sprintf("%s:%s:run:%d", n.Kind, j.Job, j.RunID)
	} else {
		n.Dedupe = fmt.Sprintf("%s:%s:%d", n.Kind, j.Job, j.At.UnixNano())
	}
	return n
}

// plainText renders the fallback text: title, fields, sections.
func plainText(n Notification) string {
	var b strings.Builder
	b.WriteString(n.Title)
	for _, f := range n.Fields {
		fmt.Fprintf(&b, "\n%s: %s", f.Label, f.Value)
	}
	for _, s := range n.Sections {
		if s.Title != "" {
			fmt.Fprintf(&b, "\n%s:", s.Title)
		}
		for _, l := range s.Lines {
			fmt.Fprintf(&b, "\n- %s", l)
		}
	}
	return b.String()
}

func digest(parts []string) string {
	ps := append([]string(nil), parts...)
	sort.Strings(ps)
	h := sha256.Sum256([]byte(strings.Join(ps, "\x00")))
	return hex.EncodeToString(h[:8])
}

func usd(v float64) string { return fmt.Sprintf("$%.2f", v) }

func day(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format("2006-01-02")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// rotationFailureGuidance returns the State and What-to-do lines of a
// rotation failure: what consumers see now, then what the operator does, the
// cause to fix first and the command that retries last.
func rotationFailureGuidance(f RotationFailure) (state, todo []string) {
	resume := fmt.Sprintf("mrbacd rotate --key %s", f.KeyName)
	storeDown := "The secret store was unreachable: check its address, the network and mrbacd's credentials for it (a sealed Vault, an expired token, an AWS endpoint or role)."
	if f.Published {
		state = append(state, fmt.Sprintf("The store already serves the new key %s; consumers are moving to it.", orNone(f.NewKeyID)))
		if f.OldKeyID != "" {
			state = append(state, fmt.Sprintf("The old key %s is NOT revoked yet: it keeps working until revoked or it expires.", f.OldKeyID))
		}
		state = append(state, "The rotation stays in flight: the next rotation run resumes it where it stopped.")
		todo = append(todo, "Do not restore the old store record: the old key is about to be revoked.")
		switch {
		case f.StoreUnavailable:
			todo = append(todo, storeDown)
		case f.Step == journal.StepReverify || f.Step == journal.StepPropagate:
			todo = append(todo, "The new key failed verification after publish: check the workspace's model access and the platform's status.")
		case f.Step == journal.StepRevoke:
			todo = append(todo, fmt.Sprintf("The old key could not be revoked: check the admin key may delete keys and the platform's status; or revoke it by hand (DELETE /v1/admin/api-keys/%s).", orNone(f.OldKeyID)))
		default:
			todo = append(todo, "Find the cause in the error above and in mrbacd's log.")
		}
		if f.Step == journal.StepRevoke {
			todo = append(todo, fmt.Sprintf("Nothing else is needed: the next scheduled run revokes %s; to finish now, run `%s`.", orNone(f.OldKeyID), resume))
		} else {
			todo = append(todo, fmt.Sprintf("Nothing else is needed: the next scheduled run re-verifies the new key and revokes the old one; to finish now, run `%s`.", resume))
		}
		return state, todo
	}

	if f.Step == journal.StepPublish && f.InFlight && !f.NewKeyDeleted {
		// The write failed and the store could not be read back: it may
		// have landed. The engine decides on the next run from what the
		// store holds.
		state = append(state, fmt.Sprintf("The store may or may not serve the new key %s: the write failed and the store could not be read back.", orNone(f.NewKeyID)))
		if f.OldKeyID != "" {
			state = append(state, fmt.Sprintf("The old key %s is NOT revoked: it keeps working.", f.OldKeyID))
		}
		state = append(state, "The rotation stays in flight: the next rotation run reads the store and either finishes the rotation or deletes the new key.")
		if f.StoreUnavailable {
			todo = append(todo, storeDown)
		} else {
			todo = append(todo, "Check the store is reachable and mrbacd may read and write the target.")
		}
		todo = append(todo, "Do not edit the store record by hand meanwhile.")
		todo = append(todo, fmt.Sprintf("Nothing else is needed: the next scheduled run settles it; to settle it now, run `%s`.", resume))
		return state, todo
	}
	state = append(state, fmt.Sprintf("Nothing changed for consumers: the old key %s is untouched and still in the store.", orNone(f.OldKeyID)))
	leftBehind := f.NewKeyID != "" && !f.NewKeyDeleted
	switch {
	case f.NewKeyID == "":
		state = append(state, "No new key was created.")
	case f.NewKeyDeleted:
		state = append(state, fmt.Sprintf("The new key %s was deleted.", f.NewKeyID))
	default:
		name := ""
		if f.NewKeyName != "" {
			name = " (" + f.NewKeyName + ")"
		}
		state = append(state, fmt.Sprintf("The new key %s%s could NOT be deleted yet.", f.NewKeyID, name))
	}
	if f.InFlight || leftBehind {
		state = append(state, "The rotation stays in flight: the next rotation run finishes cleaning it up (deletes the new key) before rotating again.")
	}
	switch {
	case f.StoreUnavailable:
		todo = append(todo, storeDown)
	case f.Step == journal.StepCreate:
		todo = append(todo, "The platform refused to create the key: check the admin key's permissions, the owner_user_id and the platform's status.")
	case f.Step == journal.StepVerify:
		todo = append(todo, "The platform did not accept the new key: check the workspace's model access and the platform's status.")
	case f.Step == journal.StepPublish:
		todo = append(todo, "The store refused the write: check mrbacd may write the target (a CAS conflict means someone else changed the record).")
	default:
		todo = append(todo, "Find the cause in the error above and in mrbacd's log.")
	}
	if leftBehind {
		todo = append(todo, fmt.Sprintf("The new key %s is harmless (nothing serves it); the next run deletes it, or delete it by hand (DELETE /v1/admin/api-keys/%s).", f.NewKeyID, f.NewKeyID))
	}
	todo = append(todo, fmt.Sprintf("Once the cause is fixed, the next scheduled run retries; to rotate now, run `%s` (add --force if the key is not due yet).", resume))
	return state, todo
}
