package vault

// Authentication: the login by token, AppRole (optionally a response-wrapped
// secret id) or Kubernetes, the renewal of the token it gives, and the
// re-login when renewal ends or the token was revoked.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/mrbacd/mrbacd/secrets"
)

// AuthOptions selects how the store logs in.
type AuthOptions struct {
	// Method is "token" (the default), "approle" or "kubernetes".
	Method string
	// Token is the Vault token for Method "token" (resolved by the caller from a file or env).
	Token string
	// RoleID and SecretID are the AppRole credentials (resolved by the caller).
	RoleID, SecretID string
	// WrappedSecretID means SecretID is a response-wrapping token to unwrap
	// into the real secret id (once; the secret id is then kept in memory).
	WrappedSecretID bool
	// AuthMount is the auth method's mount path (default "approle" or "kubernetes").
	AuthMount string
	// K8sRole is the Vault role for Kubernetes auth.
	K8sRole string
	// JWTFile is the service account token file for Kubernetes auth, read at
	// every login (default /var/run/secrets/kubernetes.io/serviceaccount/token).
	JWTFile string
}

// String describes the auth method without its credentials, so a
// formatted AuthOptions (or Options) never shows a token or secret id.
func (a AuthOptions) String() string {
	set := func(v string) string {
		if v == "" {
			return "unset"
		}
		return "set"
	}
	return fmt.Sprintf("{method=%s token=%s role_id=%s secret_id=%s wrapped=%t mount=%s k8s_role=%s jwt_file=%s}",
		a.Method, set(a.Token), set(a.RoleID), set(a.SecretID), a.WrappedSecretID, a.AuthMount, a.K8sRole, a.JWTFile)
}

// GoString is String, for %#v.
func (a AuthOptions) GoString() string { return "vault.AuthOptions" + a.String() }

// LogValue keeps the credentials out of slog records.
func (a AuthOptions) LogValue() slog.Value { return slog.StringValue(a.String()) }

// login authenticates and returns the auth secret to renew (nil when the
// token does not expire or cannot be renewed).
func (s *Store) login(ctx context.Context) (*api.Secret, error) {
	s.loginMu.Lock()
	defer s.loginMu.Unlock()
	switch s.auth.Method {
	case "token":
		s.client.SetToken(s.auth.Token)
		sec, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, mapErr("token lookup", "", err)
		}
		ttl, _ := sec.TokenTTL()
		renewable, _ := sec.TokenIsRenewable()
		if ttl <= 0 || !renewable {
			return nil, nil
		}
		return &api.Secret{Auth: &api.SecretAuth{ClientToken: s.auth.Token, Renewable: true, LeaseDuration: int(ttl.Seconds())}}, nil
	case "approle":
		if s.secretID == "" {
			s.secretID = s.auth.SecretID
			if s.auth.WrappedSecretID {
				id, err := s.unwrapSecretID(ctx, s.auth.SecretID)
				if err != nil {
					s.secretID = ""
					return nil, err
				}
				s.secretID = id
			}
		}
		return s.loginWith(ctx, map[string]any{"role_id": s.auth.RoleID, "secret_id": s.secretID})
	case "kubernetes":
		jwt, err := os.ReadFile(s.auth.JWTFile)
		if err != nil {
			return nil, fmt.Errorf("vault: kubernetes login: reading the service account token: %w", err)
		}
		return s.loginWith(ctx, map[string]any{"role": s.auth.K8sRole, "jwt": strings.TrimSpace(string(jwt))})
	}
	return nil, fmt.Errorf("vault: unknown auth method %q", s.auth.Method)
}

func (s *Store) unwrapSecretID(ctx context.Context, wrapping string) (string, error) {
	c, err := s.client.Clone()
	if err != nil {
		return "", fmt.Errorf("vault: unwrap: %w", err)
	}
	c.SetToken(strings.TrimSpace(wrapping))
	sec, err := c.Logical().UnwrapWithContext(ctx, "")
	if err != nil {
		return "", mapErr("unwrapping the secret id", "", err)
	}
	if sec == nil || sec.Data == nil {
		return "", errors.New("vault: unwrapping the secret id: empty response")
	}
	id, _ := sec.Data["secret_id"].(string)
	if id == "" {
		return "", errors.New("vault: unwrapping the secret id: the response holds no secret_id")
	}
	return id, nil
}

