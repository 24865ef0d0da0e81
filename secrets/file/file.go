// Package file is the embedded secret store: one JSON file per target under a
// directory, for the demo and small setups.
//
// Layout: the target path "team/dev" lives in DIR/team/dev.json (mode 0600,
// directories 0700). Each file is an envelope holding the current version and
// the one before it:
//
//	{"current": {"version": 3, "format": "json", "value": "<stored value>",
//	             "metadata": {"managed-by": "mrbacd", "key_id": ...}, "token": "..."},
//	 "previous": {...}}
//
// "value" is what secrets.Encode produced: the record's JSON, or the bare key
// for the raw format (then "metadata" carries the other fields). A consumer
// outside Go can read the key with `jq -r .current.value`.
//
// Temporary files a crash left behind are removed by New once they are older
// than ten minutes.
//
// Writes are compare-and-set on the version counter, serialized across
// goroutines and processes by flock(2) on DIR/.mrbacd.lock, and atomic: the
// new envelope goes to a temporary file in the same directory, is fsynced,
// renamed over the old one, and the directory is fsynced. Readers never see a
// partial file.
//
// A record file owned by another user is refused with secrets.ErrPermissionDenied
// (as ssh refuses foreign keys), even when running as root. So is a symlink
// anywhere below the store's directory (never followed: each path element
// is opened O_NOFOLLOW relative to its parent), a record that is not a
// regular file (a FIFO is opened non-blocking, so it cannot hang the
// daemon), and a directory, the store's own included, that group or others
// can write (see safeopen.go). A missing store
// directory (an unmounted volume) and I/O errors are secrets.ErrUnavailable.
package file

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mrbacd/mrbacd/secrets"
)

const (
	lockName = ".mrbacd.lock"
	fileMode = 0o600
	dirMode  = 0o700
	ext      = ".json"
)

// Store keeps records in files under one directory. It is safe for
// concurrent use by goroutines and by processes sharing the directory.
type Store struct {
	dir string
	// dies simulates a process killed between the steps of a write (tests
	// only): called before each step that changes the disk, it returns an
	// error once the "process" is dead, and the write stops where it is,
	// leaving behind what a SIGKILL would (no clean-up of its temp file).
	dies func() error
}

var _ secrets.Store = (*Store)(nil)

// New returns a store rooted at dir, creating it (mode 0700) if needed.
func New(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("file store: directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	if err := os.MkdirAll(abs, dirMode); err != nil {
		return nil, fmt.Errorf("file store: creating %s: %w", abs, classify(err))
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("file store: %w", classify(err))
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("file store: %s is not a directory", abs)
	}
	if err := checkRootDir(abs); err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	removeStaleTemps(abs, time.Now().Add(-staleTempAge))
	return &Store{dir: abs}, nil
}

// staleTempAge is how old a temporary file must be before New removes it: a
// live writer keeps one for milliseconds; older ones are a crash's leftovers
// (and hold a key).
const staleTempAge = 10 * time.Minute

// removeStaleTemps deletes temporary files older than before, best effort.
func removeStaleTemps(dir string, before time.Time) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		if info, err := d.Info(); err == nil && info.ModTime().Before(before) {
			_ = os.Remove(p)
		}
		return nil
	})
}

// Dir returns the store's root directory.
func (s *Store) Dir() string { return s.dir }

// Name returns "file".
func (s *Store) Name() string { return "file" }

// entry is one stored version.
type entry struct {
	Version   int64             `json:"version"`
	Format    string            `json:"format"`
	Value     string            `json:"value"`
	Metadata  map[string]string `json:"metadata"`
	Token     string            `json:"token,omitempty"`
	WrittenAt time.Time         `json:"written_at"`
}

// envelope is the content of one record file.
type envelope struct {
	Current  *entry `json:"current"`
	Previous *entry `json:"previous,omitempty"`
}

func formatName(f secrets.Format) string {
	if f == secrets.FormatRaw {
		return "raw"
	}
	return "json"
}

