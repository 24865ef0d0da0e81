// Package awssm stores managed-key records in AWS Secrets Manager.
//
// A target's path is the secret id. The JSON format stores the record's JSON
// as the SecretString; the raw format stores the bare key and carries the
// other fields as tags. Tags on every secret: managed-by, key_id, key_name,
// rotation_id, created_at and version (the version id they describe).
//
// # Compare-and-set
//
// Secrets Manager has no conditional write, but it has a conditional label
// move: UpdateSecretVersionStage with RemoveFromVersionId fails unless that
// version holds the label. A write therefore
//
//  1. reads the AWSCURRENT version id and compares it to IfVersion;
//  2. puts the new value as a version labelled AWSPENDING only, with
//     ClientRequestToken derived from the write's token (a retried put is a
//     no-op);
//  3. moves AWSCURRENT from IfVersion to the new version. If another writer
//     moved it first, this step fails and the write is ErrConflict; the
//     losing version keeps no AWSCURRENT label and readers never see it.
//
// Of two concurrent writers exactly one wins, as long as the service applies
// one label move at a time per secret (AWS documents the precondition, not
// its isolation; moto checks and moves in one request handler). Secrets
// Manager then moves AWSPREVIOUS to the old version. The first version is
// written with CreateSecret, which fails for all but one concurrent creator.
//
// Tags are per secret, not per version: a raw-format read whose "version"
// tag names another version (a secret without that tag, not written by
// mrbacd, is read with whatever tags it has) (a writer between steps 3 and the tag update)
// fails with secrets.ErrUnavailable until that write's retry completes it.
//
// Reads always name the stage (VersionStage AWSCURRENT): moto may serve a
// stale default version after a label move.
package awssm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/mrbacd/mrbacd/secrets"
)

const (
	stageCurrent = "AWSCURRENT"
	stagePending = "AWSPENDING"
)

// Options configures a Store.
type Options struct {
	// Region is the AWS region (required unless the environment sets one).
	Region string
	// Endpoint overrides the service endpoint (moto, VPC endpoints). It is
	// used for STS too when RoleARN is set.
	Endpoint string
	// RoleARN, when set, is assumed with STS; ExternalID goes with it.
	RoleARN, ExternalID string
	// KMSKeyID encrypts new secrets with this key instead of the AWS managed key.
	KMSKeyID string
	// Credentials overrides the default credential chain (tests: static keys).
	Credentials aws.CredentialsProvider
	// HTTPClient overrides the HTTP client (tests inject faults with it).
	HTTPClient *http.Client
	// MaxAttempts bounds the SDK's retries of throttling, 5xx and network
	// errors (default 3).
	MaxAttempts int
	// Logger receives store events (default slog.Default()).
	Logger *slog.Logger
}

// Store is a secrets.Store over AWS Secrets Manager.
type Store struct {
	sm  *secretsmanager.Client
	kms string
	log *slog.Logger
}

var _ secrets.Store = (*Store)(nil)

// New builds a client from the default credential chain (or o.Credentials),
// assuming o.RoleARN when set. It makes no request.
func New(ctx context.Context, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var opts []func(*config.LoadOptions) error
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	if o.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(o.Credentials))
	}
	if o.Endpoint != "" {
		if u, err := url.Parse(o.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("aws: endpoint %q is not an http(s) URL", o.Endpoint)
		}
		opts = append(opts, config.WithBaseEndpoint(o.Endpoint))
	}
	if o.MaxAttempts > 0 {
		opts = append(opts, config.WithRetryMaxAttempts(o.MaxAttempts))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws: loading config: %w", err)
	}
	if o.HTTPClient != nil {
		// Set after loading: a CA bundle from the environment would otherwise
		// require an SDK-buildable client.
		cfg.HTTPClient = o.HTTPClient
	}
	if cfg.Region == "" {
		return nil, errors.New("aws: no region: set secrets.aws.region or AWS_REGION")
	}
	if o.RoleARN != "" {
		p := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), o.RoleARN, func(ao *stscreds.AssumeRoleOptions) {
			if o.ExternalID != "" {
				ao.ExternalID = aws.String(o.ExternalID)
			}
			ao.RoleSessionName = "mrbacd"
		})
		cfg.Credentials = aws.NewCredentialsCache(p)
	}
	return &Store{sm: secretsmanager.NewFromConfig(cfg), kms: o.KMSKeyID, log: o.Logger}, nil
}

