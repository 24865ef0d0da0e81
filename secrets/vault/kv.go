package vault

// The KV v2 write protocol: the record layout (data, flat metadata and the
// raw format's per-version entries), reads, describes and compare-and-set
// writes (see the package comment).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/mrbacd/mrbacd/secrets"
)

// recordData is the KV data of a record in format f.
func recordData(f secrets.Format, r secrets.Record) map[string]any {
	if f == secrets.FormatRaw {
		return map[string]any{"api_key": r.APIKey}
	}
	return map[string]any{
		"api_key": r.APIKey, "key_id": r.KeyID, "key_name": r.KeyName,
		"created_at": r.CreatedAt.UTC().Format(time.RFC3339Nano), "rotation_id": r.RotationID,
	}
}

// Custom metadata entries of raw records, see the package comment.
const (
	entryPrefix = "mrbacd.v"
	// maxPending bounds the entries kept for versions not written yet (left
	// by writers that lost the CAS race or crashed before their data write).
	maxPending = 8
	// Vault's limits on custom metadata.
	maxMetadataKeys     = 64
	maxMetadataValueLen = 512
)

// entry is the value of a raw record's custom metadata entry.
type entry struct {
	KeyID      string `json:"key_id"`
	KeyName    string `json:"key_name"`
	RotationID string `json:"rotation_id"`
	CreatedAt  string `json:"created_at"`
	WrittenAt  string `json:"written_at"`
}

// fingerprint identifies a key without revealing it.
func fingerprint(apiKey string) string {
	sum := sha256.Sum256([]byte("mrbacd record fingerprint\x00" + apiKey))
	return hex.EncodeToString(sum[:8])
}

func entryKey(ver int, fp string) string { return entryPrefix + strconv.Itoa(ver) + "." + fp }

// parseEntryKey splits "mrbacd.v<ver>.<fp>".
func parseEntryKey(k string) (ver int, fp string, ok bool) {
	rest, ok := strings.CutPrefix(k, entryPrefix)
	if !ok {
		return 0, "", false
	}
	vs, fp, ok := strings.Cut(rest, ".")
	if !ok || fp == "" {
		return 0, "", false
	}
	ver, err := strconv.Atoi(vs)
	if err != nil || ver <= 0 {
		return 0, "", false
	}
	return ver, fp, true
}