// ValidatePath checks a target path: relative, slash-separated, no empty,
// "." or ".." element, no element starting with a dot, no NUL or backslash.
func ValidatePath(p string) error {
	if p == "" {
		return errors.New("path is empty")
	}
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q is absolute; use a path relative to the store directory", p)
	}
	if strings.ContainsAny(p, "\x00\\") {
		return fmt.Errorf("path %q contains a NUL or backslash", p)
	}
	for _, el := range strings.Split(p, "/") {
		switch {
		case el == "":
			return fmt.Errorf("path %q has an empty element", p)
		case el == "." || el == "..":
			return fmt.Errorf("path %q has a %q element", p, el)
		case strings.HasPrefix(el, "."):
			return fmt.Errorf("path %q has an element starting with a dot", p)
		}
	}
	return nil
}

// file returns the record file of a target path.
func (s *Store) file(p string) (string, error) {
	if err := ValidatePath(p); err != nil {
		return "", fmt.Errorf("file store: %w", err)
	}
	return filepath.Join(s.dir, filepath.FromSlash(p)+ext), nil
}

// classify maps an OS error to the sentinel callers branch on.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %w", secrets.ErrPermissionDenied, err)
	default:
		return fmt.Errorf("%w: %w", secrets.ErrUnavailable, err)
	}
}