func (s *Store) loginWith(ctx context.Context, body map[string]any) (*api.Secret, error) {
	c, err := s.client.Clone()
	if err != nil {
		return nil, fmt.Errorf("vault: login: %w", err)
	}
	c.ClearToken()
	sec, err := c.Logical().WriteWithContext(ctx, "auth/"+strings.Trim(s.auth.AuthMount, "/")+"/login", body)
	if err != nil {
		return nil, mapErr(s.auth.Method+" login", "", err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, fmt.Errorf("vault: %s login: the response holds no token", s.auth.Method)
	}
	s.client.SetToken(sec.Auth.ClientToken)
	s.log.Info("vault login", "method", s.auth.Method, "ttl", time.Duration(sec.Auth.LeaseDuration)*time.Second,
		"renewable", sec.Auth.Renewable)
	return sec, nil
}

// renew keeps the token alive: a lifetime watcher renews it; when renewal
// ends (max TTL, revoked), AppRole and Kubernetes log in again with backoff.
func (s *Store) renew(auth *api.Secret) {
	defer s.wg.Done()
	backoff := time.Second
	for {
		if auth == nil {
			return // token auth with a non-expiring or non-renewable token: nothing to do
		}
		fresh, stopped := s.watch(auth)
		if stopped {
			return
		}
		if fresh != nil { // an operation logged in again on its own
			auth = fresh
			continue
		}
		if s.auth.Method == "token" {
			s.log.Error("vault token can no longer be renewed and token auth cannot log in again", "method", "token")
			return
		}
		// Log in again until it works or the store closes.
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			next, err := s.login(ctx)
			cancel()
			if err == nil {
				auth = next
				backoff = time.Second
				break
			}
			s.log.Error("vault login failed", "method", s.auth.Method, "err", err)
			select {
			case <-s.stop:
				return
			case <-time.After(backoff):
			}
			if backoff < time.Minute {
				backoff *= 2
			}
		}
	}
}

// watch runs a lifetime watcher on auth until renewal ends (nil, false), the
// store closes (nil, true) or an operation logged in again (fresh, false).
func (s *Store) watch(auth *api.Secret) (fresh *api.Secret, stopped bool) {
	w, err := s.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: auth})
	if err != nil {
		s.log.Error("vault token watcher", "method", s.auth.Method, "err", err)
		return nil, false
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-s.stop:
			return nil, true
		case a := <-s.relogged:
			return a, false
		case r := <-w.RenewCh():
			ttl := 0
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				ttl = r.Secret.Auth.LeaseDuration
			}
			s.log.Info("vault token renewed", "method", s.auth.Method, "ttl", time.Duration(ttl)*time.Second)
		case err := <-w.DoneCh():
			if err != nil {
				s.log.Warn("vault token renewal ended", "method", s.auth.Method, "err", err)
			} else {
				s.log.Info("vault token renewal ended", "method", s.auth.Method)
			}
			return nil, false
		}
	}
}

// withRelogin runs op, and once more after logging in again when it failed
// because the token was revoked (reloginIfRevoked).
func withRelogin[A, R any](ctx context.Context, s *Store, arg A, op func(context.Context, A) (R, error)) (R, error) {
	v, err := op(ctx, arg)
	if s.reloginIfRevoked(ctx, err) {
		v, err = op(ctx, arg)
	}
	return v, err
}

// reloginIfRevoked handles a permission denied that comes from a dead token
// rather than the policy: for AppRole and Kubernetes, when the token no
// longer looks itself up, it logs in again (at most every 10s) and reports
// true so the caller retries once.
func (s *Store) reloginIfRevoked(ctx context.Context, err error) bool {
	if s.auth.Method == "token" || !errors.Is(err, secrets.ErrPermissionDenied) {
		return false
	}
	s.reloginMu.Lock()
	defer s.reloginMu.Unlock()
	if time.Since(s.lastRelogin) < 10*time.Second {
		return false
	}
	if _, lerr := s.client.Auth().Token().LookupSelfWithContext(ctx); lerr == nil ||
		!errors.Is(mapErr("token lookup", "", lerr), secrets.ErrPermissionDenied) {
		return false // the token is alive (or Vault is down): the denial stands
	}
	s.lastRelogin = time.Now()
	auth, lerr := s.login(ctx)
	if lerr != nil {
		s.log.Error("vault login after a revoked token failed", "method", s.auth.Method, "err", lerr)
		return false
	}
	s.log.Warn("vault token was revoked; logged in again", "method", s.auth.Method)
	select { // hand the new token to the renewer, replacing an unread one
	case <-s.relogged:
	default:
	}
	s.relogged <- auth
	return true
}
