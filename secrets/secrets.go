// Package secrets defines where rotated keys live: the Store interface every
// backend implements (secrets/vault, secrets/awssm, secrets/file), the record
// format consumers read, and the errors callers branch on.
//
// A store target holds one record per managed key. With the default JSON value
// format the stored value is the JSON of Record; with the raw format the value
// is the bare API key and the other fields travel as backend metadata (Vault
// custom metadata, AWS tags, a sidecar field in the file store).
package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Record is what a store target holds for one managed key.
type Record struct {
	APIKey     string    `json:"api_key"`
	KeyID      string    `json:"key_id"`
	KeyName    string    `json:"key_name"`
	CreatedAt  time.Time `json:"created_at"`
	RotationID string    `json:"rotation_id"`
}

// String never prints the key.
func (r Record) String() string {
	return fmt.Sprintf("Record{key_id=%s key_name=%s created_at=%s rotation_id=%s}",
		r.KeyID, r.KeyName, r.CreatedAt.Format(time.RFC3339), r.RotationID)
}

// GoString never prints the key either (%#v).
func (r Record) GoString() string { return r.String() }

// LogValue keeps the key out of slog records: without it a JSON handler
// would marshal the struct, api_key included.
func (r Record) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key_id", r.KeyID), slog.String("key_name", r.KeyName),
		slog.Time("created_at", r.CreatedAt), slog.String("rotation_id", r.RotationID))
}

// MarshalJSONValue returns the stored form of the record for the JSON value format.
func (r Record) MarshalJSONValue() ([]byte, error) { return json.Marshal(r) }

// Versioned is a record as read from a store, with the version to pass to Write
// for compare-and-set.
type Versioned struct {
	Record
	// Version is the backend's version of the current value: Vault's KV v2
	// version, the AWS version id, the file store's counter. Zero/"" when absent.
	Version Version
}

// Version identifies one stored version; its zero value means "nothing stored yet".
type Version string

// NoVersion is the CAS precondition "the target must not exist yet" (or must have no live value).
const NoVersion Version = ""

// Format of the stored value.
type Format int

const (
	// FormatJSON stores the whole Record as JSON (default).
	FormatJSON Format = iota
	// FormatRaw stores the bare key and the rest as metadata.
	FormatRaw
)

// Target names one record in one backend.
type Target struct {
	// Path is the Vault KV path, the AWS secret id or the file store path.
	Path   string
	Format Format
}

// Description is what Describe reports about a target, without the key.
type Description struct {
	Exists   bool
	Current  Version
	Versions int
	// Metadata carries managed-by, key_id, key_name, rotation_id as stored.
	Metadata map[string]string
}

// WriteRequest is one compare-and-set write.
type WriteRequest struct {
	Target Target
	Record Record
	// IfVersion is the version the caller read; the write fails with ErrConflict
	// when the current version differs. NoVersion means the target must not hold
	// a value yet.
	IfVersion Version
	// Token makes a retried write idempotent (the rotation id): a backend that
	// already holds a version written with this token returns it instead of
	// writing again.
	Token string
}

// Store is a secret backend holding managed-key records.
type Store interface {
	// Read returns the current record. ErrNotFound when nothing is stored.
	Read(ctx context.Context, t Target) (Versioned, error)
	// Write stores a new current record with compare-and-set and returns its version.
	Write(ctx context.Context, req WriteRequest) (Version, error)
	// Describe reports existence, versions and metadata.
	Describe(ctx context.Context, t Target) (Description, error)
	// Name is the backend name: "vault", "aws" or "file".
	Name() string
}

// Errors callers branch on with errors.Is. Backends wrap them with context
// that never includes a secret value.
var (
	ErrNotFound         = errors.New("secret not found")
	ErrConflict         = errors.New("compare-and-set conflict")
	ErrPermissionDenied = errors.New("permission denied")
	ErrUnavailable      = errors.New("store unavailable")
)

// Retryable reports whether err is worth retrying (store unavailable).
func Retryable(err error) bool { return errors.Is(err, ErrUnavailable) }

// ManagedBy is the metadata value marking records mrbacd writes.
const ManagedBy = "mrbacd"

// Metadata returns the metadata a backend stores beside a record
// (managed-by, key_id, key_name, rotation_id, created_at). Never the key.
func (r Record) Metadata() map[string]string {
	return map[string]string{
		"managed-by":  ManagedBy,
		"key_id":      r.KeyID,
		"key_name":    r.KeyName,
		"rotation_id": r.RotationID,
		"created_at":  r.CreatedAt.UTC().Format(time.RFC3339),
	}
}

// RecordFromMetadata rebuilds a record from a raw value and its metadata.
func RecordFromMetadata(apiKey string, md map[string]string) Record {
	r := Record{APIKey: apiKey, KeyID: md["key_id"], KeyName: md["key_name"], RotationID: md["rotation_id"]}
	if t, err := time.Parse(time.RFC3339, md["created_at"]); err == nil {
		r.CreatedAt = t
	}
	return r
}

// Encode returns the stored value for the target's format.
func Encode(f Format, r Record) ([]byte, error) {
	if f == FormatRaw {
		return []byte(r.APIKey), nil
	}
	return json.Marshal(r)
}

// Decode parses a stored value. For FormatRaw, md supplies the other fields.
// A malformed JSON value yields an error that does not quote the value.
func Decode(f Format, value []byte, md map[string]string) (Record, error) {
	if f == FormatRaw {
		return RecordFromMetadata(string(value), md), nil
	}
	var r Record
	if err := json.Unmarshal(value, &r); err != nil {
		return Record{}, errors.New("stored value is not a JSON record")
	}
	return r, nil
}
