package journal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
)

// dirListing returns the names in dir with their size and mtime.
func dirListing(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %d %d", e.Name(), info.Size(), info.ModTime().UnixNano()))
	}
	sort.Strings(out)
	return out
}

func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// live keeps a writer open during the read (a running daemon).
		live bool
	}{
		{name: "journal not in use", live: false},
		{name: "journal open by a writer", live: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "journal.db")
			w, err := Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.MarkOnce(ctx, "budget/a"); err != nil {
				t.Fatal(err)
			}
			if !tc.live {
				w.Close()
			} else {
				defer w.Close()
			}
			before := dirListing(t, dir)
			ro, err := OpenReadOnly(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.live {
				// Written after the reader opened: still seen.
				if _, err := w.MarkOnce(ctx, "budget/b"); err != nil {
					t.Fatal(err)
				}
			}
			for key, want := range map[string]bool{"budget/a": true, "budget/b": tc.live, "budget/c": false} {
				got, err := ro.Marked(ctx, key)
				if err != nil || got != want {
					t.Errorf("Marked(%s) = %v, %v; want %v", key, got, err, want)
				}
			}
			if _, err := ro.StartRun(ctx, "audit", "plan", ""); err == nil {
				t.Error("a write through the read-only journal succeeded")
			}
			if _, err := ro.MarkOnce(ctx, "budget/z"); err == nil {
				t.Error("MarkOnce through the read-only journal succeeded")
			}
			if err := ro.Close(); err != nil {
				t.Fatal(err)
			}
			if !tc.live {
				if after := dirListing(t, dir); !slices.Equal(after, before) {
					t.Errorf("directory changed: %v -> %v", before, after)
				}
			}
		})
	}
}

func TestOpenReadOnlyRefuses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	notDB := filepath.Join(dir, "not-a-journal")
	if err := os.WriteFile(notDB, []byte("hello, not sqlite at all, just text long enough"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		wantErr error
	}{
		{name: "missing file", path: filepath.Join(dir, "nope", "journal.db"), wantErr: ErrNoJournal},
		{name: "empty path", path: "", wantErr: ErrInvalid},
		{name: "a directory", path: dir, wantErr: nil},
		{name: "not a journal", path: notDB, wantErr: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, err := OpenReadOnly(ctx, tc.path)
			if err == nil {
				db.Close()
				t.Fatal("opened")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if _, serr := os.Stat(filepath.Join(dir, "nope")); serr == nil {
				t.Fatal("created the directory")
			}
		})
	}
}
