package config

import (
	"strings"
	"testing"
	"time"
)

// ha.lease defaults to 15s and is bounded; a bad one is reported at its line.
func TestHALease(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ha       string
		want     time.Duration
		wantErr  string
		wantLine int
	}{
		{name: "absent: the default", want: 15 * time.Second},
		{name: "set", ha: "ha: {lease: 30s}\n", want: 30 * time.Second},
		{name: "the shortest", ha: "ha:\n  lease: 1s\n", want: time.Second},
		{name: "too short", ha: "ha:\n  lease: 500ms\n", wantErr: "ha.lease: must be from 1s to 10m0s", wantLine: 4},
		{name: "too long", ha: "ha: {lease: 1h}\n", wantErr: "ha.lease: must be from 1s to 10m0s", wantLine: 3},
		{name: "not a duration", ha: "ha: {lease: soon}\n", wantErr: "invalid duration", wantLine: 3},
		{name: "unknown field", ha: "ha: {lease: 15s, ttl: 3s}\n", wantErr: "ttl", wantLine: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("ha.yaml", []byte(minimalBody+tc.ha))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.HA.Lease.D() != tc.want {
					t.Fatalf("ha.lease = %s, want %s", cfg.HA.Lease.D(), tc.want)
				}
				return
			}
			ps, ok := err.(Problems)
			if !ok || len(ps) != 1 {
				t.Fatalf("err = %v, want one problem", err)
			}
			if p := ps[0]; !strings.Contains(p.String(), tc.wantErr) || p.File != "ha.yaml" || p.Line != tc.wantLine {
				t.Fatalf("problem = %s (line %d), want %q at ha.yaml line %d", p, p.Line, tc.wantErr, tc.wantLine)
			}
		})
	}
}
