package app

import (
	"testing"

	"github.com/mrbacd/mrbacd/config"
)

func TestSameStoreSetup(t *testing.T) {
	base := func() *config.Config {
		return &config.Config{
			Secrets: config.Secrets{File: &config.FileStore{Dir: "/var/lib/mrbacd/secrets"}},
			Keys:    []config.Key{{Name: "a", Store: config.KeyStore{Backend: "file", Path: "team/a"}}},
		}
	}
	tests := []struct {
		name   string
		change func(c *config.Config)
		want   bool
	}{
		{name: "unchanged", change: func(*config.Config) {}, want: true},
		{name: "another key on the same backend", change: func(c *config.Config) {
			c.Keys = append(c.Keys, config.Key{Name: "b", Store: config.KeyStore{Backend: "file", Path: "team/b"}})
		}, want: true},
		{name: "file store moved", change: func(c *config.Config) { c.Secrets.File = &config.FileStore{Dir: "/srv/secrets"} }, want: false},
		{name: "a key on a backend not used before", change: func(c *config.Config) {
			c.Secrets.AWS = &config.AWSStore{Region: "eu-west-3"}
			c.Keys = append(c.Keys, config.Key{Name: "b", Store: config.KeyStore{Backend: "aws", SecretID: "b"}})
		}, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.change(c)
			if got := sameStoreSetup(base(), c); got != tc.want {
				t.Fatalf("sameStoreSetup = %v, want %v", got, tc.want)
			}
		})
	}
}
