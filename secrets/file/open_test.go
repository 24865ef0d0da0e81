package file

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/secrets"
)

func TestOpenExisting(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	dir := filepath.Join(root, "store")
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	target := secrets.Target{Path: "team/dev"}
	if _, err := s.Write(ctx, secrets.WriteRequest{Target: target, Record: secrets.Record{APIKey: "sk-open-existing", KeyID: "k1"}}); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, ".tmp-leftover")
	if err := os.WriteFile(stale, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(root, "plain")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		dir       string
		wantErr   bool
		notExist  bool
		wantKeyID string
	}{
		{name: "existing store", dir: dir, wantErr: false, notExist: false, wantKeyID: "k1"},
		{name: "missing directory", dir: filepath.Join(root, "missing"), wantErr: true, notExist: true, wantKeyID: ""},
		{name: "a file, not a directory", dir: notDir, wantErr: true, notExist: false, wantKeyID: ""},
		{name: "empty", dir: "", wantErr: true, notExist: false, wantKeyID: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := OpenExisting(tc.dir)
			if (err != nil) != tc.wantErr || (tc.notExist && !errors.Is(err, fs.ErrNotExist)) {
				t.Fatalf("OpenExisting(%q) = %v", tc.dir, err)
			}
			if tc.notExist {
				if _, err := os.Stat(tc.dir); err == nil {
					t.Fatal("OpenExisting created the directory")
				}
			}
			if err != nil {
				return
			}
			v, err := st.Read(ctx, target)
			if err != nil || v.KeyID != tc.wantKeyID {
				t.Fatalf("Read = %+v, %v", v.Record.KeyID, err)
			}
			if _, err := os.Stat(stale); err != nil {
				t.Fatal("OpenExisting removed a stale temporary file")
			}
		})
	}
}
