package rotate

import (
	"context"
	"time"

	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/secrets"
)

// slots bounds concurrent calls to one service.
type slots chan struct{}

func (s slots) take(ctx context.Context) error {
	select {
	case s <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s slots) give() { <-s }

// boundedPlatform lets at most cap(slots) platform calls run at once: the
// concurrency bound protects the API, not the waits between calls.
type boundedPlatform struct {
	p     Platform
	slots slots
}

func (b boundedPlatform) CreateKey(ctx context.Context, req mistral.CreateKeyRequest) (mistral.Key, error) {
	if err := b.slots.take(ctx); err != nil {
		return mistral.Key{}, err
	}
	defer b.slots.give()
	return b.p.CreateKey(ctx, req)
}

func (b boundedPlatform) DeleteKey(ctx context.Context, keyID string) error {
	if err := b.slots.take(ctx); err != nil {
		return err
	}
	defer b.slots.give()
	return b.p.DeleteKey(ctx, keyID)
}

func (b boundedPlatform) ListAllKeys(ctx context.Context, name string) ([]mistral.Key, error) {
	if err := b.slots.take(ctx); err != nil {
		return nil, err
	}
	defer b.slots.give()
	return b.p.ListAllKeys(ctx, name)
}

func (b boundedPlatform) ListModels(ctx context.Context, key mistral.Secret) ([]mistral.Model, error) {
	if err := b.slots.take(ctx); err != nil {
		return nil, err
	}
	defer b.slots.give()
	return b.p.ListModels(ctx, key)
}

func (b boundedPlatform) ListAllWorkspaces(ctx context.Context) ([]mistral.Workspace, error) {
	if err := b.slots.take(ctx); err != nil {
		return nil, err
	}
	defer b.slots.give()
	return b.p.ListAllWorkspaces(ctx)
}

// boundedStore bounds concurrent calls to one secret store the same way.
// writes, when set, bounds writes further: the file store takes one lock for
// all its writes (polling for it), so concurrent writes only contend.
type boundedStore struct {
	s      secrets.Store
	slots  slots
	writes slots
}

func (b boundedStore) Read(ctx context.Context, t secrets.Target) (secrets.Versioned, error) {
	if err := b.slots.take(ctx); err != nil {
		return secrets.Versioned{}, err
	}
	defer b.slots.give()
	return b.s.Read(ctx, t)
}

func (b boundedStore) Write(ctx context.Context, req secrets.WriteRequest) (secrets.Version, error) {
	if b.writes != nil {
		if err := b.writes.take(ctx); err != nil {
			return "", err
		}
		defer b.writes.give()
	}
	if err := b.slots.take(ctx); err != nil {
		return "", err
	}
	defer b.slots.give()
	return b.s.Write(ctx, req)
}

func (b boundedStore) Describe(ctx context.Context, t secrets.Target) (secrets.Description, error) {
	if err := b.slots.take(ctx); err != nil {
		return secrets.Description{}, err
	}
	defer b.slots.give()
	return b.s.Describe(ctx, t)
}

func (b boundedStore) Name() string { return b.s.Name() }

// serialJournal lets one journal write at a time through from this engine.
// SQLite has one writer anyway; writers of one process contending for it
// would only sleep in its busy handler, which costs far more than queueing.
type serialJournal struct {
	j  Journal
	mu slots
}

func (s serialJournal) write(ctx context.Context, fn func() error) error {
	if err := s.mu.take(ctx); err != nil {
		return err
	}
	defer s.mu.give()
	return fn()
}

func (s serialJournal) BeginRotation(ctx context.Context, r journal.Rotation) error {
	return s.write(ctx, func() error { return s.j.BeginRotation(ctx, r) })
}

func (s serialJournal) UpdateRotation(ctx context.Context, r journal.Rotation) error {
	return s.write(ctx, func() error { return s.j.UpdateRotation(ctx, r) })
}

func (s serialJournal) InFlightRotations(ctx context.Context) ([]journal.Rotation, error) {
	return s.j.InFlightRotations(ctx)
}

func (s serialJournal) Rotation(ctx context.Context, id string) (journal.Rotation, error) {
	return s.j.Rotation(ctx, id)
}

func (s serialJournal) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (ok bool, err error) {
	err = s.write(ctx, func() error { ok, err = s.j.AcquireLease(ctx, name, owner, ttl); return err })
	return ok, err
}

func (s serialJournal) RenewLease(ctx context.Context, name, owner string, ttl time.Duration) (ok bool, err error) {
	err = s.write(ctx, func() error { ok, err = s.j.RenewLease(ctx, name, owner, ttl); return err })
	return ok, err
}

func (s serialJournal) ReleaseLease(ctx context.Context, name, owner string) error {
	return s.write(ctx, func() error { return s.j.ReleaseLease(ctx, name, owner) })
}

func (s serialJournal) LeaseHolder(ctx context.Context, name string) (string, time.Time, bool, error) {
	return s.j.LeaseHolder(ctx, name)
}