// Name returns "aws".
func (s *Store) Name() string { return "aws" }

var secretIDRE = regexp.MustCompile(`^[A-Za-z0-9/_+=.@:-]+$`)

func checkPath(p string) error {
	if p == "" {
		return errors.New("aws: secret id is empty")
	}
	if len(p) > 2048 || !secretIDRE.MatchString(p) {
		return fmt.Errorf("aws: secret id %q has characters Secrets Manager does not allow (letters, digits and /_+=.@- only)", p)
	}
	return nil
}

// versionID derives the ClientRequestToken (32 to 64 characters) of a write
// from its token, so a retried write reuses it.
func versionID(token string) *string {
	if token == "" {
		return nil // the SDK generates a random one
	}
	if len(token) >= 32 && len(token) <= 64 {
		return aws.String(token)
	}
	sum := sha256.Sum256([]byte(token))
	return aws.String("mrbacd-" + hex.EncodeToString(sum[:20]))
}

// mapErr turns an SDK error into one wrapping a secrets sentinel. AWS error
// messages never echo the secret value.
func mapErr(op, path string, err error) error {
	where := op + " " + path
	var (
		apiErr  smithy.APIError
		respErr *smithyhttp.ResponseError
		kind    error
	)
	var rnf *types.ResourceNotFoundException
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("aws: %s: %w", where, err)
	case errors.As(err, &rnf):
		kind = secrets.ErrNotFound
	case errors.As(err, &apiErr):
		code, msg := apiErr.ErrorCode(), strings.Join(strings.Fields(apiErr.ErrorMessage()), " ")
		switch {
		case strings.HasPrefix(code, "AccessDenied") || code == "UnrecognizedClientException" ||
			code == "InvalidSignatureException" || code == "ExpiredTokenException" || code == "IncompleteSignature":
			kind = secrets.ErrPermissionDenied
		case code == "InvalidRequestException" && (strings.Contains(msg, "deletion") || strings.Contains(msg, "deleted")):
			kind = secrets.ErrNotFound // scheduled for deletion ("marked for deletion"; moto: "marked deleted")
		case code == "ResourceExistsException":
			kind = secrets.ErrConflict
		case strings.Contains(code, "Throttl") || code == "RequestLimitExceeded" || code == "TooManyRequestsException" ||
			code == "InternalServiceError" || code == "ServiceUnavailable" || code == "RequestTimeout":
			kind = secrets.ErrUnavailable
		case errors.As(err, &respErr) && (respErr.HTTPStatusCode() >= 500 || respErr.HTTPStatusCode() == 429):
			kind = secrets.ErrUnavailable
		default:
			return fmt.Errorf("aws: %s: %s: %s", where, code, msg)
		}
		return fmt.Errorf("aws: %s: %w: %s: %s", where, kind, code, msg)
	case errors.As(err, &respErr) && respErr.HTTPStatusCode() >= 500:
		kind = secrets.ErrUnavailable
	case errors.Is(err, context.DeadlineExceeded) || isNetErr(err):
		kind = secrets.ErrUnavailable
	default:
		return fmt.Errorf("aws: %s: %w", where, err)
	}
	return fmt.Errorf("aws: %s: %w: %w", where, kind, err)
}

