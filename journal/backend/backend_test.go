package backend_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/journal/backend"
)

// Each configured engine opens, and a write through one handle is read
// through another opened from the same config (as two processes would).
func TestOpen(t *testing.T) {
	pg := testenv.Postgres(t)
	dsnFile := filepath.Join(t.TempDir(), "pg-dsn")
	if err := os.WriteFile(dsnFile, []byte(pg.DSN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MRBACD_TEST_PG_DSN", pg.DSN)
	versions := map[string]int{}
	for _, tc := range []struct {
		name     string
		state    config.State
		describe string
	}{
		{name: "sqlite", state: config.State{Path: filepath.Join(t.TempDir(), "state.db")}, describe: "sqlite "},
		{name: "postgres dsn_env", state: config.State{Postgres: &config.PostgresState{DSNEnv: "MRBACD_TEST_PG_DSN"}}, describe: "postgres (dsn_env MRBACD_TEST_PG_DSN)"},
		{name: "postgres dsn_file", state: config.State{Postgres: &config.PostgresState{DSNFile: dsnFile}}, describe: "postgres (dsn_file " + dsnFile + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			a, err := backend.OpenConfig(ctx, &config.Config{State: tc.state})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if versions[tc.name], err = a.SchemaVersion(ctx); err != nil {
				t.Fatal(err)
			}
			b, err := backend.Open(ctx, tc.state)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			mark := fmt.Sprint("open-test-", time.Now().UnixNano())
			if first, err := a.MarkOnce(ctx, mark); err != nil || !first {
				t.Fatalf("MarkOnce = %v %v", first, err)
			}
			if seen, err := b.Marked(ctx, mark); err != nil || !seen {
				t.Fatalf("the other handle does not see the mark: %v %v", seen, err)
			}
			if d := backend.Describe(tc.state); !strings.HasPrefix(d, tc.describe) {
				t.Fatalf("Describe = %q, want prefix %q", d, tc.describe)
			}
		})
	}
	// A schema version means the same tables on either engine.
	if v := versions["sqlite"]; v == 0 || versions["postgres dsn_env"] != v || versions["postgres dsn_file"] != v {
		t.Fatalf("schema versions differ between engines: %v", versions)
	}
}

// Errors say what is wrong and where the DSN came from, never the DSN.
func TestOpenErrors(t *testing.T) {
	const pw = "Pa55-w0rd-that-must-not-leak"
	dsn := fmt.Sprintf("postgres://mrbacd:%s@127.0.0.1:%d/journal?sslmode=disable&connect_timeout=2", pw, testenv.FreePort(t))
	t.Setenv("MRBACD_TEST_BAD_DSN", dsn)
	t.Setenv("MRBACD_TEST_EMPTY_DSN", "")
	for _, tc := range []struct {
		name  string
		state config.State
		want  string
	}{
		{name: "server down", state: config.State{Postgres: &config.PostgresState{DSNEnv: "MRBACD_TEST_BAD_DSN"}}, want: "dsn_env MRBACD_TEST_BAD_DSN"},
		{name: "variable empty", state: config.State{Postgres: &config.PostgresState{DSNEnv: "MRBACD_TEST_EMPTY_DSN"}}, want: "MRBACD_TEST_EMPTY_DSN is not set or empty"},
		{name: "file missing", state: config.State{Postgres: &config.PostgresState{DSNFile: "/nonexistent/pg-dsn"}}, want: "/nonexistent/pg-dsn"},
		{name: "both", state: config.State{Path: "/x.db", Postgres: &config.PostgresState{DSNEnv: "MRBACD_TEST_BAD_DSN"}}, want: "both set"},
		{name: "neither", state: config.State{}, want: "no state.path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			db, err := backend.Open(ctx, tc.state)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), dsn) {
				t.Fatalf("error leaks the DSN: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
	if _, err := backend.Open(context.Background(), config.State{Path: "/x.db", Postgres: &config.PostgresState{DSNEnv: "X"}}); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("both set: %v, want ErrInvalid", err)
	}
}
