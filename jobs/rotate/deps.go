package rotate

import (
	"context"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/secrets"
)

// Platform is what rotation needs from the Mistral platform. *mistral.Client
// implements it.
type Platform interface {
	CreateKey(ctx context.Context, req mistral.CreateKeyRequest) (mistral.Key, error)
	DeleteKey(ctx context.Context, keyID string) error
	// ListAllKeys lists every key, or with a name only the keys so named.
	ListAllKeys(ctx context.Context, name string) ([]mistral.Key, error)
	ListModels(ctx context.Context, key mistral.Secret) ([]mistral.Model, error)
	ListAllWorkspaces(ctx context.Context) ([]mistral.Workspace, error)
}

// Journal is what rotation needs from the journal. *journal.DB implements it.
type Journal interface {
	BeginRotation(ctx context.Context, r journal.Rotation) error
	UpdateRotation(ctx context.Context, r journal.Rotation) error
	InFlightRotations(ctx context.Context) ([]journal.Rotation, error)
	Rotation(ctx context.Context, id string) (journal.Rotation, error)
	AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	RenewLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, owner string) error
	LeaseHolder(ctx context.Context, name string) (owner string, expires time.Time, ok bool, err error)
}

// Event describes a finished (or failed) rotation for a Notifier. It holds
// names and ids only, never key material.
type Event struct {
	KeyName    string
	RotationID string
	OldKeyID   string
	NewKeyID   string
	NewKeyName string
	// Step is the journal step the rotation reached: journal.StepAbort for a
	// rotation aborted before publish.
	Step journal.Step
	// FailedStep is, for a failure, the step that failed: journal.StepCreate,
	// journal.StepVerify, journal.StepPublish, journal.StepReverify or journal.StepRevoke (or, for a failure
	// outside those such as the journal refusing a write, the step reached).
	FailedStep journal.Step
	// Bootstrap is true when there was no old key to replace.
	Bootstrap bool
	// Err is the failure, "" on success.
	Err string
	// StillInFlight is true when a failed rotation stays journaled to be
	// retried (failures after publish); false when it was aborted cleanly.
	StillInFlight bool
	// Published is true when the store already serves the new key (the
	// rotation failed after publish).
	Published bool
	// StoreUnavailable is true when the failure was the store being
	// unreachable (secrets.ErrUnavailable).
	StoreUnavailable bool
	// Note says how the organization's key-expiration policy moved the
	// rotation (the old key due early, the new key's expiry shortened);
	// "" when it did not.
	Note string
}

// Notifier is told about rotations that end, for Slack and the outbox. It is
// optional. Calls happen on the engine's workers: keep them quick (enqueue).
type Notifier interface {
	OnRotated(ctx context.Context, ev Event)
	OnFailed(ctx context.Context, ev Event)
}

// KeySpec is one managed key as the engine sees it.
type KeySpec struct {
	Name string
	// Workspace is the workspace name; WorkspaceID its uuid when known (else
	// it is resolved by name on the platform, once per run).
	Workspace   string
	WorkspaceID string
	OwnerUserID string
	// Backend names the store ("vault", "aws", "file") in Deps.Stores.
	Backend         string
	Target          secrets.Target
	RotateEvery     time.Duration
	PropagationWait time.Duration
	ExpirationGrace time.Duration
}

// Target returns the store target of a configured key.
func Target(k config.Key) secrets.Target {
	t := secrets.Target{Path: k.Store.Location()}
	if k.Store.ValueFormat == "raw" {
		t.Format = secrets.FormatRaw
	}
	return t
}

// KeysFromConfig returns the managed keys of cfg, with workspace uuids filled
// in from the config where it declares them.
func KeysFromConfig(cfg *config.Config) []KeySpec {
	uuids := map[string]string{}
	for _, w := range cfg.Workspaces {
		uuids[w.Name] = w.UUID
	}
	out := make([]KeySpec, 0, len(cfg.Keys))
	for _, k := range cfg.Keys {
		out = append(out, KeySpec{
			Name:            k.Name,
			Workspace:       k.Workspace,
			WorkspaceID:     uuids[k.Workspace],
			OwnerUserID:     k.OwnerUserID,
			Backend:         k.Store.Backend,
			Target:          Target(k),
			RotateEvery:     k.RotateEvery.D(),
			PropagationWait: k.PropagationWait.D(),
			ExpirationGrace: k.ExpirationGrace.D(),
		})
	}
	return out
}

// OptionsFromConfig returns the engine options cfg sets.
func OptionsFromConfig(cfg *config.Config) Options {
	return Options{
		Concurrency:   cfg.Jobs.Rotate.Concurrency,
		VerifyTimeout: cfg.Jobs.Rotate.VerifyTimeout.D(),
	}
}

// Defaults of Options.
const (
	DefaultConcurrency     = 4
	DefaultVerifyTimeout   = 2 * time.Minute
	DefaultPublishTimeout  = time.Minute
	DefaultLeaseTTL        = 2 * time.Minute
	DefaultRotateEvery     = 90 * 24 * time.Hour
	DefaultExpirationGrace = 30 * 24 * time.Hour
)

// Options tune the engine; zero values take the defaults.
type Options struct {
	// Concurrency bounds the rotations doing API work at once.
	Concurrency int
	// VerifyTimeout bounds the retries of verify and reverify.
	VerifyTimeout time.Duration
	// PublishTimeout bounds the retries of a store that is unavailable at publish.
	PublishTimeout time.Duration
	// LeaseTTL is how long the journal lease (LeaseName) outlives a process
	// that stops renewing it (renewed every third of it).
	LeaseTTL time.Duration
	// MinBackoff is the first retry wait of verify and publish (default 100ms).
	MinBackoff time.Duration
	// Owner names this process in leases (default "mrbacd:HOST:PID:RANDOM").
	Owner string
}

func (o *Options) fill() {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.VerifyTimeout <= 0 {
		o.VerifyTimeout = DefaultVerifyTimeout
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
}