func isNetErr(err error) bool {
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// state is what DescribeSecret says about a target.
type state struct {
	exists  bool
	deleted bool   // scheduled for deletion
	current string // AWSCURRENT version id
	stages  map[string][]string
	tags    map[string]string
}

func (s *Store) describe(ctx context.Context, op, p string) (state, error) {
	out, err := s.sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(p)})
	if err != nil {
		err = mapErr(op, p, err)
		if errors.Is(err, secrets.ErrNotFound) {
			return state{}, nil
		}
		return state{}, err
	}
	st := state{exists: out.DeletedDate == nil, deleted: out.DeletedDate != nil, stages: out.VersionIdsToStages, tags: map[string]string{}}
	for _, t := range out.Tags {
		st.tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	for id, stages := range out.VersionIdsToStages {
		for _, sg := range stages {
			if sg == stageCurrent {
				st.current = id
			}
		}
	}
	if st.current == "" {
		st.exists = false
	}
	return st, nil
}

// Read returns the AWSCURRENT record of t.
func (s *Store) Read(ctx context.Context, t secrets.Target) (secrets.Versioned, error) {
	if err := checkPath(t.Path); err != nil {
		return secrets.Versioned{}, err
	}
	out, err := s.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
		SecretId: aws.String(t.Path), VersionStage: aws.String(stageCurrent)})
	if err != nil {
		return secrets.Versioned{}, mapErr("read", t.Path, err)
	}
	ver := aws.ToString(out.VersionId)
	if out.SecretString == nil {
		return secrets.Versioned{}, fmt.Errorf("aws: read %s: the secret holds binary data, not a string", t.Path)
	}
	var md map[string]string
	if t.Format == secrets.FormatRaw {
		st, err := s.describe(ctx, "read", t.Path)
		if err != nil {
			return secrets.Versioned{}, err
		}
		if tv, ok := st.tags["version"]; ok && tv != ver {
			return secrets.Versioned{}, fmt.Errorf("aws: read %s: %w: the tags of version %s are not written yet", t.Path, secrets.ErrUnavailable, ver)
		}
		md = st.tags
	}
	rec, err := secrets.Decode(t.Format, []byte(*out.SecretString), md)
	if err != nil {
		return secrets.Versioned{}, fmt.Errorf("aws: read %s: %w", t.Path, err)
	}
	return secrets.Versioned{Record: rec, Version: secrets.Version(ver)}, nil
}

// Describe reports existence, the AWSCURRENT version id, the number of
// labelled versions and the tags.
func (s *Store) Describe(ctx context.Context, t secrets.Target) (secrets.Description, error) {
	if err := checkPath(t.Path); err != nil {
		return secrets.Description{}, err
	}
	st, err := s.describe(ctx, "describe", t.Path)
	if err != nil || !st.exists {
		return secrets.Description{}, err
	}
	d := secrets.Description{Exists: true, Current: secrets.Version(st.current), Metadata: st.tags}
	for _, stages := range st.stages {
		if len(stages) > 0 {
			d.Versions++
		}
	}
	return d, nil
}

func tagsFor(r secrets.Record, ver string) []types.Tag {
	md := r.Metadata()
	md["version"] = ver
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tags := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(md[k])})
	}
	return tags
}

