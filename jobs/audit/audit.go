// Package audit is mrbacd's nightly key audit (jobs.audit): it lists every
// workspace and every key of the organization, reads each managed key's store
// record, and reports unused, overdue, expiring and undeclared keys, drift
// between the store and the platform, and workspace drift between the config
// and the platform.
//
// Each finding has a stable identity, a severity and a suggested action, and
// never carries key material (names, ids and hidden_key only). Findings go
// through the journal (journal.SyncFindings): new ones are reported in full,
// persisting ones as a digest line count, and resolved ones get a single
// resolved notice. With jobs.audit.revoke_unused the audit deletes unused
// undeclared keys (never in a dry run) and says so.
//
// Evaluate is the pure judgement; Job is the jobs.Runner that gathers the
// inventory with the minimal number of API calls (one paged, unfiltered key
// listing covers every workspace), judges it, syncs and notifies.
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/secrets"
)

// Scope is the journal scope of the audit's findings.
const Scope = "audit"

// Platform is the part of the Mistral admin API the audit uses
// (*mistral.Client implements it).
type Platform interface {
	ListAllKeys(ctx context.Context, name string) ([]mistral.Key, error)
	ListAllWorkspaces(ctx context.Context) ([]mistral.Workspace, error)
	DeleteKey(ctx context.Context, keyID string) error
}

// Records reads the store record of a keys: entry.
type Records interface {
	// Record returns the entry's record (Found false when the store holds
	// nothing). An error means the store could not be read.
	Record(ctx context.Context, k config.Key) (Record, error)
}

// Journal is the part of the state journal the audit uses (*journal.DB).
type Journal interface {
	SyncFindings(ctx context.Context, scope string, current []journal.Finding, now time.Time) (journal.FindingsDelta, error)
	MarkFindingsReported(ctx context.Context, scope string, d journal.FindingsDelta, at time.Time) error
	InFlightRotations(ctx context.Context) ([]journal.Rotation, error)
	RecentRotations(ctx context.Context, since time.Time, limit int) ([]journal.Rotation, error)
	MarkOnce(ctx context.Context, key string) (first bool, err error)
	AuditCursor(ctx context.Context, source string) (journal.AuditCursor, error)
	AdvanceAuditCursor(ctx context.Context, source string, c journal.AuditCursor, scope string, settle []string, at time.Time) error
}

// AuditLog reads the platform's audit log (*mistral.Client implements it).
type AuditLog interface {
	AuditLogs(ctx context.Context, q mistral.AuditQuery) ([]mistral.AuditEvent, error)
}

// Notifier durably queues the audit digest for on-call (the outbox).
type Notifier interface {
	NotifyAudit(ctx context.Context, d Digest) error
}

