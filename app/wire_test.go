package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mrbacd/mrbacd/config"
)

func TestVaultAuth(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tokenFile := write("token", "s.tok")
	roleID := write("role-id", "role-123")
	secretID := write("secret-id", "secret-456")
	t.Setenv("KILL_TEST_VAULT_TOKEN", "s.env")
	tests := []struct {
		name    string
		auth    config.VaultAuth
		check   func(t *testing.T, method, token, role, secret, k8s string)
		wantErr string
	}{
		{name: "token from file", auth: config.VaultAuth{Method: "token", TokenFile: tokenFile},
			check: func(t *testing.T, m, tok, _, _, _ string) {
				if m != "token" || tok != "s.tok" {
					t.Fatalf("got %s %q", m, tok)
				}
			}},
		{name: "token from env", auth: config.VaultAuth{Method: "token", TokenEnv: "KILL_TEST_VAULT_TOKEN"},
			check: func(t *testing.T, m, tok, _, _, _ string) {
				if tok != "s.env" {
					t.Fatalf("got %q", tok)
				}
			}},
		{name: "approle from files", auth: config.VaultAuth{Method: "approle", RoleIDFile: roleID, SecretIDFile: secretID, Mount: "approle"},
			check: func(t *testing.T, m, _, role, secret, _ string) {
				if m != "approle" || role != "role-123" || secret != "secret-456" {
					t.Fatalf("got %s %q %q", m, role, secret)
				}
			}},
		{name: "kubernetes", auth: config.VaultAuth{Method: "kubernetes", Role: "mrbacd", JWTFile: "/var/run/jwt"},
			check: func(t *testing.T, m, _, _, _, k8s string) {
				if m != "kubernetes" || k8s != "mrbacd" {
					t.Fatalf("got %s %q", m, k8s)
				}
			}},
		{name: "missing token file", auth: config.VaultAuth{Method: "token", TokenFile: filepath.Join(dir, "nope")}, wantErr: "token"},
		{name: "unset token env", auth: config.VaultAuth{Method: "token", TokenEnv: "KILL_TEST_UNSET_VAR"}, wantErr: "KILL_TEST_UNSET_VAR"},
		{name: "approle without secret id", auth: config.VaultAuth{Method: "approle", RoleIDFile: roleID}, wantErr: "secret id"},
		{name: "unknown method", auth: config.VaultAuth{Method: "ldap"}, wantErr: "ldap"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := vaultAuth(tc.auth)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				for _, secret := range []string{"s.tok", "s.env", "role-123", "secret-456"} {
					if strings.Contains(err.Error(), secret) {
						t.Fatal("the error quotes a secret")
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o.Method, o.Token, o.RoleID, o.SecretID, o.K8sRole)
		})
	}
}
