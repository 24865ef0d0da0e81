package slack

import (
	"context"
	"errors"
	"fmt"
)

// KeyDeleter deletes platform keys (*mistral.Client).
type KeyDeleter interface {
	DeleteKey(ctx context.Context, keyID string) error
}

// PlatformActor is the KeyActor the daemon hands to Actions: revokes go to
// the platform, rotations to the rotate job, and "is it managed" to the
// sources that know (the journal's rotations, the stores' records).
type PlatformActor struct {
	Platform KeyDeleter
	// Managed lists lookups of the keys: entry a platform key id belongs
	// to, asked in order (e.g. (*state.DB).ManagedKeyName, then the
	// stores' records). A key any of them claims is managed.
	Managed []func(ctx context.Context, keyID string) (string, bool, error)
	// Rotate runs the rotate job now for one key, forced, recorded as by,
	// and returns its summary.
	Rotate func(ctx context.Context, name, by string) (string, error)
}

var _ KeyActor = PlatformActor{}

// ManagedKey implements KeyActor.
func (p PlatformActor) ManagedKey(ctx context.Context, keyID string) (string, bool, error) {
	if len(p.Managed) == 0 {
		return "", false, errors.New("no source says which keys are managed")
	}
	for _, m := range p.Managed {
		name, ok, err := m(ctx, keyID)
		if err != nil {
			return "", false, err
		}
		if ok {
			return name, true, nil
		}
	}
	return "", false, nil
}

// RotateKey implements KeyActor.
func (p PlatformActor) RotateKey(ctx context.Context, name, by string) (string, error) {
	if p.Rotate == nil {
		return "", errors.New("rotation is not available from Slack on this daemon")
	}
	return p.Rotate(ctx, name, by)
}

// RevokeKey implements KeyActor. It re-checks that the key is not managed
// right before deleting it.
func (p PlatformActor) RevokeKey(ctx context.Context, keyID, by string) (string, error) {
	if name, managed, err := p.ManagedKey(ctx, keyID); err != nil {
		return "", err
	} else if managed {
		return "", fmt.Errorf("key %s is managed by %s: not revoked", keyID, name)
	}
	if err := p.Platform.DeleteKey(ctx, keyID); err != nil {
		return "", fmt.Errorf("delete key %s: %w", keyID, err)
	}
	return fmt.Sprintf("key %s revoked on the platform", keyID), nil
}
