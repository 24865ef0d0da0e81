package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/journal/postgres"
)

// The DSN is a secret: a failing open names neither it nor its password.
func TestOpenErrorsHideTheDSN(t *testing.T) {
	const pw = "s3cr3t-Pa55w0rd-do-not-leak"
	closed := testenv.FreePort(t) // nothing listens there
	cases := []struct {
		name string
		dsn  string
	}{
		{name: "nothing listening (URL)", dsn: fmt.Sprintf("postgres://mrbacd:%s@127.0.0.1:%d/journal?sslmode=disable&connect_timeout=2", pw, closed)},
		{name: "nothing listening (key=value)", dsn: fmt.Sprintf("host=127.0.0.1 port=%d user=mrbacd password=%s dbname=journal sslmode=disable connect_timeout=2", closed, pw)},
		{name: "unknown database", dsn: fmt.Sprintf("postgres://postgres:%s@127.0.0.1:5432/mrbacd_no_such_db?sslmode=disable", pw)},
		{name: "malformed URL", dsn: fmt.Sprintf("postgres://mrbacd:%s@127.0.0.1:notaport/journal", pw)},
		{name: "malformed key=value", dsn: fmt.Sprintf("host=127.0.0.1 password='%s dbname=journal", pw)},
		{name: "unknown parameter", dsn: fmt.Sprintf("postgres://mrbacd:%s@127.0.0.1:%d/journal?sslmode=bogus", pw, closed)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			db, err := postgres.Open(ctx, tc.dsn)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			if strings.Contains(msg, pw) || strings.Contains(msg, tc.dsn) {
				t.Fatalf("error leaks the DSN or its password: %s", msg)
			}
			if !strings.Contains(msg, "postgres journal") {
				t.Fatalf("error does not say what failed: %s", msg)
			}
		})
	}
}