// checkRoot reports a vanished store directory as unavailable, and one
// that others can write (changed since New) as refused.
func (s *Store) checkRoot() error {
	st, err := os.Stat(s.dir)
	if err != nil {
		return fmt.Errorf("file store: directory %s: %w", s.dir, classify(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("file store: %w: %s is not a directory", secrets.ErrUnavailable, s.dir)
	}
	if err := checkRootDir(s.dir); err != nil {
		return fmt.Errorf("file store: %w", err)
	}
	return nil
}

// load reads a record file (see openRecord); (nil, nil) when it does not
// exist.
func (s *Store) load(p string) (*envelope, error) {
	if err := s.checkRoot(); err != nil {
		return nil, err
	}
	f, err := s.openRecord(p)
	if err != nil {
		return nil, fmt.Errorf("file store: reading %s: %w", p, err)
	}
	if f == nil {
		return nil, nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("file store: reading %s: %w", p, classify(err))
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("file store: %s: %w: the record file is owned by uid %d, not by this process (uid %d)",
			p, secrets.ErrPermissionDenied, sys.Uid, os.Geteuid())
	}
	var env envelope
	dec := json.NewDecoder(f)
	if err := dec.Decode(&env); err != nil || env.Current == nil {
		// Never quote the content: it holds a key.
		return nil, fmt.Errorf("file store: %s: the record file is not a valid envelope", p)
	}
	return &env, nil
}

// Read returns the current record of t.
func (s *Store) Read(ctx context.Context, t secrets.Target) (secrets.Versioned, error) {
	if err := ctx.Err(); err != nil {
		return secrets.Versioned{}, fmt.Errorf("file store: %w", err)
	}
	if err := ValidatePath(t.Path); err != nil {
		return secrets.Versioned{}, fmt.Errorf("file store: %w", err)
	}
	env, err := s.load(t.Path)
	if err != nil {
		return secrets.Versioned{}, err
	}
	if env == nil {
		return secrets.Versioned{}, fmt.Errorf("file store: %s: %w", t.Path, secrets.ErrNotFound)
	}
	rec, err := secrets.Decode(t.Format, []byte(env.Current.Value), env.Current.Metadata)
	if err != nil {
		return secrets.Versioned{}, fmt.Errorf("file store: %s: %w", t.Path, err)
	}
	return secrets.Versioned{Record: rec, Version: version(env.Current.Version)}, nil
}

func version(n int64) secrets.Version { return secrets.Version(strconv.FormatInt(n, 10)) }

// Describe reports whether t exists, its current version, how many versions
// are kept (at most 2: current and previous) and the current metadata.
func (s *Store) Describe(ctx context.Context, t secrets.Target) (secrets.Description, error) {
	if err := ctx.Err(); err != nil {
		return secrets.Description{}, fmt.Errorf("file store: %w", err)
	}
	if err := ValidatePath(t.Path); err != nil {
		return secrets.Description{}, fmt.Errorf("file store: %w", err)
	}
	env, err := s.load(t.Path)
	if err != nil || env == nil {
		return secrets.Description{}, err
	}
	d := secrets.Description{Exists: true, Current: version(env.Current.Version), Versions: 1, Metadata: map[string]string{}}
	if env.Previous != nil {
		d.Versions = 2
	}
	for k, v := range env.Current.Metadata {
		d.Metadata[k] = v
	}
	return d, nil
}

// Write stores req.Record as the new current version if the current version
// is req.IfVersion. A retried write whose token and key id match the current
// version returns that version without writing.
func (s *Store) Write(ctx context.Context, req secrets.WriteRequest) (secrets.Version, error) {
	if err := ValidatePath(req.Target.Path); err != nil {
		return "", fmt.Errorf("file store: %w", err)
	}
	value, err := secrets.Encode(req.Target.Format, req.Record)
	if err != nil {
		return "", fmt.Errorf("file store: encoding %s: %w", req.Target.Path, err)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return "", err
	}
	defer unlock()

	env, err := s.load(req.Target.Path)
	if err != nil {
		return "", err
	}
	var cur secrets.Version
	var next int64 = 1
	if env != nil {
		cur = version(env.Current.Version)
		next = env.Current.Version + 1
		if req.Token != "" && env.Current.Token == req.Token && env.Current.Metadata["key_id"] == req.Record.KeyID {
			return cur, nil // a retry of a write that landed
		}
	}
	if cur != req.IfVersion {
		return "", fmt.Errorf("file store: %s: %w: current version %q, expected %q", req.Target.Path, secrets.ErrConflict, cur, req.IfVersion)
	}
	newEnv := envelope{Current: &entry{
		Version: next, Format: formatName(req.Target.Format), Value: string(value),
		Metadata: req.Record.Metadata(), Token: req.Token, WrittenAt: time.Now().UTC(),
	}}
	if env != nil {
		newEnv.Previous = env.Current
	}
	data, err := json.MarshalIndent(newEnv, "", "  ")
	if err != nil {
		return "", fmt.Errorf("file store: encoding %s: %w", req.Target.Path, err)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("file store: %w", err)
	}
	if err := s.writeAtomic(req.Target.Path, append(data, '\n')); err != nil {
		return "", fmt.Errorf("file store: writing %s: %w", req.Target.Path, err)
	}
	return version(next), nil
}

// lock takes the store-wide write lock, waiting until ctx is done.
func (s *Store) lock(ctx context.Context) (func(), error) {
	if err := s.checkRoot(); err != nil {
		return nil, err
	}
	f, err := s.openLock()
	if err != nil {
		return nil, fmt.Errorf("file store: opening lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("file store: locking: %w", classify(err))
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("file store: %w: waiting for the write lock: %w", secrets.ErrUnavailable, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// writeAtomic replaces the record file of target path p with data: temp
// file in the same directory, fsync, rename, fsync of the directory, all
// through the directory's descriptor (openDirs: no symlink followed). On
// error nothing is left behind; a crash at any point leaves the old file
// whole (and at worst a stray temp file, which New removes once it is old).
func (s *Store) writeAtomic(p string, data []byte) error {
	died := func() error {
		if s.dies == nil {
			return nil
		}
		return s.dies()
	}
	if err := died(); err != nil {
		return err
	}
	dirs, base := splitRecord(p)
	dfd, err := openDirs(s.dir, dirs, true)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(dfd), filepath.Join(s.dir, filepath.FromSlash(path.Dir(p))))
	defer d.Close()
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := ".tmp-" + base + "-" + hex.EncodeToString(rnd[:])
	fd, err := syscall.Openat(dfd, tmp, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, fileMode)
	if err != nil {
		return classify(&os.PathError{Op: "create", Path: tmp, Err: err})
	}
	f := os.NewFile(uintptr(fd), tmp)
	ok := false
	defer func() {
		if !ok {
			f.Close()
			syscall.Unlinkat(dfd, tmp)
		}
	}()
	if err := died(); err != nil { // killed with an empty temp file
		ok = true
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		return classify(err)
	}
	if err := f.Sync(); err != nil {
		return classify(err)
	}
	if err := f.Close(); err != nil {
		return classify(err)
	}
	if err := died(); err != nil { // killed with a whole temp file, not yet renamed
		ok = true
		return err
	}
	if err := syscall.Renameat(dfd, tmp, dfd, base); err != nil {
		return classify(&os.LinkError{Op: "rename", Old: tmp, New: base, Err: err})
	}
	ok = true
	if err := died(); err != nil { // killed after the rename, before the directory's fsync
		return err
	}
	return classify(d.Sync())
}
