package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/secrets"
)

// Each step returns true to go on with the task's next step, false when the
// task ended (its report is filled in).

// check decides whether a key is due and begins its rotation.
func (r *run) check(t *task) bool {
	var cur Current
	var due Due
	// Decide, take the key's lease, and decide again from a fresh read: the
	// key may have been rotated by another process meanwhile.
	for pass := 0; pass < 2; pass++ {
		var err error
		cur, err = r.readCurrent(t.ctx, t.spec)
		if err != nil {
			r.fail(t, err, false)
			return false
		}
		due = Decide(r.e.now(), r.e.Schedule(t.spec), cur, r.req.Force)
		t.rep.Reason, t.rep.Note = due.Reason, cur.Note
		if cur.ExpiryUnknown != "" && pass == 0 {
			t.log.Warn("key expiry unknown", "note", cur.ExpiryUnknown)
		}
		if !due.Due {
			t.rep.Outcome = OutcomeNotDue
			t.log.Debug("key not due", "reason", due.Reason)
			return false
		}
		if pass == 0 && !r.e.claim(t) {
			return false
		}
	}
	id := randHex(8)
	now := r.e.now().UTC()
	t.rot = journal.Rotation{
		ID: id, KeyName: t.spec.Name, Step: journal.StepBegin, Status: journal.StatusInFlight,
		OldKeyID:   cur.KeyID,
		NewKeyName: fmt.Sprintf("%s-%s-%s", t.spec.Name, now.Format("20060102"), id[:8]),
		Trigger:    r.req.Trigger,
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), 15*time.Second)
	err := r.e.d.Journal.BeginRotation(ctx, t.rot)
	cancel()
	if errors.Is(err, journal.ErrRotationInFlight) {
		t.rep.Outcome = OutcomeBusy
		t.rep.Reason = "another process began a rotation of this key"
		return false
	}
	if err != nil {
		r.fail(t, fmt.Errorf("journal: %w", err), false)
		return false
	}
	t.begun = true
	if due.EarlyForExpiry {
		t.policyNotes = append(t.policyNotes, "rotated early: "+due.Reason)
	}
	t.base = cur.Version
	if !cur.Exists {
		t.base = secrets.NoVersion
	}
	t.bootstrap = !cur.Exists
	t.log = t.log.With("rotation_id", id)
	t.fillIDs()
	t.stepLog("rotation begun", journal.StepBegin, "new_key_name", t.rot.NewKeyName, "reason", due.Reason, "adopted", cur.Adopted)
	if cur.Note != "" {
		t.log.Warn("old key unknown", "note", cur.Note)
	}
	return true
}

// reloadResumed re-reads a resumed rotation once its lease is held: another
// process may have finished it since the in-flight list was read.
func (r *run) reloadResumed(t *task) bool {
	rot, err := r.e.d.Journal.Rotation(t.ctx, t.rot.ID)
	if err != nil {
		r.fail(t, fmt.Errorf("journal: %w", err), true)
		return false
	}
	if rot.Status != journal.StatusInFlight {
		t.rot = rot
		t.rep.Outcome = OutcomeBusy
		t.rep.Reason = "another process finished this rotation"
		return false
	}
	if rot.Step == journal.StepReverify {
		// Journaled only along with a failure after it (a revoke refused).
		// The store may have changed since (an operator rollback): never
		// revoke on an earlier run's word, re-verify first (I3).
		rot.Step = journal.StepPublish
	}
	t.rot = rot
	return true
}

