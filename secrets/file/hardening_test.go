package file

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/secrets"
)

// hardEnv is a store with one record (team/dev) and, beside the store, a
// record of an attacker's (decoy) that a planted symlink points at.
type hardEnv struct {
	s     *Store
	dir   string
	decoy string // a valid envelope outside the store
}

const decoyKey = "sk-DECOYdecoyDECOYdecoy0123456789"

func newHardEnv(t *testing.T) hardEnv {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "store")
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Write(ctx, secrets.WriteRequest{Target: secrets.Target{Path: "team/dev"}, Record: secrets.Record{APIKey: "sk-real", KeyID: "k1"}}); err != nil {
		t.Fatal(err)
	}
	// The decoy is a real envelope (written by another store) so that a
	// store following the symlink would read it without complaint.
	other, err := New(filepath.Join(root, "other"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Write(ctx, secrets.WriteRequest{Target: secrets.Target{Path: "decoy"}, Record: secrets.Record{APIKey: decoyKey, KeyID: "kd"}}); err != nil {
		t.Fatal(err)
	}
	return hardEnv{s: s, dir: dir, decoy: filepath.Join(root, "other", "decoy.json")}
}

// readBounded reads t from s, failing the test if the read blocks.
func readBounded(t *testing.T, s *Store, p string) (secrets.Versioned, error) {
	t.Helper()
	type res struct {
		v   secrets.Versioned
		err error
	}
	ch := make(chan res, 1)
	go func() {
		v, err := s.Read(context.Background(), secrets.Target{Path: p})
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("Read(%s) blocked", p)
		return secrets.Versioned{}, nil
	}
}

// TestRefusesUnsafeFiles: a symlink (as the record or as a directory on
// its path), a FIFO, a directory in place of a record, and directories
// others can write are refused with ErrPermissionDenied; nothing is read
// through them, no read blocks, and no write goes through them.
func TestRefusesUnsafeFiles(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, e hardEnv) string // returns the target path to read
		write bool                                 // a write to the path must be refused too
	}{
		{name: "record is a symlink", setup: func(t *testing.T, e hardEnv) string {
			must(t, os.Symlink(e.decoy, filepath.Join(e.dir, "evil.json")))
			return "evil"
		}, write: true},
		{name: "directory on the path is a symlink", setup: func(t *testing.T, e hardEnv) string {
			must(t, os.Symlink(filepath.Dir(e.decoy), filepath.Join(e.dir, "link")))
			return "link/decoy"
		}, write: true},
		{name: "record is a FIFO", setup: func(t *testing.T, e hardEnv) string {
			must(t, syscall.Mkfifo(filepath.Join(e.dir, "fifo.json"), 0o600))
			return "fifo"
		}, write: true},
		{name: "record is a directory", setup: func(t *testing.T, e hardEnv) string {
			must(t, os.Mkdir(filepath.Join(e.dir, "adir.json"), 0o700))
			return "adir"
		}, write: false},
		{name: "sub-directory writable by others", setup: func(t *testing.T, e hardEnv) string {
			must(t, os.Chmod(filepath.Join(e.dir, "team"), 0o777))
			return "team/dev"
		}, write: true},
		{name: "store directory made writable by others", setup: func(t *testing.T, e hardEnv) string {
			must(t, os.Chmod(e.dir, 0o770))
			return "team/dev"
		}, write: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newHardEnv(t)
			p := tc.setup(t, e)
			v, err := readBounded(t, e.s, p)
			if !errors.Is(err, secrets.ErrPermissionDenied) {
				t.Fatalf("Read: %v (record %+v), want ErrPermissionDenied", err, v.Record.KeyID)
			}
			if strings.Contains(err.Error(), decoyKey) || v.Record.APIKey != "" {
				t.Fatalf("read through the trap: %v", err)
			}
			if !tc.write {
				return
			}
			before, _ := os.ReadFile(e.decoy)
			_, err = e.s.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: p}, IfVersion: secrets.NoVersion,
				Record: secrets.Record{APIKey: "sk-new", KeyID: "k2"}})
			if !errors.Is(err, secrets.ErrPermissionDenied) {
				t.Fatalf("Write: %v, want ErrPermissionDenied", err)
			}
			if after, _ := os.ReadFile(e.decoy); string(after) != string(before) {
				t.Fatal("the write went through the symlink")
			}
		})
	}
}

// TestRefusesUnsafeStoreDir: New and OpenExisting refuse an existing
// directory others can write; a FIFO or symlink as the lock file does not
// block nor redirect a write.
func TestRefusesUnsafeStoreDir(t *testing.T) {
	root := t.TempDir()
	for i, mode := range []os.FileMode{0o777, 0o720, 0o702, os.ModeSticky | 0o777} {
		dir := filepath.Join(root, "d"+strconv.Itoa(i))
		must(t, os.Mkdir(dir, 0o700))
		must(t, os.Chmod(dir, mode))
		if _, err := New(dir); !errors.Is(err, secrets.ErrPermissionDenied) {
			t.Errorf("New on a %v directory: %v", mode, err)
		}
		if _, err := OpenExisting(dir); !errors.Is(err, secrets.ErrPermissionDenied) {
			t.Errorf("OpenExisting on a %v directory: %v", mode, err)
		}
	}
	for name, plant := range map[string]func(string) error{
		"fifo":    func(p string) error { return syscall.Mkfifo(p, 0o600) },
		"symlink": func(p string) error { return os.Symlink(filepath.Join(root, "elsewhere"), p) },
	} {
		t.Run("lock file is a "+name, func(t *testing.T) {
			dir := filepath.Join(root, "lock-"+name)
			s, err := New(dir)
			if err != nil {
				t.Fatal(err)
			}
			must(t, plant(filepath.Join(dir, lockName)))
			done := make(chan error, 1)
			go func() {
				_, err := s.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: "x"}, Record: secrets.Record{APIKey: "sk-x", KeyID: "k"}})
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, secrets.ErrPermissionDenied) {
					t.Fatalf("Write: %v, want ErrPermissionDenied", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Write blocked on the planted lock file")
			}
			if _, err := os.Lstat(filepath.Join(root, "elsewhere")); err == nil {
				t.Fatal("the lock symlink was followed")
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
