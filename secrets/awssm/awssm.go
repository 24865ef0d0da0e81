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
// # Crash consistency of raw writes
//
// Tags are per secret, not per version, and a tag update is a request of its
// own, so a raw record cannot be written in one request. The version id of a
// write is known before the value is stored (it is the ClientRequestToken we
// pass), so its metadata goes first, as tags keyed by version id:
// "mrbacd:<version id>:key_id", ":key_name", ":rotation_id", ":created_at"
// (a version id with characters tags do not allow is replaced by a hash of
// it). A raw write tags its version's entries, then puts the value and moves
// AWSCURRENT (steps 2 and 3), then (best effort) refreshes the flat tags and
// prunes. A read of version V uses the entries of V, so a crash at any point
// leaves the old version current with its entries, or the new one current
// with its entries; a stray pending entry names a version no reader reads.
// The first version is created with its tags in the CreateSecret request
// itself.
//
// Readers keep working with records written by older mrbacd versions (flat
// tags naming the version); such a record whose tag update was cut off by a
// crash fails with secrets.ErrUnavailable until a retry of that write
// completes it. A secret without any mrbacd tags is read with whatever tags
// it has.
//
// Every write prunes entries no reader needs: of versions that exist but are
// neither AWSCURRENT nor AWSPREVIOUS, and all but the newest few (by
// created_at) of versions not stored yet, so that with the flat tags a secret
// holds at most 6+4*6 mrbacd tags, within the 50 AWS allows (a write that
// would exceed them fails before it stores anything). A read that races a
// write retries once.
//
// Reads always name the stage (VersionStage AWSCURRENT): moto may serve a
// stale default version after a label move.
package awssm

import (
	"context"
	"crypto/rand"
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
	stageCurrent  = "AWSCURRENT"
	stagePending  = "AWSPENDING"
	stagePrevious = "AWSPREVIOUS"
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
// from its token, so a retried write reuses it; without a token it is random
// (known before the put either way, see the package comment).
func versionID(token string) *string {
	if token == "" {
		b := make([]byte, 20)
		if _, err := rand.Read(b); err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		return aws.String("mrbacd-" + hex.EncodeToString(b))
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
	prev    string // AWSPREVIOUS version id
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
			switch sg {
			case stageCurrent:
				st.current = id
			case stagePrevious:
				st.prev = id
			}
		}
	}
	if st.current == "" {
		st.exists = false
	}
	return st, nil
}

// Per-version tags of raw records, see the package comment.
const (
	entryPrefix = "mrbacd:"
	// maxPending bounds the entries kept for other writers' versions not
	// stored yet (in progress, or left by a crash before the put).
	maxPending = 3
	// maxTags is AWS's limit of tags per secret.
	maxTags = 50
)

// entryFields are the fields of a raw record tagged per version.
var entryFields = []string{"key_id", "key_name", "rotation_id", "created_at"}

var tagSafeRE = regexp.MustCompile(`^[A-Za-z0-9_.:/=+@-]+$`)

// entryID is the form of a version id used in tag keys.
func entryID(vid string) string {
	if tagSafeRE.MatchString(vid) && !strings.Contains(vid, ":") {
		return vid
	}
	sum := sha256.Sum256([]byte(vid))
	return "h-" + hex.EncodeToString(sum[:20])
}

func entryTag(vid, field string) string { return entryPrefix + entryID(vid) + ":" + field }

// parseEntryTag splits "mrbacd:<entry id>:<field>".
func parseEntryTag(k string) (id, field string, ok bool) {
	rest, ok := strings.CutPrefix(k, entryPrefix)
	if !ok {
		return "", "", false
	}
	i := strings.LastIndex(rest, ":")
	if i <= 0 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// entries groups the per-version tags by entry id.
func entries(tags map[string]string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for k, v := range tags {
		if id, f, ok := parseEntryTag(k); ok {
			if out[id] == nil {
				out[id] = map[string]string{}
			}
			out[id][f] = v
		}
	}
	return out
}

// flatTags returns tags without the per-version entries.
func flatTags(tags map[string]string) map[string]string {
	out := make(map[string]string, len(tags))
	for k, v := range tags {
		if _, _, ok := parseEntryTag(k); !ok {
			out[k] = v
		}
	}
	return out
}

// Read returns the AWSCURRENT record of t.
func (s *Store) Read(ctx context.Context, t secrets.Target) (secrets.Versioned, error) {
	if err := checkPath(t.Path); err != nil {
		return secrets.Versioned{}, err
	}
	v, raced, err := s.read(ctx, t)
	if raced { // AWSCURRENT moved between our two requests
		v, _, err = s.read(ctx, t)
	}
	return v, err
}

func (s *Store) read(ctx context.Context, t secrets.Target) (v secrets.Versioned, raced bool, err error) {
	out, err := s.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
		SecretId: aws.String(t.Path), VersionStage: aws.String(stageCurrent)})
	if err != nil {
		return secrets.Versioned{}, false, mapErr("read", t.Path, err)
	}
	ver := aws.ToString(out.VersionId)
	if out.SecretString == nil {
		return secrets.Versioned{}, false, fmt.Errorf("aws: read %s: the secret holds binary data, not a string", t.Path)
	}
	var rec secrets.Record
	if t.Format == secrets.FormatRaw {
		st, err := s.describe(ctx, "read", t.Path)
		if err != nil {
			return secrets.Versioned{}, false, err
		}
		rec, err = decodeRaw(*out.SecretString, st.tags, ver)
		if err != nil {
			return secrets.Versioned{}, st.current != ver, fmt.Errorf("aws: read %s: %w", t.Path, err)
		}
	} else {
		rec, err = secrets.Decode(t.Format, []byte(*out.SecretString), nil)
		if err != nil {
			return secrets.Versioned{}, false, fmt.Errorf("aws: read %s: %w", t.Path, err)
		}
	}
	return secrets.Versioned{Record: rec, Version: secrets.Version(ver)}, false, nil
}