// create creates the new key, journals its id and deletes any duplicate of it.
func (r *run) create(t *task) bool {
	ctx := t.ctx
	ws, err := r.workspaceID(ctx, t.spec)
	if err != nil {
		return r.abort(t, stepFailed(journal.StepCreate, fmt.Errorf("create: %w", err)))
	}
	exp := mistral.DateOf(r.e.now().UTC().Add(t.spec.RotateEvery + t.spec.ExpirationGrace))
	k, err := r.e.d.Platform.CreateKey(ctx, mistral.CreateKeyRequest{
		Name: t.rot.NewKeyName, Expiration: &exp, WorkspaceUUID: ws, UserID: t.spec.OwnerUserID,
	})
	if err == nil && (k.Key.IsZero() || k.KeyID == "") {
		err = errors.New("the platform answered without a key")
	}
	if err != nil {
		return r.abort(t, stepFailed(journal.StepCreate, fmt.Errorf("create: %w", err)))
	}
	t.newKey, t.newCreatedAt = k.Key, k.CreatedAt
	if t.newCreatedAt.IsZero() {
		t.newCreatedAt = r.e.now()
	}
	t.rot.NewKeyID, t.rot.Step = k.KeyID, journal.StepCreate
	if err := r.journal(t); err != nil {
		r.fail(t, err, true)
		return false
	}
	t.fillIDs()
	t.stepLog("new key created", journal.StepCreate, "new_key_name", t.rot.NewKeyName, "expiration", exp.String())
	r.notePolicyExpiry(t, exp, k)
	// A create retried after a lost answer may have made a twin: delete it.
	same, err := r.keysNamed(ctx, t.rot.NewKeyName)
	if err != nil {
		return r.abort(t, stepFailed(journal.StepCreate, fmt.Errorf("create: look for duplicates: %w", err)))
	}
	for _, d := range same {
		if d.KeyID == t.rot.NewKeyID {
			continue
		}
		if err := r.deleteKey(ctx, d.KeyID); err != nil {
			return r.abort(t, stepFailed(journal.StepCreate, fmt.Errorf("create: delete duplicate %s: %w", d.KeyID, err)))
		}
		t.log.Warn("deleted a duplicate of the new key", "step", journal.StepCreate, "key_id", d.KeyID)
	}
	return true
}

// keysNamed lists the platform keys with exactly this name. An empty name
// is refused: listing "" means every key, and the callers delete what they get.
func (r *run) keysNamed(ctx context.Context, name string) ([]mistral.Key, error) {
	if name == "" {
		return nil, errors.New("no new key name journaled: refusing to list keys by an empty name")
	}
	keys, err := r.e.d.Platform.ListAllKeys(ctx, name)
	if err != nil {
		return nil, err
	}
	out := keys[:0]
	for _, k := range keys {
		if k.Name == name { // whatever the server's filter matched
			out = append(out, k)
		}
	}
	return out, nil
}

// deleteKey deletes a platform key; already gone counts as done.
func (r *run) deleteKey(ctx context.Context, id string) error {
	err := r.e.d.Platform.DeleteKey(ctx, id)
	if errors.Is(err, mistral.ErrNotFound) {
		return nil
	}
	return err
}

func retryAll(error) bool { return true }

// verify proves the new key works, retrying while the platform warms up.
func (r *run) verify(t *task) bool {
	ctx := t.ctx
	err := r.retry(ctx, r.e.opts.VerifyTimeout, retryAll, func() error {
		_, err := r.e.d.Platform.ListModels(ctx, t.newKey)
		return err
	})
	if err != nil {
		return r.abort(t, stepFailed(journal.StepVerify, fmt.Errorf("verify: %w", err)))
	}
	// Not journaled: recovery treats begin, create and verify alike.
	t.rot.Step = journal.StepVerify
	t.stepLog("new key verified", journal.StepVerify)
	return true
}

