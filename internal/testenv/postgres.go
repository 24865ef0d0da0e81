package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresAdminEnv names the variable that overrides the DSN Postgres
// connects to as an administrator (to create and drop test databases).
const PostgresAdminEnv = "MRBACD_TEST_POSTGRES"

// defaultPostgresAdmin is the machine's server: trust auth, user postgres.
const defaultPostgresAdmin = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// PostgresDB is a database of its own for one test on the machine's
// PostgreSQL server, dropped when the test ends.
type PostgresDB struct {
	// DSN connects to the test's database.
	DSN string
	// Name is the database's name.
	Name  string
	admin string
}

// Postgres creates an empty database for t on the machine's PostgreSQL
// (127.0.0.1:5432, or $MRBACD_TEST_POSTGRES) and drops it, with any session
// still on it, when t ends. When the server does not answer the test fails
// with how to start it: it never skips.
func Postgres(t testing.TB) *PostgresDB {
	t.Helper()
	admin := postgresAdmin()
	b := make([]byte, 6)
	rand.Read(b)
	name := "mrbacd_test_" + hex.EncodeToString(b)
	adminExec(t, admin, `CREATE DATABASE `+name)
	t.Cleanup(func() { adminExec(t, admin, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`) })
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("testenv: %s is not a URL: %v", PostgresAdminEnv, err)
	}
	u.Path = "/" + name
	return &PostgresDB{DSN: u.String(), Name: name, admin: admin}
}

// TerminateSessions ends every session connected to the database (as a
// restart of the server would, without disturbing other tests' databases)
// and returns how many it ended.
func (p *PostgresDB) TerminateSessions(t testing.TB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := adminConn(ctx, t, p.admin)
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()`, p.Name).Scan(&n); err != nil {
		t.Fatalf("testenv: terminating sessions of %s: %v", p.Name, err)
	}
	return n
}

// AllowConnections lets new sessions connect to the database (allow) or
// refuses them (as a server that is down would; end the open ones with
// TerminateSessions).
func (p *PostgresDB) AllowConnections(t testing.TB, allow bool) {
	t.Helper()
	adminExec(t, p.admin, fmt.Sprintf(`ALTER DATABASE %s WITH ALLOW_CONNECTIONS %t`, p.Name, allow))
}

// postgresAdmin returns the administrator's DSN.
func postgresAdmin() string {
	if a := os.Getenv(PostgresAdminEnv); a != "" {
		return a
	}
	return defaultPostgresAdmin
}

func adminExec(t testing.TB, admin, stmt string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := adminConn(ctx, t, admin)
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, stmt); err != nil {
		t.Fatalf("testenv: postgres: %s: %v", stmt, err)
	}
}

func adminConn(ctx context.Context, t testing.TB, admin string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("testenv: PostgreSQL does not answer (%v).\n"+
			"Tests need the machine's PostgreSQL server at 127.0.0.1:5432 (trust auth, user postgres, database test),\n"+
			"or an admin DSN in $%s. Start it with:\n"+
			"\tpg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start", err, PostgresAdminEnv)
	}
	return c
}

// String returns the database name (never the DSN, which may hold a password).
func (p *PostgresDB) String() string { return fmt.Sprintf("postgres database %s", p.Name) }