// decodeRaw finds the tags describing version ver (see the package comment).
func decodeRaw(key string, tags map[string]string, ver string) (secrets.Record, error) {
	es := entries(tags)
	if e, ok := es[entryID(ver)]; ok {
		if _, ok := e["key_id"]; ok {
			return secrets.RecordFromMetadata(key, e), nil
		}
	}
	tv, hasVersion := tags["version"]
	if tv == ver {
		return secrets.RecordFromMetadata(key, tags), nil // flat, written after the value
	}
	if !hasVersion && len(es) == 0 {
		return secrets.RecordFromMetadata(key, tags), nil // not written by mrbacd
	}
	return secrets.Record{}, fmt.Errorf("%w: the tags of version %s are not written yet (a writer between its requests, or an older mrbacd that crashed there)", secrets.ErrUnavailable, ver)
}

// Describe reports existence, the AWSCURRENT version id, the number of
// labelled versions and the tags (without the per-version entries; for the
// raw format those of the current version).
func (s *Store) Describe(ctx context.Context, t secrets.Target) (secrets.Description, error) {
	if err := checkPath(t.Path); err != nil {
		return secrets.Description{}, err
	}
	st, err := s.describe(ctx, "describe", t.Path)
	if err != nil || !st.exists {
		return secrets.Description{}, err
	}
	md := flatTags(st.tags)
	if t.Format == secrets.FormatRaw && md["version"] != st.current {
		for _, k := range append([]string{"version"}, entryFields...) {
			delete(md, k)
		}
		if e, ok := entries(st.tags)[entryID(st.current)]; ok {
			for k, v := range e {
				md[k] = v
			}
			md["version"] = st.current
		}
	}
	d := secrets.Description{Exists: true, Current: secrets.Version(st.current), Metadata: md}
	for _, stages := range st.stages {
		if len(stages) > 0 {
			d.Versions++
		}
	}
	return d, nil
}

// tagsFor returns the flat tags of r at version ver, and for the raw format
// its per-version entry too.
func tagsFor(f secrets.Format, r secrets.Record, ver string) []types.Tag {
	md := r.Metadata()
	md["version"] = ver
	if f == secrets.FormatRaw {
		for k, v := range entryTags(r, ver) {
			md[k] = v
		}
	}
	return toTags(md)
}

func entryTags(r secrets.Record, ver string) map[string]string {
	md := r.Metadata()
	out := make(map[string]string, len(entryFields))
	for _, f := range entryFields {
		out[entryTag(ver, f)] = md[f]
	}
	return out
}