// publish writes the new record with compare-and-set and journals the
// version and the propagation deadline.
func (r *run) publish(t *task) bool {
	ctx := t.ctx
	st := r.store(t.spec)
	rec := secrets.Record{APIKey: t.newKey.Reveal(), KeyID: t.rot.NewKeyID, KeyName: t.rot.NewKeyName,
		CreatedAt: t.newCreatedAt.UTC(), RotationID: t.rot.ID}
	// The write's idempotency token is the rotation id; an attempt recreated
	// after a crash writes another value, so it gets a token of its own (a
	// store must never answer it with the earlier attempt's version).
	token := t.rot.ID
	if t.rot.Attempts > 0 {
		token = fmt.Sprintf("%s.%d", t.rot.ID, t.rot.Attempts)
	}
	var ver secrets.Version
	err := r.retry(ctx, r.e.opts.PublishTimeout, secrets.Retryable, func() error {
		v, err := st.Write(ctx, secrets.WriteRequest{Target: t.spec.Target, Record: rec, IfVersion: t.base, Token: token})
		ver = v
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			t.recover = true
			r.interrupted(t, ctx.Err())
			return false
		}
		// Did the write land anyway? Only the store can tell.
		var v secrets.Versioned
		rerr := r.retry(ctx, min(r.e.opts.PublishTimeout, 10*time.Second), secrets.Retryable, func() error {
			var err error
			v, err = st.Read(ctx, t.spec.Target)
			return err
		})
		switch {
		case rerr == nil && v.KeyID == t.rot.NewKeyID:
			ver = v.Version
			t.log.Warn("publish reported an error but the store holds the new key", "step", journal.StepPublish, "err", err)
		case rerr == nil || errors.Is(rerr, secrets.ErrNotFound):
			return r.abort(t, stepFailed(journal.StepPublish, fmt.Errorf("publish: %w", err)))
		default:
			t.recover = true
			r.fail(t, stepFailed(journal.StepPublish, fmt.Errorf("publish: %w; reading the store back failed too (%v): the rotation stays in flight and the next run decides from what the store shows", err, rerr)), true)
			return false
		}
	}
	t.newKey = ""
	t.rot.Step, t.rot.StoreVersion = journal.StepPublish, string(ver)
	t.rot.PropagateUntil = r.e.now().Add(t.spec.PropagationWait)
	if err := r.journal(t); err != nil {
		t.recover = true
		r.fail(t, err, true)
		return false
	}
	t.stepLog("new key published", journal.StepPublish, "store_version", string(ver),
		"propagate_until", t.rot.PropagateUntil.UTC().Format(time.RFC3339Nano))
	return true
}

// errStoreMoved: the store does not hold the key the rotation published.
var errStoreMoved = errors.New("the store no longer holds the new key (someone else wrote it): the old key is not revoked")

// reverify reads the published record back and proves the key it holds works.
func (r *run) reverify(t *task) bool {
	ctx := t.ctx
	st := r.store(t.spec)
	err := r.retry(ctx, r.e.opts.VerifyTimeout, func(err error) bool { return !errors.Is(err, errStoreMoved) }, func() error {
		v, err := st.Read(ctx, t.spec.Target)
		if err != nil {
			return fmt.Errorf("read store: %w", err)
		}
		if v.KeyID != t.rot.NewKeyID {
			return errStoreMoved
		}
		_, err = r.e.d.Platform.ListModels(ctx, mistral.Secret(v.APIKey))
		return err
	})
	if errors.Is(err, errStoreMoved) {
		return r.finishFailed(t, stepFailed(journal.StepReverify, err))
	}
	if err != nil {
		r.fail(t, stepFailed(journal.StepReverify, fmt.Errorf("reverify: %w", err)), true)
		return false
	}
	// Not journaled: a restart before revoke re-verifies again, which is cheap.
	t.rot.Step = journal.StepReverify
	t.stepLog("new key re-verified after propagation", journal.StepReverify)
	return true
}

