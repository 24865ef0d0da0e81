package file

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/storetest"
)

func TestMain(m *testing.M) {
	if os.Getenv("MRBACD_FILESTORE_CHILD") != "" {
		os.Exit(childWriter())
	}
	os.Exit(m.Run())
}

func readEnvelope(t *testing.T, s *Store, p string) envelope {
	t.Helper()
	name, err := s.file(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	return env
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		dir := filepath.Join(t.TempDir(), "store")
		s, err := New(dir)
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Harness{
			Store: s,
			Peek: func(t *testing.T, p string) string {
				return readEnvelope(t, s, p).Current.Value
			},
			// A store over the same directory whose process dies after n
			// steps that change the disk.
			Crash: func(t *testing.T, n int) secrets.Store {
				steps := 0
				return &Store{dir: s.dir, dies: func() error {
					if steps >= n {
						return storetest.ErrCrashed
					}
					steps++
					return nil
				}}
			},
			Denied: func(t *testing.T, p string) (secrets.Store, func()) {
				name, _ := s.file(p)
				if os.Geteuid() == 0 {
					// root reads anything: the store's ownership check refuses it.
					if err := os.Chown(name, 65534, 65534); err != nil {
						t.Fatal(err)
					}
					return s, func() { _ = os.Chown(name, 0, 0) }
				}
				if err := os.Chmod(name, 0); err != nil {
					t.Fatal(err)
				}
				return s, func() { _ = os.Chmod(name, fileMode) }
			},
			// An unmounted volume: the directory disappears, then comes back.
			Outage:  func(t *testing.T) { mustRename(t, dir, dir+".away") },
			Restore: func(t *testing.T) { mustRename(t, dir+".away", dir) },
		}
	})
}

func mustRename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

func TestValidatePath(t *testing.T) {
	tests := []struct {
		path string
		ok   bool
	}{
		{path: "mistral/dev-team", ok: true},
		{path: "a", ok: true},
		{path: "a/b/c_d.e", ok: true},
		{path: "", ok: false},
		{path: "/etc/passwd", ok: false},
		{path: "../x", ok: false},
		{path: "a/../b", ok: false},
		{path: "a/./b", ok: false},
		{path: "a//b", ok: false},
		{path: "a/", ok: false},
		{path: ".hidden", ok: false},
		{path: "a/.tmp-x", ok: false},
		{path: "a\\b", ok: false},
		{path: "a\x00b", ok: false},
	}
	for _, tc := range tests {
		t.Run(strconv.Quote(tc.path), func(t *testing.T) {
			err := ValidatePath(tc.path)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidatePath(%q) = %v, want ok=%v", tc.path, err, tc.ok)
			}
		})
	}
}

func TestModesAndNoLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := New(filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tg := secrets.Target{Path: "team/dev/key"}
	var v secrets.Version
	for i := 0; i < 3; i++ {
		r := secrets.Record{APIKey: fmt.Sprintf("sk-%d", i), KeyID: fmt.Sprint(i), RotationID: fmt.Sprint("r", i)}
		if v, err = s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r, IfVersion: v, Token: r.RotationID}); err != nil {
			t.Fatal(err)
		}
	}
	env := readEnvelope(t, s, tg.Path)
	if env.Current.Version != 3 || env.Previous == nil || env.Previous.Version != 2 {
		t.Fatalf("envelope versions: current %d previous %+v", env.Current.Version, env.Previous)
	}
	err = filepath.Walk(s.Dir(), func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		base := filepath.Base(p)
		if strings.HasPrefix(base, ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		want := os.FileMode(fileMode)
		if fi.IsDir() {
			want = dirMode
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCorruptFileDoesNotLeak(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	name, _ := s.file("x")
	if err := os.WriteFile(name, []byte(`{"current": {"value": "sk-SECRET-VALUE", "version": `), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Read(context.Background(), secrets.Target{Path: "x"})
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("Read(corrupt) err = %v, want an error without the content", err)
	}
	// A JSON-format read of a raw value does not quote it either.
	if err := os.WriteFile(name, []byte(`{"current": {"value": "sk-SECRET-VALUE", "version": 1, "format": "raw"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Read(context.Background(), secrets.Target{Path: "x", Format: secrets.FormatJSON})
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("Read(raw as json) err = %v, want an error without the value", err)
	}
}

func TestNewErrors(t *testing.T) {
	f := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"", f} {
		if _, err := New(dir); err == nil {
			t.Errorf("New(%q) succeeded", dir)
		}
	}
}

// childWriter is the body of a child process in TestCrossProcess: it adds n
// versions to one target with read / compare-and-set / retry on conflict.
func childWriter() int {
	s, err := New(os.Getenv("MRBACD_FILESTORE_DIR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	n, _ := strconv.Atoi(os.Getenv("MRBACD_FILESTORE_N"))
	id := os.Getenv("MRBACD_FILESTORE_CHILD")
	ctx := context.Background()
	tg := secrets.Target{Path: "shared/counter"}
	conflicts := 0
	for i := 0; i < n; {
		cur, err := s.Read(ctx, tg)
		if err != nil && !errors.Is(err, secrets.ErrNotFound) {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		r := secrets.Record{APIKey: "sk-" + id, KeyID: id + "-" + strconv.Itoa(i), RotationID: id + "-" + strconv.Itoa(i)}
		_, err = s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r, IfVersion: cur.Version, Token: r.RotationID})
		switch {
		case err == nil:
			i++
		case errors.Is(err, secrets.ErrConflict):
			conflicts++
		default:
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	fmt.Println(conflicts)
	return 0
}

// TestCrossProcess runs several processes writing the same target at once:
// every successful write must get its own version (no lost update).
func TestCrossProcess(t *testing.T) {
	dir := t.TempDir()
	const procs, n = 4, 25
	cmds := make([]*exec.Cmd, procs)
	outs := make([]strings.Builder, procs)
	for i := range cmds {
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), "MRBACD_FILESTORE_CHILD=p"+strconv.Itoa(i), "MRBACD_FILESTORE_DIR="+dir, "MRBACD_FILESTORE_N="+strconv.Itoa(n))
		c.Stdout = &outs[i]
		c.Stderr = os.Stderr
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = c
	}
	conflicts := 0
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		k, _ := strconv.Atoi(strings.TrimSpace(outs[i].String()))
		conflicts += k
	}
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(context.Background(), secrets.Target{Path: "shared/counter"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != secrets.Version(strconv.Itoa(procs*n)) {
		t.Fatalf("final version %s, want %d: updates were lost", got.Version, procs*n)
	}
	t.Logf("%d processes x %d writes: %d CAS conflicts retried", procs, n, conflicts)
}

func TestNewRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "team"), 0o700); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "team", ".tmp-dev.json-0011223344556677")
	fresh := filepath.Join(dir, "team", ".tmp-dev.json-8899aabbccddeeff")
	for _, f := range []string{old, fresh} {
		if err := os.WriteFile(f, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if _, err := New(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temp file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temp file (a live writer's) removed: %v", err)
	}
}