func toTags(md map[string]string) []types.Tag {
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
	if stages, ok := st.stages[*vid]; ok {
		// A retry: this token's value is already stored.
		if st.current == *vid {
			if st.tags["version"] != *vid {
				if err := s.finish(ctx, req, *vid, st.prev, st); err != nil {
					return "", err
				}
			}
			return secrets.Version(*vid), nil
		}
		if len(stages) == 0 || string(req.IfVersion) != st.current {
			return "", fmt.Errorf("aws: write %s: %w: this token's version was superseded", p, secrets.ErrConflict)
		}
	}
	if string(req.IfVersion) != st.current {
		return "", fmt.Errorf("aws: write %s: %w: current version %q, expected %q", p, secrets.ErrConflict, st.current, req.IfVersion)
	}
	if req.IfVersion == secrets.NoVersion {
		// The secret exists without a current value (scheduled for deletion).
		return "", fmt.Errorf("aws: write %s: %w: the secret exists but has no current version (deleted?)", p, secrets.ErrConflict)
	}
	if req.Target.Format == secrets.FormatRaw {
		if err := s.prepareRaw(ctx, p, st, req.Record, *vid); err != nil {
			return "", err
		}
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
	if err := s.finish(ctx, req, newID, string(req.IfVersion), st); err != nil {
		return "", err
	}
	return secrets.Version(newID), nil
}

// prepareRaw tags the entry of version vid before its value is stored,
// first pruning entries no reader needs (see the package comment).
func (s *Store) prepareRaw(ctx context.Context, p string, st state, r secrets.Record, vid string) error {
	own := entryID(vid)
	byID := map[string]string{} // entry id -> version id, for the versions that exist
	for id := range st.stages {
		byID[entryID(id)] = id
	}
	keep := map[string]bool{own: true, entryID(st.current): true}
	if st.prev != "" {
		keep[entryID(st.prev)] = true
	}
	type pending struct{ id, createdAt string }
	var drop []string
	var pend []pending
	es := entries(st.tags)
	for id, e := range es {
		if keep[id] {
			continue
		}
		if ver, exists := byID[id]; exists && !hasStage(st.stages[ver], stagePending) {
			drop = append(drop, id) // a loser's or superseded version
			continue
		}
		pend = append(pend, pending{id, e["created_at"]})
	}
	sort.Slice(pend, func(i, j int) bool { return pend[i].createdAt > pend[j].createdAt })
	for i, pe := range pend {
		if i >= maxPending {
			drop = append(drop, pe.id)
		}
	}
	n := len(st.tags) + len(entryTags(r, vid))
	for id, e := range es {
		if id == own {
			n -= len(e)
		}
	}
	var keys []string
	for _, id := range drop {
		for f := range es[id] {
			keys = append(keys, entryPrefix+id+":"+f)
		}
	}
	n -= len(keys)
	if n > maxTags {
		return fmt.Errorf("aws: write %s: the secret would hold %d tags, over the %d AWS allows: remove tags mrbacd does not use", p, n, maxTags)
	}
	if err := s.untag(ctx, p, keys); err != nil {
		return err
	}
	_, err := s.sm.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: aws.String(p), Tags: toTags(entryTags(r, vid))})
	if err != nil {
		return mapErr("tag", p, err)
	}
	return nil
}

func hasStage(stages []string, stage string) bool {
	for _, s := range stages {
		if s == stage {
			return true
		}
	}
	return false
}

// finish writes the flat tags of the now current version vid (and, for the
// raw format, its entry again), then prunes, best effort, the entries of
// versions in st that are now neither current nor previous.
func (s *Store) finish(ctx context.Context, req secrets.WriteRequest, vid, prev string, st state) error {
	p := req.Target.Path
	if err := s.tag(ctx, p, req.Target.Format, req.Record, vid); err != nil {
		return err
	}
	if req.Target.Format != secrets.FormatRaw {
		return nil
	}
	es := entries(st.tags)
	var keys []string
	for id := range st.stages {
		if id == vid || id == prev {
			continue
		}
		for f := range es[entryID(id)] {
			keys = append(keys, entryPrefix+entryID(id)+":"+f)
		}
	}
	if err := s.untag(ctx, p, keys); err != nil {
		s.log.Debug("aws: pruning record tags failed", "secret_id", p, "err", err)
	}
	return nil
}

func (s *Store) untag(ctx context.Context, p string, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	_, err := s.sm.UntagResource(ctx, &secretsmanager.UntagResourceInput{SecretId: aws.String(p), TagKeys: keys})
	if err != nil {
		return mapErr("untag", p, err)
	}
	return nil
}

func (s *Store) create(ctx context.Context, req secrets.WriteRequest, value []byte, vid *string) (secrets.Version, error) {
	p := req.Target.Path
	// The tags travel with the value: the first version is whole from the start.
	in := &secretsmanager.CreateSecretInput{
		Name: aws.String(p), SecretString: aws.String(string(value)), ClientRequestToken: vid,
		Description: aws.String("Mistral API key managed by mrbacd"),
		Tags:        tagsFor(req.Target.Format, req.Record, *vid),
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
			if derr == nil && st.current == *vid {
				if st.tags["version"] == *vid {
					return secrets.Version(*vid), nil
				}
				return secrets.Version(*vid), s.tag(ctx, p, req.Target.Format, req.Record, *vid)
			}
		}
		return "", err
	}
	return secrets.Version(aws.ToString(out.VersionId)), nil
}

// tag writes the record's metadata as tags.
func (s *Store) tag(ctx context.Context, p string, f secrets.Format, r secrets.Record, ver string) error {
	_, err := s.sm.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: aws.String(p), Tags: tagsFor(f, r, ver)})
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