// revoke deletes the old key and journals done.
func (r *run) revoke(t *task) bool {
	if t.rot.OldKeyID != "" && t.rot.OldKeyID != t.rot.NewKeyID {
		if err := r.deleteKey(t.ctx, t.rot.OldKeyID); err != nil {
			r.fail(t, stepFailed(journal.StepRevoke, fmt.Errorf("revoke old key: %w", err)), true)
			return false
		}
		t.stepLog("old key revoked", journal.StepRevoke)
	}
	// A rotation that was interrupted may have a create request of a dead
	// process land late, after recovery looked for it: look once more, now
	// that the propagation wait has given such a request time to land.
	if t.rep.Resumed || t.rot.Attempts > 0 {
		same, err := r.keysNamed(t.ctx, t.rot.NewKeyName)
		if err != nil {
			r.fail(t, stepFailed(journal.StepRevoke, fmt.Errorf("look for stray copies of the new key: %w", err)), true)
			return false
		}
		for _, k := range same {
			if k.KeyID == t.rot.NewKeyID {
				continue
			}
			if err := r.deleteKey(t.ctx, k.KeyID); err != nil {
				r.fail(t, stepFailed(journal.StepRevoke, fmt.Errorf("delete stray copy %s of the new key: %w", k.KeyID, err)), true)
				return false
			}
			t.log.Warn("deleted a stray copy of the new key", "step", journal.StepDone, "key_id", k.KeyID)
		}
	}
	t.rot.Step, t.rot.Status, t.rot.Error = journal.StepDone, journal.StatusDone, ""
	if err := r.journal(t); err != nil {
		t.rot.Status = journal.StatusInFlight
		r.fail(t, err, true)
		return false
	}
	t.fillIDs()
	t.rep.Step = journal.StepDone
	t.rep.Outcome = OutcomeRotated
	if t.bootstrap {
		t.rep.Outcome = OutcomeBootstrapped
	}
	t.stepLog("rotation done", journal.StepDone)
	if r.e.d.Notifier != nil {
		r.e.d.Notifier.OnRotated(context.WithoutCancel(t.ctx), r.event(t, "", false))
	}
	return false
}

// abort ends a rotation that failed before publish: the new key is deleted
// (by id and by name), the old key is left untouched.
func (r *run) abort(t *task, cause error) bool {
	if t.failedStep == "" {
		t.failedStep = failedStepOf(cause)
	}
	if errors.Is(cause, secrets.ErrUnavailable) {
		t.storeUnavailable = true
	}
	if t.rot.Step != journal.StepAbort {
		if t.ctx.Err() != nil {
			// Cancelled, not failed: stay where we are; recovery reconciles.
			t.recover = true
			r.interrupted(t, t.ctx.Err())
			return false
		}
		t.rot.Step, t.rot.Error = journal.StepAbort, cause.Error()
		if err := r.journal(t); err != nil {
			r.fail(t, err, true)
			return false
		}
		t.stepLog("rotation aborting: deleting the new key, the old key stays", journal.StepAbort, "err", cause.Error())
	}
	ctx := t.ctx
	t.newKey = ""
	if t.rot.NewKeyID != "" {
		if err := r.deleteKey(ctx, t.rot.NewKeyID); err != nil {
			r.fail(t, fmt.Errorf("abort: delete new key: %w (after: %s)", err, cause), true)
			return false
		}
	}
	if t.rot.NewKeyName != "" {
		same, err := r.keysNamed(ctx, t.rot.NewKeyName)
		if err != nil {
			r.fail(t, fmt.Errorf("abort: look for the new key: %w (after: %s)", err, cause), true)
			return false
		}
		for _, k := range same {
			if err := r.deleteKey(ctx, k.KeyID); err != nil {
				r.fail(t, fmt.Errorf("abort: delete new key %s: %w (after: %s)", k.KeyID, err, cause), true)
				return false
			}
		}
	}
	return r.finishFailed(t, cause)
}

// finishFailed journals the rotation failed (no longer in flight) and reports it.
func (r *run) finishFailed(t *task, cause error) bool {
	t.rot.Status, t.rot.Error = journal.StatusFailed, cause.Error()
	if err := r.journal(t); err != nil {
		t.rot.Status = journal.StatusInFlight
		r.fail(t, fmt.Errorf("%w (after: %s)", err, cause), true)
		return false
	}
	r.fail(t, cause, false)
	return false
}

