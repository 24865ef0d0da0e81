package rotate

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
)

// PlanItem says what the next rotation run would do with one key, and why.
type PlanItem struct {
	Key      string `json:"key"`
	Backend  string `json:"backend"`
	Location string `json:"location"`
	// Action is ActionNone, ActionRotate, ActionBootstrap or ActionResume.
	Action string `json:"action"`
	Due    bool   `json:"due"`
	Reason string `json:"reason"`
	// CurrentKeyID is the platform id of the key in the store.
	CurrentKeyID string `json:"current_key_id,omitempty"`
	Adopted      bool   `json:"adopted,omitempty"`
	// CreatedAt and DueAt are RFC 3339, "" when unknown.
	CreatedAt string `json:"created_at,omitempty"`
	AgeSource string `json:"age_source,omitempty"`
	DueAt     string `json:"due_at,omitempty"`
	// ExpiresAt is when the current key stops working (the platform's
	// expiration_date), "" when it has none; EarlyForExpiry says DueAt was
	// moved before created_at + rotate_every so the rotation ends a day
	// before it.
	ExpiresAt      string `json:"expires_at,omitempty"`
	EarlyForExpiry bool   `json:"early_for_expiry,omitempty"`
	// InFlight describes a rotation the next run resumes.
	InFlight *InFlight `json:"in_flight,omitempty"`
	Note     string    `json:"note,omitempty"`
	// Error is set when the key's state could not be read.
	Error string `json:"error,omitempty"`
}

// InFlight is a journaled rotation not yet finished.
type InFlight struct {
	RotationID     string       `json:"rotation_id"`
	Step           journal.Step `json:"step"`
	OldKeyID       string       `json:"old_key_id,omitempty"`
	NewKeyID       string       `json:"new_key_id,omitempty"`
	NewKeyName     string       `json:"new_key_name"`
	Attempts       int          `json:"attempts,omitempty"`
	PropagateUntil string       `json:"propagate_until,omitempty"`
	Error          string       `json:"error,omitempty"`
}

// Plan reports what a run would do with every key, and why. It reads the
// stores, the platform's key listing (once: key ids, created_at and the
// expiration_date a key-expiration policy may have shortened) and the
// journal, and writes nothing.
func (e *Engine) Plan(ctx context.Context) ([]PlanItem, error) {
	return e.plan(ctx, "", false)
}

func (e *Engine) plan(ctx context.Context, only string, force bool) ([]PlanItem, error) {
	inflight := map[string]*InFlight{}
	if e.d.Journal != nil {
		rots, err := e.d.Journal.InFlightRotations(ctx)
		if err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
		for _, rot := range rots {
			f := &InFlight{RotationID: rot.ID, Step: rot.Step, OldKeyID: rot.OldKeyID, NewKeyID: rot.NewKeyID,
				NewKeyName: rot.NewKeyName, Attempts: rot.Attempts, Error: rot.Error}
			if !rot.PropagateUntil.IsZero() {
				f.PropagateUntil = rot.PropagateUntil.UTC().Format(time.RFC3339)
			}
			inflight[rot.KeyName] = f
		}
	}
	r := e.newRun(ctx, jobs.Request{})
	var out []PlanItem
	for _, k := range e.keys {
		if only != "" && k.Name != only {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
		it := PlanItem{Key: k.Name, Backend: k.Backend, Location: k.Target.Path}
		if f := inflight[k.Name]; f != nil {
			it.Action, it.Due, it.InFlight = ActionResume, true, f
			it.Reason = fmt.Sprintf("rotation %s in flight at step %s: the next run resumes it", f.RotationID, f.Step)
			out = append(out, it)
			continue
		}
		cur, err := r.readCurrent(ctx, k)
		if err != nil {
			it.Action, it.Error = ActionNone, err.Error()
			it.Reason = "state unknown: " + err.Error()
			out = append(out, it)
			continue
		}
		due := Decide(e.now(), e.Schedule(k), cur, force)
		it.Action, it.Due, it.Reason, it.Note = due.Action, due.Due, due.Reason, cur.Note
		it.CurrentKeyID, it.Adopted, it.AgeSource = cur.KeyID, cur.Adopted, cur.AgeSource
		if !cur.CreatedAt.IsZero() {
			it.CreatedAt = cur.CreatedAt.UTC().Format(time.RFC3339)
		}
		if !due.DueAt.IsZero() {
			it.DueAt = due.DueAt.UTC().Format(time.RFC3339)
		}
		if !cur.ExpiresAt.IsZero() {
			it.ExpiresAt = cur.ExpiresAt.UTC().Format(time.RFC3339)
		}
		it.EarlyForExpiry = due.EarlyForExpiry
		if cur.ExpiryUnknown != "" {
			it.Note = strings.TrimPrefix(it.Note+"; "+cur.ExpiryUnknown, "; ")
		}
		out = append(out, it)
	}
	return out, nil
}

// dryRun reports what Run would do, changing nothing.
func (e *Engine) dryRun(ctx context.Context, req jobs.Request) (jobs.Result, error) {
	items, err := e.plan(ctx, req.Key, req.Force)
	if err != nil {
		return jobs.Result{}, err
	}
	reps := make([]KeyReport, 0, len(items))
	n := 0
	failed := false
	for _, it := range items {
		rep := KeyReport{Key: it.Key, Reason: it.Reason, Note: it.Note, OldKeyID: it.CurrentKeyID, Error: it.Error}
		switch it.Action {
		case ActionResume:
			rep.Outcome, rep.Resumed = OutcomeWouldResume, true
			rep.RotationID, rep.Step = it.InFlight.RotationID, it.InFlight.Step
			rep.OldKeyID, rep.NewKeyID, rep.NewKeyName = it.InFlight.OldKeyID, it.InFlight.NewKeyID, it.InFlight.NewKeyName
		case ActionRotate:
			rep.Outcome = OutcomeWouldRotate
		case ActionBootstrap:
			rep.Outcome = OutcomeWouldBootstrap
		default:
			rep.Outcome = OutcomeNotDue
		}
		if it.Error != "" {
			rep.Outcome, failed = OutcomeFailed, true
		} else if it.Due {
			n++
		}
		reps = append(reps, rep)
	}
	return jobs.Result{Failed: failed, Summary: fmt.Sprintf("dry run: would rotate %d of %d keys", n, len(items)), Details: reps}, nil
}
