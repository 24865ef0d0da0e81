package testenv

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Postgres gives each test a database of its own, reachable through DSN,
// whose sessions TerminateSessions ends, and which is gone after the test.
func TestPostgres(t *testing.T) {
	ctx := context.Background()
	var name string
	t.Run("use", func(t *testing.T) {
		pg := Postgres(t)
		name = pg.Name
		c, err := pgx.Connect(ctx, pg.DSN)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var db string
		if err := c.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil || db != pg.Name {
			t.Fatalf("connected to %q (%v), want %q", db, err, pg.Name)
		}
		if n := pg.TerminateSessions(t); n != 1 {
			t.Fatalf("TerminateSessions ended %d sessions, want 1", n)
		}
		if err := c.Ping(ctx); err == nil {
			t.Fatal("the terminated session still answers")
		}
		if other := Postgres(t); other.Name == pg.Name || other.DSN == pg.DSN {
			t.Fatalf("two tests share database %s", pg.Name)
		}
	})
	admin := adminConn(ctx, t, postgresAdmin())
	defer admin.Close(ctx)
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil || n != 0 {
		t.Fatalf("database %s still exists after its test (%d, %v)", name, n, err)
	}
}