// reconcile brings a rotation resumed before publish in line with what the
// store and the platform show (see the package doc).
func (r *run) reconcile(t *task) bool {
	ctx := t.ctx
	v, err := r.readStore(ctx, t.spec)
	found := err == nil
	if err != nil && !errors.Is(err, secrets.ErrNotFound) {
		r.fail(t, fmt.Errorf("recover: read store: %w", err), true)
		return false
	}
	if found && t.rot.NewKeyID != "" && v.KeyID == t.rot.NewKeyID {
		t.recover = false
		t.rot.Step, t.rot.StoreVersion = journal.StepPublish, string(v.Version)
		t.rot.PropagateUntil = r.e.now().Add(t.spec.PropagationWait)
		if err := r.journal(t); err != nil {
			r.fail(t, err, true)
			return false
		}
		t.stepLog("recovered: the store already holds the new key, so publish happened", journal.StepPublish)
		return true
	}
	// Whatever an earlier attempt created is useless: its plaintext is gone.
	if t.rot.NewKeyID != "" {
		if err := r.deleteKey(ctx, t.rot.NewKeyID); err != nil {
			r.fail(t, fmt.Errorf("recover: delete unpublished key: %w", err), true)
			return false
		}
	}
	same, err := r.keysNamed(ctx, t.rot.NewKeyName)
	if err != nil {
		r.fail(t, fmt.Errorf("recover: look for unpublished keys: %w", err), true)
		return false
	}
	for _, k := range same {
		if err := r.deleteKey(ctx, k.KeyID); err != nil {
			r.fail(t, fmt.Errorf("recover: delete unpublished key %s: %w", k.KeyID, err), true)
			return false
		}
	}
	discarded := t.rot.NewKeyID
	if t.rot.OldKeyID != "" && (!found || (v.KeyID != "" && v.KeyID != t.rot.OldKeyID)) {
		t.rot.NewKeyID = ""
		return r.finishFailed(t, errors.New("recover: the store no longer holds the old key (someone else changed it): nothing published"))
	}
	t.recover = false
	t.rot.NewKeyID, t.rot.Step, t.rot.Attempts, t.rot.Error = "", journal.StepBegin, t.rot.Attempts+1, ""
	if err := r.journal(t); err != nil {
		r.fail(t, err, true)
		return false
	}
	t.base = v.Version
	if !found {
		t.base = secrets.NoVersion
	}
	t.stepLog("recovered: discarded any unpublished new key; creating it again", journal.StepBegin,
		"discarded_key_id", discarded, "discarded_by_name", len(same), "attempt", t.rot.Attempts)
	return true
}

// notePolicyExpiry says, in the log, the key's report and its rotation
// notification, when the organization's key-expiration policy gave the new
// key an earlier expiration_date than asked: the key is then due before
// rotate_every (see Decide).
func (r *run) notePolicyExpiry(t *task, asked mistral.Date, k mistral.Key) {
	if k.ExpirationDate == nil || !k.ExpirationDate.Before(asked) {
		return
	}
	sched := r.e.Schedule(t.spec)
	dueAt := k.CreatedAt
	if dueAt.IsZero() {
		dueAt = r.e.now()
	}
	dueAt = dueAt.Add(sched.Every)
	if early := ExpiresAt(k).Add(-sched.Lead); early.Before(dueAt) {
		dueAt = early
	}
	note := fmt.Sprintf("the key-expiration policy shortened the new key's expiration_date to %s (asked %s): it is due %s, not after rotate_every %s",
		k.ExpirationDate, asked, dueAt.UTC().Format(time.RFC3339), days(sched.Every))
	t.policyNotes = append(t.policyNotes, note)
	if t.rep.Note == "" {
		t.rep.Note = note
	} else {
		t.rep.Note += "; " + note
	}
	t.log.Warn("key-expiration policy shortened the new key's expiry", "step", journal.StepCreate,
		"new_key_id", k.KeyID, "asked", asked.String(), "expiration", k.ExpirationDate.String(), "due_at", dueAt.UTC().Format(time.RFC3339))
}