// Write stores req.Record as the new AWSCURRENT version if AWSCURRENT is
// req.IfVersion (see the package comment for how).
func (s *Store) Write(ctx context.Context, req secrets.WriteRequest) (secrets.Version, error) {
	p := req.Target.Path
	if err := checkPath(p); err != nil {
		return "", err
	}
	value, err := secrets.Encode(req.Target.Format, req.Record)
	if err != nil {
		return "", fmt.Errorf("aws: write %s: %w", p, err)
	}
	st, err := s.describe(ctx, "write", p)
	if err != nil {
		return "", err
	}
	if st.deleted {
		return "", fmt.Errorf("aws: write %s: %w: the secret is scheduled for deletion; restore it (RestoreSecret) or wait until it is gone", p, secrets.ErrConflict)
	}
	vid := versionID(req.Token)
	if !st.exists && st.stages == nil && req.IfVersion == secrets.NoVersion {
		return s.create(ctx, req, value, vid)
	}
	if vid != nil {
		if stages, ok := st.stages[*vid]; ok {
			// A retry: this token's value is already stored.
			if st.current == *vid {
				if st.tags["version"] != *vid {
					if err := s.tag(ctx, p, req.Record, *vid); err != nil {
						return "", err
					}
				}
				return secrets.Version(*vid), nil
			}
			if len(stages) == 0 || string(req.IfVersion) != st.current {
				return "", fmt.Errorf("aws: write %s: %w: this token's version was superseded", p, secrets.ErrConflict)
			}
		}
	}
	if string(req.IfVersion) != st.current {
		return "", fmt.Errorf("aws: write %s: %w: current version %q, expected %q", p, secrets.ErrConflict, st.current, req.IfVersion)
	}
	if req.IfVersion == secrets.NoVersion {
		// The secret exists without a current value (scheduled for deletion).
		return "", fmt.Errorf("aws: write %s: %w: the secret exists but has no current version (deleted?)", p, secrets.ErrConflict)
	}
	put, err := s.sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(p), SecretString: aws.String(string(value)),
		ClientRequestToken: vid, VersionStages: []string{stagePending},
	})
	if err != nil {
		err = mapErr("write", p, err)
		if errors.Is(err, secrets.ErrConflict) {
			return "", fmt.Errorf("%w (the token was used with another value)", err)
		}
		return "", err
	}
	newID := aws.ToString(put.VersionId)
	_, err = s.sm.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
		SecretId: aws.String(p), VersionStage: aws.String(stageCurrent),
		MoveToVersionId: aws.String(newID), RemoveFromVersionId: aws.String(string(req.IfVersion)),
	})
	if err != nil {
		var apiErr smithy.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidParameterException" {
			s.dropPending(ctx, p, newID)
			return "", fmt.Errorf("aws: write %s: %w: another writer moved AWSCURRENT first", p, secrets.ErrConflict)
		}
		return "", mapErr("write", p, err)
	}
	s.dropPending(ctx, p, newID)
	if err := s.tag(ctx, p, req.Record, newID); err != nil {
		return "", err
	}
	return secrets.Version(newID), nil
}

func (s *Store) create(ctx context.Context, req secrets.WriteRequest, value []byte, vid *string) (secrets.Version, error) {
	p := req.Target.Path
	in := &secretsmanager.CreateSecretInput{
		Name: aws.String(p), SecretString: aws.String(string(value)), ClientRequestToken: vid,
		Description: aws.String("Mistral API key managed by mrbacd"),
	}
	if s.kms != "" {
		in.KmsKeyId = aws.String(s.kms)
	}
	out, err := s.sm.CreateSecret(ctx, in)
	if err != nil {
		err = mapErr("create", p, err)
		if errors.Is(err, secrets.ErrConflict) {
			// Another writer created it first, or our earlier attempt did.
			st, derr := s.describe(ctx, "create", p)
			if derr == nil && vid != nil && st.current == *vid {
				return secrets.Version(*vid), s.tag(ctx, p, req.Record, *vid)
			}
		}
		return "", err
	}
	ver := aws.ToString(out.VersionId)
	if err := s.tag(ctx, p, req.Record, ver); err != nil {
		return "", err
	}
	return secrets.Version(ver), nil
}

// tag writes the record's metadata as tags.
func (s *Store) tag(ctx context.Context, p string, r secrets.Record, ver string) error {
	_, err := s.sm.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: aws.String(p), Tags: tagsFor(r, ver)})
	if err != nil {
		return mapErr("tag", p, err)
	}
	return nil
}

// dropPending removes AWSPENDING from a version, best effort: a leftover
// label is harmless (readers only follow AWSCURRENT).
func (s *Store) dropPending(ctx context.Context, p, id string) {
	_, err := s.sm.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
		SecretId: aws.String(p), VersionStage: aws.String(stagePending), RemoveFromVersionId: aws.String(id),
	})
	if err != nil {
		var apiErr smithy.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidParameterException" {
			return // the label is not there (moto drops it on the move)
		}
		s.log.Debug("aws: removing AWSPENDING failed", "secret_id", p, "err", mapErr("stage", p, err))
	}
}
