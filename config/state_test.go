package config

import (
	"reflect"
	"testing"
)

// The journal is SQLite (state.path, defaulted) or PostgreSQL (state.postgres).
func TestState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state string
		want  State
	}{
		{name: "absent: the SQLite default", state: "", want: State{Path: DefaultStatePath}},
		{name: "SQLite path", state: "state: {path: /srv/mrbacd/journal.db}\n", want: State{Path: "/srv/mrbacd/journal.db"}},
		{name: "PostgreSQL, DSN from the environment", state: "state: {postgres: {dsn_env: MRBACD_PG_DSN}}\n",
			want: State{Postgres: &PostgresState{DSNEnv: "MRBACD_PG_DSN"}}},
		{name: "PostgreSQL, DSN from a file", state: "state:\n  postgres:\n    dsn_file: /run/secrets/pg-dsn\n",
			want: State{Postgres: &PostgresState{DSNFile: "/run/secrets/pg-dsn"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("s.yaml", []byte(minimalBody+tc.state))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.State, tc.want) {
				t.Fatalf("state = %+v (postgres %+v), want %+v (postgres %+v)", cfg.State, cfg.State.Postgres, tc.want, tc.want.Postgres)
			}
		})
	}
}