// Job is the audit as a jobs.Runner.
type Job struct {
	Config   *config.Config
	Platform Platform
	Records  Records
	// Journal may be nil: findings are then not deduplicated across runs and
	// nothing is notified.
	Journal Journal
	// Notifier may be nil: the digest is then only in the result.
	Notifier Notifier
	// AuditLog may be nil: no platform_change findings then. With a
	// journal, the events are read from the journaled cursor on, each
	// reported once; without one (or on the first run) from
	// ChangeLookback ago.
	AuditLog AuditLog
	Logger   *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

var _ jobs.Runner = (*Job)(nil)

// Report is the audit's structured result (jobs.Result.Details).
type Report struct {
	At         time.Time    `json:"at"`
	DryRun     bool         `json:"dry_run,omitempty"`
	Workspaces int          `json:"workspaces"`
	Keys       int          `json:"keys"`
	Counts     map[Kind]int `json:"counts"`
	Findings   []Finding    `json:"findings"`
	// New lists the ids of findings reported for the first time this run;
	// Persisting counts those already reported; Resolved lists findings gone
	// since the last run. All empty in a dry run or without a journal.
	New        []string   `json:"new,omitempty"`
	Persisting int        `json:"persisting"`
	Resolved   []Resolved `json:"resolved,omitempty"`
	// Revoked lists the keys deleted (or, in a dry run, that would be).
	Revoked []RevokedKey `json:"revoked,omitempty"`
	// Errors lists what could not be checked (a store unreadable, a delete
	// that failed, the audit log unreadable). Any error makes the run failed.
	Errors []string `json:"errors,omitempty"`
	// Changes counts the audit log events read this run (mrbacd's own
	// included); AuditLogCursor is where the next run reads from.
	Changes        int    `json:"platform_events,omitempty"`
	AuditLogCursor string `json:"audit_log_cursor,omitempty"`
}

// Resolved is a finding no longer observed.
type Resolved struct {
	ID       string   `json:"id"`
	Kind     Kind     `json:"kind"`
	Severity Severity `json:"severity"`
	Subject  string   `json:"subject"`
	Detail   string   `json:"detail"`
}

// RevokedKey is a key the audit deleted (or would have, in a dry run).
type RevokedKey struct {
	KeyID     string `json:"key_id"`
	KeyName   string `json:"key_name"`
	HiddenKey string `json:"hidden_key,omitempty"`
	Workspace string `json:"workspace,omitempty"`
	DryRun    bool   `json:"dry_run,omitempty"`
}

// Digest is what the audit tells on-call after a run.
type Digest struct {
	RunID  int64
	At     time.Time
	Report *Report
	// New holds the findings to report in full, loudest first.
	New []Finding
	// Persisting counts findings already reported, by kind.
	Persisting map[Kind]int
	// Resolved holds the findings to announce as resolved.
	Resolved []Resolved
	// Revoked holds the keys the audit deleted.
	Revoked []RevokedKey
	// Delta is the journal's answer the digest was built from; the Notifier
	// passes it on so the notification's dedupe id matches the delta.
	Delta journal.FindingsDelta
}

// Empty reports whether the digest has nothing to tell.
func (d Digest) Empty() bool {
	n := 0
	for _, c := range d.Persisting {
		n += c
	}
	errs := 0
	if d.Report != nil {
		errs = len(d.Report.Errors)
	}
	return len(d.New) == 0 && len(d.Resolved) == 0 && len(d.Revoked) == 0 && n == 0 && errs == 0
}

func (j *Job) now() time.Time {
	if j.Now != nil {
		return j.Now().UTC()
	}
	return time.Now().UTC()
}

func (j *Job) logger() *slog.Logger {
	if j.Logger != nil {
		return j.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Run audits once. An error means the inventory could not be gathered
// (platform unreachable) or the journal failed; an unreadable store or a
// failed revoke makes the result failed.
func (j *Job) Run(ctx context.Context, req jobs.Request) (jobs.Result, error) {
	if j.Config == nil || j.Platform == nil {
		return jobs.Result{}, errors.New("audit: not configured (no config or platform)")
	}
	cfg := j.Config
	now := j.now()
	log := j.logger().With("job", jobs.Audit, "run_id", req.RunID)
	rep := &Report{At: now, DryRun: req.DryRun, Counts: map[Kind]int{}}

	inv, err := j.gather(ctx, rep)
	if err != nil {
		return jobs.Result{}, err
	}
	rep.Workspaces, rep.Keys = len(inv.Workspaces), len(inv.Keys)

	// A store that could not be read leaves the picture incomplete: nothing
	// is revoked, and the journal is not synced (an unjudged finding must not
	// look resolved tonight and new again tomorrow). The run fails, which the
	// daemon reports.
	incomplete := len(rep.Errors) > 0
	// An unreadable audit log fails the run but judges the rest: its events
	// are read from the same cursor next run.
	if inv.changesErr != nil {
		rep.Errors = append(rep.Errors, fmt.Sprintf("read the platform's audit log: %v", inv.changesErr))
		log.Error("audit log unreadable", "err", inv.changesErr)
	}
	rep.Changes = len(inv.Changes)
	findings := Evaluate(cfg, PolicyFrom(cfg), inv, now)
	gone := map[string]bool{}
	if !incomplete {
		gone = j.revoke(ctx, log, req.DryRun, findings, rep)
	}

	// Findings about revoked keys are settled: not current.
	current := make([]Finding, 0, len(findings))
	for _, f := range findings {
		if f.KeyID != "" && gone[f.KeyID] {
			continue
		}
		current = append(current, f)
	}
	rep.Findings = findings
	for _, f := range current {
		rep.Counts[f.Kind]++
	}

	if incomplete {
		log.Warn("audit incomplete: findings reported but not synced, nothing revoked", "errors", len(rep.Errors))
	}
	if j.Journal != nil && !req.DryRun && !incomplete {
		if err := j.syncAndNotify(ctx, req, now, current, rep); err != nil {
			return jobs.Result{Failed: true, Summary: summary(rep), Details: rep}, err
		}
		if err := j.advanceCursor(ctx, inv, current, now); err != nil {
			return jobs.Result{Failed: true, Summary: summary(rep), Details: rep}, err
		}
	}
	if !inv.next.IsZero() {
		rep.AuditLogCursor = inv.next.Time.UTC().Format(time.RFC3339Nano)
	}
	// Every finding at debug; the new ones (or all, without a journal) at info.
	fresh := map[string]bool{}
	for _, id := range rep.New {
		fresh[id] = true
	}
	for _, f := range findings {
		level := slog.LevelDebug
		if fresh[f.ID] || j.Journal == nil || req.DryRun {
			level = slog.LevelInfo
		}
		log.Log(ctx, level, "audit finding", "finding_id", f.ID, "kind", string(f.Kind), "severity", string(f.Severity),
			"key_id", f.KeyID, "key_name", f.KeyName, "workspace", f.Workspace, "revoked", f.Revoked)
	}
	res := jobs.Result{Failed: len(rep.Errors) > 0, Summary: summary(rep), Details: rep}
	log.Info("audit done", "keys", rep.Keys, "workspaces", rep.Workspaces, "findings", len(current),
		"new", len(rep.New), "persisting", rep.Persisting, "resolved", len(rep.Resolved), "revoked", len(rep.Revoked),
		"errors", len(rep.Errors))
	return res, nil
}

// gather reads the platform (one paged workspace listing, one paged,
// unfiltered key listing: the admin API lists keys across workspaces), the
// store records and the rotations in flight.
func (j *Job) gather(ctx context.Context, rep *Report) (Inventory, error) {
	inv := Inventory{Records: map[string]Record{}, InFlight: map[string]bool{}, InFlightKeys: map[string]string{}}
	var err error
	if inv.Workspaces, err = j.Platform.ListAllWorkspaces(ctx); err != nil {
		return inv, fmt.Errorf("audit: list workspaces: %w", err)
	}
	if inv.Keys, err = j.Platform.ListAllKeys(ctx, ""); err != nil {
		return inv, fmt.Errorf("audit: list keys: %w", err)
	}
	if j.Records != nil {
		for _, k := range j.Config.Keys {
			r, err := j.Records.Record(ctx, k)
			if err != nil {
				r = Record{Err: err}
				rep.Errors = append(rep.Errors, fmt.Sprintf("read store record of %s: %v", k.Name, err))
			}
			inv.Records[k.Name] = r
		}
	}
	if err := j.readChanges(ctx, &inv); err != nil {
		return inv, err
	}
	if j.Journal != nil {
		rots, err := j.Journal.InFlightRotations(ctx)
		if err != nil {
			return inv, fmt.Errorf("audit: rotations in flight: %w", err)
		}
		for _, r := range rots {
			inv.InFlight[r.KeyName] = true
			for _, id := range []string{r.OldKeyID, r.NewKeyID} {
				if id != "" {
					inv.InFlightKeys[id] = r.KeyName
				}
			}
		}
	}
	return inv, nil
}

// revoke deletes unused undeclared keys when jobs.audit.revoke_unused is on,
// marking their findings. It returns the ids of the keys gone.
func (j *Job) revoke(ctx context.Context, log *slog.Logger, dryRun bool, findings []Finding, rep *Report) map[string]bool {
	gone := map[string]bool{}
	if !j.Config.Jobs.Audit.RevokeUnused {
		return gone
	}
	// Undeclared API keys only: a product's per-user key (Mistral Code,
	// Vibe) is reported but never deleted by the audit.
	undeclared := map[string]bool{}
	for _, f := range findings {
		if f.Kind == KindUndeclared && f.Severity != SeverityInfo {
			undeclared[f.KeyID] = true
		}
	}
	done := map[string]bool{}
	for i := range findings {
		f := &findings[i]
		if f.Kind != KindUnused || !undeclared[f.KeyID] {
			continue
		}
		if done[f.KeyID] {
			continue
		}
		done[f.KeyID] = true
		rk := RevokedKey{KeyID: f.KeyID, KeyName: f.KeyName, HiddenKey: f.HiddenKey, Workspace: f.Workspace, DryRun: dryRun}
		if dryRun {
			f.WouldRevoke = true
			f.Action = "would be revoked (jobs.audit.revoke_unused; dry run)"
			rep.Revoked = append(rep.Revoked, rk)
			log.Info("audit would revoke unused undeclared key", "key_id", f.KeyID, "key_name", f.KeyName, "workspace", f.Workspace)
			continue
		}
		err := j.Platform.DeleteKey(ctx, f.KeyID)
		if err != nil && !errors.Is(err, mistral.ErrNotFound) {
			rep.Errors = append(rep.Errors, fmt.Sprintf("revoke unused key %s (%s): %v", f.KeyName, f.KeyID, err))
			log.Error("audit revoke failed", "key_id", f.KeyID, "key_name", f.KeyName, "workspace", f.Workspace, "err", err)
			continue
		}
		gone[f.KeyID] = true
		f.Revoked = true
		f.Action = "revoked by the audit (jobs.audit.revoke_unused)"
		rep.Revoked = append(rep.Revoked, rk)
		log.Warn("audit revoked unused undeclared key", "key_id", f.KeyID, "key_name", f.KeyName, "workspace", f.Workspace)
	}
	for i := range findings {
		if gone[findings[i].KeyID] && !findings[i].Revoked && findings[i].KeyID != "" {
			findings[i].Revoked = true
			findings[i].Action = "revoked by the audit (jobs.audit.revoke_unused)"
		}
	}
	return gone
}

// syncAndNotify records the current findings, queues the digest and marks
// what it told as reported. A crash between the steps repeats the digest's
// content next run rather than losing it (the outbox dedupe absorbs repeats).
func (j *Job) syncAndNotify(ctx context.Context, req jobs.Request, now time.Time, current []Finding, rep *Report) error {
	byID := make(map[string]Finding, len(current))
	sf := make([]journal.Finding, 0, len(current))
	for _, f := range current {
		byID[f.ID] = f
		sf = append(sf, journal.Finding{ID: f.ID, Kind: string(f.Kind), Severity: string(f.Severity),
			Subject: f.Subject(), Detail: f.Detail, Action: f.Action})
	}
	delta, err := j.Journal.SyncFindings(ctx, Scope, sf, now)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if delta, err = j.withoutSilenced(ctx, delta, now); err != nil {
		return err
	}
	d := Digest{RunID: req.RunID, At: now, Report: rep, Persisting: map[Kind]int{}, Revoked: rep.Revoked, Delta: delta}
	for _, f := range delta.New {
		rep.New = append(rep.New, f.ID)
		d.New = append(d.New, byID[f.ID])
	}
	SortFindings(d.New)
	for _, f := range delta.Persisting {
		rep.Persisting++
		d.Persisting[Kind(f.Kind)]++
	}
	for _, f := range delta.Resolved {
		r := Resolved{ID: f.ID, Kind: Kind(f.Kind), Severity: Severity(f.Severity), Subject: f.Subject, Detail: f.Detail}
		rep.Resolved = append(rep.Resolved, r)
		d.Resolved = append(d.Resolved, r)
	}
	sort.Slice(d.Resolved, func(a, b int) bool { return d.Resolved[a].ID < d.Resolved[b].ID })
	if j.Notifier == nil || d.Empty() {
		return nil
	}
	// A digest of persisting findings only is a daily reminder: at most one
	// per day, and none after a digest with news that day.
	dayMark := "audit-digest/" + now.Format(time.DateOnly)
	quiet := len(d.New) == 0 && len(d.Resolved) == 0 && len(d.Revoked) == 0 && len(rep.Errors) == 0
	if quiet {
		first, err := j.Journal.MarkOnce(ctx, dayMark)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		if !first {
			j.logger().Debug("audit digest of persisting findings already sent today", "job", jobs.Audit, "run_id", req.RunID)
			return nil
		}
	}
	if err := j.Notifier.NotifyAudit(ctx, d); err != nil {
		return fmt.Errorf("audit: queue digest: %w", err)
	}
	if !quiet {
		if _, err := j.Journal.MarkOnce(ctx, dayMark); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	if err := j.Journal.MarkFindingsReported(ctx, Scope, delta, now); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

func summary(r *Report) string {
	var b strings.Builder
	n := 0
	for _, c := range r.Counts {
		n += c
	}
	fmt.Fprintf(&b, "%d keys in %d workspaces: %d findings", r.Keys, r.Workspaces, n)
	if !r.DryRun && (len(r.New) > 0 || r.Persisting > 0 || len(r.Resolved) > 0) {
		fmt.Fprintf(&b, " (%d new, %d persisting), %d resolved", len(r.New), r.Persisting, len(r.Resolved))
	}
	if len(r.Revoked) > 0 {
		if r.DryRun {
			fmt.Fprintf(&b, "; would revoke %d unused undeclared keys", len(r.Revoked))
		} else {
			fmt.Fprintf(&b, "; revoked %d unused undeclared keys", len(r.Revoked))
		}
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, "; %d errors", len(r.Errors))
	}
	return b.String()
}

// StoreRecords reads records from the configured stores.
type StoreRecords struct {
	// Stores maps a backend name ("vault", "aws", "file") to its store.
	Stores map[string]secrets.Store
	// Target maps a keys: entry to its store target.
	Target func(k config.Key) secrets.Target
}

// Record reads k's record and keeps only what the audit needs: never the key.
func (s StoreRecords) Record(ctx context.Context, k config.Key) (Record, error) {
	st, ok := s.Stores[k.Store.Backend]
	if !ok || st == nil {
		return Record{}, fmt.Errorf("no %q store configured", k.Store.Backend)
	}
	t := secrets.Target{Path: k.Store.Location()}
	if s.Target != nil {
		t = s.Target(k)
	}
	v, err := st.Read(ctx, t)
	if errors.Is(err, secrets.ErrNotFound) {
		return Record{Found: false}, nil
	}
	if err != nil {
		return Record{}, err
	}
	return Record{Found: true, KeyID: v.KeyID}, nil
}