func newEntry(r secrets.Record) (string, error) {
	b, err := json.Marshal(entry{KeyID: r.KeyID, KeyName: r.KeyName, RotationID: r.RotationID,
		CreatedAt: r.CreatedAt.UTC().Format(time.RFC3339), WrittenAt: time.Now().UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return "", errors.New("encoding the record's metadata")
	}
	if len(b) > maxMetadataValueLen {
		return "", fmt.Errorf("the record's metadata (key_id, key_name, rotation_id, created_at) takes %d bytes, over Vault's %d-byte limit for a custom metadata value", len(b), maxMetadataValueLen)
	}
	return string(b), nil
}

// recordFromEntry rebuilds a raw record from its entry.
func recordFromEntry(apiKey, v string) (secrets.Record, bool) {
	var e entry
	if err := json.Unmarshal([]byte(v), &e); err != nil {
		return secrets.Record{}, false
	}
	return secrets.RecordFromMetadata(apiKey, map[string]string{"key_id": e.KeyID, "key_name": e.KeyName,
		"rotation_id": e.RotationID, "created_at": e.CreatedAt}), true
}

// flatMetadata returns md without the raw records' entries.
func flatMetadata(md map[string]string) map[string]string {
	out := make(map[string]string, len(md))
	for k, v := range md {
		if _, _, ok := parseEntryKey(k); !ok {
			out[k] = v
		}
	}
	return out
}

// Read returns the current record of t.
func (s *Store) Read(ctx context.Context, t secrets.Target) (secrets.Versioned, error) {
	return withRelogin(ctx, s, t, s.read)
}

func (s *Store) read(ctx context.Context, t secrets.Target) (secrets.Versioned, error) {
	if err := checkPath(t.Path); err != nil {
		return secrets.Versioned{}, err
	}
	// One request returns the data and the custom metadata together.
	sec, err := s.kv.Get(ctx, t.Path)
	if err != nil {
		return secrets.Versioned{}, mapErr("read", t.Path, err)
	}
	if sec.Data == nil || sec.VersionMetadata == nil {
		return secrets.Versioned{}, fmt.Errorf("vault: read %s: %w (current version deleted or destroyed)", t.Path, secrets.ErrNotFound)
	}
	ver := sec.VersionMetadata.Version
	md := stringMap(sec.CustomMetadata)
	rec, err := decode(t.Format, sec.Data, md, ver)
	if err != nil {
		return secrets.Versioned{}, fmt.Errorf("vault: read %s: %w", t.Path, err)
	}
	return secrets.Versioned{Record: rec, Version: secrets.Version(strconv.Itoa(ver))}, nil
}

func decode(f secrets.Format, data map[string]any, md map[string]string, ver int) (secrets.Record, error) {
	key, ok := data["api_key"].(string)
	if !ok {
		return secrets.Record{}, errors.New("the stored data has no api_key string")
	}
	if f == secrets.FormatRaw {
		return decodeRaw(key, md, ver)
	}
	b, err := json.Marshal(data)
	if err != nil {
		return secrets.Record{}, errors.New("the stored data is not a record")
	}
	return secrets.Decode(secrets.FormatJSON, b, nil)
}

// decodeRaw finds the metadata of version ver holding key (see the package comment).
func decodeRaw(key string, md map[string]string, ver int) (secrets.Record, error) {
	fp := fingerprint(key)
	if v, ok := md[entryKey(ver, fp)]; ok {
		if r, ok := recordFromEntry(key, v); ok {
			return r, nil
		}
	}
	best, bestVer, entries := "", 0, false
	for k, v := range md {
		ev, efp, ok := parseEntryKey(k)
		if !ok {
			continue
		}
		entries = true
		if efp == fp && ev > bestVer {
			best, bestVer = v, ev
		}
	}
	if bestVer > 0 { // the same key stored at another version (a rollback)
		if r, ok := recordFromEntry(key, best); ok {
			return r, nil
		}
	}
	if _, hasVersion := md["version"]; !hasVersion && !entries {
		return secrets.RecordFromMetadata(key, md), nil // not written by mrbacd
	}
	return secrets.Record{}, fmt.Errorf("%w: metadata of version %d not written yet (a writer between its requests, or one that crashed there)",
		secrets.ErrUnavailable, ver)
}

// Describe reports existence, the current version, how many versions Vault
// keeps that are neither deleted nor destroyed, and the custom metadata (for
// the raw format: of the current version, without the per-version entries).
func (s *Store) Describe(ctx context.Context, t secrets.Target) (secrets.Description, error) {
	return withRelogin(ctx, s, t, s.describe)
}

func (s *Store) describe(ctx context.Context, t secrets.Target) (secrets.Description, error) {
	if err := checkPath(t.Path); err != nil {
		return secrets.Description{}, err
	}
	m, err := s.kv.GetMetadata(ctx, t.Path)
	if err != nil {
		err = mapErr("describe", t.Path, err)
		if errors.Is(err, secrets.ErrNotFound) {
			return secrets.Description{}, nil
		}
		return secrets.Description{}, err
	}
	md := stringMap(m.CustomMetadata)
	d := secrets.Description{Metadata: flatMetadata(md)}
	for _, v := range m.Versions {
		if v.DeletionTime.IsZero() && !v.Destroyed {
			d.Versions++
		}
	}
	if live(m) {
		d.Exists = true
		d.Current = secrets.Version(strconv.Itoa(m.CurrentVersion))
		if t.Format == secrets.FormatRaw && d.Metadata["version"] != string(d.Current) {
			resolveCurrent(d.Metadata, md, m.CurrentVersion)
		}
	}
	return d, nil
}

// resolveCurrent sets the flat fields of flat from the entry of version cur
// when there is exactly one; with none or several (a crash after the data
// write, with losers' entries beside it) it removes them rather than show
// another version's.
func resolveCurrent(flat, md map[string]string, cur int) {
	var found []string
	for k, v := range md {
		if ev, _, ok := parseEntryKey(k); ok && ev == cur {
			found = append(found, v)
		}
	}
	for _, k := range []string{"key_id", "key_name", "rotation_id", "created_at", "version"} {
		delete(flat, k)
	}
	if len(found) != 1 {
		return
	}
	if r, ok := recordFromEntry("", found[0]); ok {
		for k, v := range r.Metadata() {
			flat[k] = v
		}
		flat["version"] = strconv.Itoa(cur)
	}
}

// live reports whether the current version holds data.
func live(m *api.KVMetadata) bool {
	if m == nil || m.CurrentVersion == 0 {
		return false
	}
	v, ok := m.Versions[strconv.Itoa(m.CurrentVersion)]
	return ok && v.DeletionTime.IsZero() && !v.Destroyed
}

// Write stores req.Record as a new version with cas = the current version,
// after checking it is req.IfVersion. A retry of a write that already landed
// (same token and key id in the metadata, or the same key in the data) returns
// that version and completes its metadata. A raw write patches the new
// version's metadata before its data (see the package comment).
func (s *Store) Write(ctx context.Context, req secrets.WriteRequest) (secrets.Version, error) {
	// Safe to repeat: a partly landed write completes as a retry.
	return withRelogin(ctx, s, req, s.write)
}

func (s *Store) write(ctx context.Context, req secrets.WriteRequest) (secrets.Version, error) {
	p := req.Target.Path
	if err := checkPath(p); err != nil {
		return "", err
	}
	m, err := s.kv.GetMetadata(ctx, p)
	if err != nil {
		err = mapErr("write", p, err)
		if !errors.Is(err, secrets.ErrNotFound) {
			return "", err
		}
		m = nil
	}
	cas := 0
	var cur secrets.Version
	var md map[string]string
	if m != nil {
		cas = m.CurrentVersion
		md = stringMap(m.CustomMetadata)
		if live(m) {
			cur = secrets.Version(strconv.Itoa(cas))
		}
	}
	raw := req.Target.Format == secrets.FormatRaw
	if cur != "" && req.Token != "" {
		if md["rotation_id"] == req.Token && md["key_id"] == req.Record.KeyID && md["version"] == string(cur) &&
			(!raw || md[entryKey(cas, fingerprint(req.Record.APIKey))] != "") {
			return cur, nil // the retried write landed and is complete
		}
	}
	if cur != req.IfVersion {
		if cur != "" && req.Token != "" {
			if done, err := s.finishLanded(ctx, req, cas, md); err != nil || done {
				if err != nil {
					return "", err
				}
				return cur, nil
			}
		}
		return "", fmt.Errorf("vault: write %s: %w: current version %q, expected %q", p, secrets.ErrConflict, cur, req.IfVersion)
	}
	if raw {
		if err := s.prepareRaw(ctx, p, m != nil, md, req.Record, cas); err != nil {
			return "", err
		}
	}
	sec, err := s.kv.Put(ctx, p, recordData(req.Target.Format, req.Record), api.WithCheckAndSet(cas))
	if err != nil {
		return "", mapErr("write", p, err)
	}
	if sec == nil || sec.VersionMetadata == nil {
		return "", fmt.Errorf("vault: write %s: the response holds no version", p)
	}
	ver := sec.VersionMetadata.Version
	if err := s.putMetadata(ctx, p, req.Target.Format, req.Record, ver, md); err != nil {
		// The data landed (and for raw, with its metadata); a retry of
		// this request completes the rest.
		return "", err
	}
	return secrets.Version(strconv.Itoa(ver)), nil
}

// finishLanded checks whether the current version holds exactly req's key (a
// retry whose first attempt wrote the data but not all the metadata) and, if
// so, writes the metadata.
func (s *Store) finishLanded(ctx context.Context, req secrets.WriteRequest, ver int, md map[string]string) (bool, error) {
	sec, err := s.kv.GetVersion(ctx, req.Target.Path, ver)
	if err != nil {
		return false, mapErr("write", req.Target.Path, err)
	}
	if sec == nil || sec.Data == nil {
		return false, nil
	}
	key, _ := sec.Data["api_key"].(string)
	if key == "" || key != req.Record.APIKey {
		return false, nil
	}
	if req.Target.Format == secrets.FormatJSON {
		if id, _ := sec.Data["key_id"].(string); id != req.Record.KeyID {
			return false, nil
		}
	}
	return true, s.putMetadata(ctx, req.Target.Path, req.Target.Format, req.Record, ver, md)
}

// prepareRaw patches the entry of version cas+1 for r before the data write,
// pruning entries no reader needs any more: versions older than the previous
// one, losers' entries of the current version, and all but the newest
// maxPending entries of versions not written yet.
// Without metadata yet (a first write) it creates it.
func (s *Store) prepareRaw(ctx context.Context, p string, exists bool, md map[string]string, r secrets.Record, cas int) error {
	e, err := newEntry(r)
	if err != nil {
		return fmt.Errorf("vault: write %s: %w", p, err)
	}
	own := entryKey(cas+1, fingerprint(r.APIKey))
	patch := map[string]any{"managed-by": secrets.ManagedBy, own: e}
	type pending struct{ key, at string }
	var pend []pending
	for k, v := range md {
		ev, _, ok := parseEntryKey(k)
		switch {
		case !ok || k == own:
		case ev < cas-1:
			patch[k] = nil
		case ev == cas && md["version"] == strconv.Itoa(cas):
			// The flat copy names the record of version cas: the other
			// entries of cas are racing writers' that lost.
			var e entry
			if json.Unmarshal([]byte(v), &e) != nil || e.KeyID != md["key_id"] || e.RotationID != md["rotation_id"] {
				patch[k] = nil
			}
		case ev > cas:
			var pe entry
			_ = json.Unmarshal([]byte(v), &pe)
			pend = append(pend, pending{k, pe.WrittenAt})
		}
	}
	sort.Slice(pend, func(i, j int) bool { return pend[i].at > pend[j].at })
	for i, pe := range pend {
		if i >= maxPending-1 {
			patch[pe.key] = nil
		}
	}
	if n := keysAfter(md, patch); n > maxMetadataKeys {
		return fmt.Errorf("vault: write %s: the path's custom metadata would hold %d keys, over Vault's limit of %d: remove keys mrbacd does not use", p, n, maxMetadataKeys)
	}
	if !exists {
		err := s.createMetadata(ctx, p, patch)
		if err == nil {
			return nil
		}
		if !errors.Is(err, secrets.ErrPermissionDenied) {
			return err
		}
		// Another writer created it since (a second create needs
		// "update"), or the policy lacks "create": patch, and explain a 404.
		if perr := s.patchMetadata(ctx, p, patch); perr != nil {
			if errors.Is(perr, secrets.ErrNotFound) {
				return fmt.Errorf("%w (the raw format's first write creates the metadata first: grant \"create\" on the metadata path)", err)
			}
			return perr
		}
		return nil
	}
	return s.patchMetadata(ctx, p, patch)
}

// keysAfter counts the keys md holds after a merge patch.
func keysAfter(md map[string]string, patch map[string]any) int {
	n := len(md)
	for k, v := range patch {
		_, had := md[k]
		switch {
		case v == nil && had:
			n--
		case v != nil && !had:
			n++
		}
	}
	return n
}

func (s *Store) createMetadata(ctx context.Context, p string, cm map[string]any) error {
	vals := map[string]any{}
	for k, v := range cm {
		if v != nil {
			vals[k] = v
		}
	}
	// The KV helper's PutMetadata would also send max_versions and
	// cas_required; only the custom metadata is ours to set.
	_, err := s.client.Logical().WriteWithContext(ctx, s.mount+"/metadata/"+p, map[string]any{"custom_metadata": vals})
	if err != nil {
		return mapErr("write metadata", p, err)
	}
	return nil
}

func (s *Store) patchMetadata(ctx context.Context, p string, cm map[string]any) error {
	if err := s.kv.PatchMetadata(ctx, p, api.KVMetadataPatchInput{CustomMetadata: cm}); err != nil {
		return mapErr("write metadata", p, err)
	}
	return nil
}

// putMetadata writes the flat metadata of version ver after its data write;
// for the raw format also (again) the entry of ver, and prunes entries older
// than the previous version and the entries of ver left by writers who lost.
func (s *Store) putMetadata(ctx context.Context, p string, f secrets.Format, r secrets.Record, ver int, md map[string]string) error {
	cm := map[string]any{}
	for k, v := range r.Metadata() {
		if v == "" {
			cm[k] = nil // Vault refuses empty values; null removes a stale one (merge patch)
		} else {
			cm[k] = v
		}
	}
	cm["version"] = strconv.Itoa(ver)
	if f == secrets.FormatRaw {
		e, err := newEntry(r)
		if err != nil {
			return fmt.Errorf("vault: write %s: %w", p, err)
		}
		own := entryKey(ver, fingerprint(r.APIKey))
		cm[own] = e
		for k := range md {
			if ev, _, ok := parseEntryKey(k); ok && k != own && (ev < ver-1 || ev == ver) {
				cm[k] = nil
			}
		}
	}
	return s.patchMetadata(ctx, p, cm)
}
