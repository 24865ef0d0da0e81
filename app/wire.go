package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/journal/backend"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/awssm"
	"github.com/mrbacd/mrbacd/secrets/file"
	"github.com/mrbacd/mrbacd/secrets/vault"
)

// NewMistral returns the platform client, its admin key read from
// mistral.admin_key_env or mistral.admin_key_file.
func NewMistral(cfg *config.Config, logger *slog.Logger) (*mistral.Client, error) {
	adminKey, err := config.ResolveSecret(cfg.Mistral.AdminKeyEnv, cfg.Mistral.AdminKeyFile)
	if err != nil {
		return nil, fmt.Errorf("mistral admin key: %w", err)
	}
	retries := config.DefaultMaxRetries
	if cfg.Mistral.MaxRetries != nil {
		retries = *cfg.Mistral.MaxRetries
		if retries == 0 {
			retries = -1 // the config's 0 means none; the client's 0 means its default
		}
	}
	timeout := cfg.Mistral.Timeout.D()
	if timeout <= 0 {
		timeout = config.DefaultMistralTimeout
	}
	c, err := mistral.New(mistral.Options{
		BaseURL: cfg.Mistral.BaseURL, AdminKey: mistral.Secret(adminKey), AdminAuthHeader: cfg.Mistral.AdminAuthHeader,
		MaxRetries: retries, Logger: logger, HTTPClient: &http.Client{Timeout: timeout},
	})
	if err != nil {
		return nil, fmt.Errorf("mistral client: %w", err)
	}
	return c, nil
}

// openStores opens the secret stores by backend name ("file", "vault",
// "aws"): each configured backend that a managed key uses (the file store is
// configured by default; opening it creates its directory, so an unused one
// is left alone). Vault credentials are resolved from their _file/_env
// settings. The returned func closes them.
func openStores(ctx context.Context, cfg *config.Config, logger *slog.Logger) (map[string]secrets.Store, func(), error) {
	used := map[string]bool{}
	for _, k := range cfg.Keys {
		used[k.Store.Backend] = true
	}
	out := map[string]secrets.Store{}
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	if f := cfg.Secrets.File; f != nil && used["file"] {
		s, err := file.New(f.Dir)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("file store: %w", err)
		}
		out["file"] = s
	}
	if v := cfg.Secrets.Vault; v != nil && used["vault"] {
		auth, err := vaultAuth(v.Auth)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("vault store: %w", err)
		}
		s, err := vault.New(ctx, vault.Options{Address: v.Address, Mount: v.Mount, Namespace: v.Namespace,
			CACert: v.CACert, TLSServerName: v.TLSServerName, Auth: auth, Logger: logger})
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("vault store: %w", err)
		}
		out["vault"] = s
		closers = append(closers, s.Close)
	}
	if a := cfg.Secrets.AWS; a != nil && used["aws"] {
		o := awssm.Options{Region: a.Region, Endpoint: a.Endpoint, RoleARN: a.RoleARN, KMSKeyID: a.KMSKeyID, Logger: logger}
		if a.ExternalIDEnv != "" {
			o.ExternalID = os.Getenv(a.ExternalIDEnv)
			if o.ExternalID == "" {
				closeAll()
				return nil, nil, fmt.Errorf("aws store: environment variable %s (external_id_env) is not set", a.ExternalIDEnv)
			}
		}
		s, err := awssm.New(ctx, o)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("aws store: %w", err)
		}
		out["aws"] = s
	}
	return out, closeAll, nil
}

// vaultAuth resolves the configured Vault login's secrets.
func vaultAuth(a config.VaultAuth) (vault.AuthOptions, error) {
	o := vault.AuthOptions{Method: a.Method, AuthMount: a.Mount}
	var err error
	switch a.Method {
	case "", "token":
		o.Method = "token"
		if o.Token, err = config.ResolveSecret(a.TokenEnv, a.TokenFile); err != nil {
			return o, fmt.Errorf("token: %w", err)
		}
	case "approle":
		if o.RoleID, err = config.ResolveSecret("", a.RoleIDFile); err != nil {
			return o, fmt.Errorf("approle role id: %w", err)
		}
		if o.SecretID, err = config.ResolveSecret(a.SecretIDEnv, a.SecretIDFile); err != nil {
			return o, fmt.Errorf("approle secret id: %w", err)
		}
		o.WrappedSecretID = a.WrappedSecretID
	case "kubernetes":
		o.K8sRole, o.JWTFile = a.Role, a.JWTFile
	default:
		return o, fmt.Errorf("auth method %q: want token, approle or kubernetes", a.Method)
	}
	return o, nil
}

// openJournal opens the journal the config's state names: created if
// needed, or, for a dry run on SQLite, read-only and only if it exists (nil,
// nil when it does not: a dry run records nothing). Its recoveries (a
// statement retried after a lost connection) are logged to log.
func openJournal(ctx context.Context, cfg *config.Config, dryRun bool, log *slog.Logger) (journal.Journal, error) {
	var db *journal.DB
	var err error
	if dryRun && cfg.State.Postgres == nil {
		db, err = journal.OpenReadOnly(ctx, cfg.State.Path)
	} else {
		db, err = backend.Open(ctx, cfg.State, journal.WithLogger(log))
	}
	if dryRun && errors.Is(err, journal.ErrNoJournal) {
		return nil, nil
	}
	if err != nil {
		return nil, err // a nil *journal.DB must not become a non-nil Journal
	}
	return db, nil
}

// openPlanStores opens the stores the keys use, creating nothing: the file
// store is opened without New's directory creation and temp-file cleanup,
// and a missing directory reads as a store with no records yet (the first
// write creates it). Vault and AWS are opened as everywhere (openStores).
func openPlanStores(ctx context.Context, cfg *config.Config, log *slog.Logger) (map[string]secrets.Store, func(), error) {
	rest := *cfg
	rest.Secrets.File = nil
	stores, closeAll, err := openStores(ctx, &rest, log)
	if err != nil {
		return nil, nil, err
	}
	used := false
	for _, k := range cfg.Keys {
		used = used || k.Store.Backend == "file"
	}
	if f := cfg.Secrets.File; f != nil && used {
		s, err := file.OpenExisting(f.Dir)
		switch {
		case err == nil:
			stores["file"] = s
		case errors.Is(err, fs.ErrNotExist):
			stores["file"] = absentStore{dir: f.Dir}
		default:
			closeAll()
			return nil, nil, fmt.Errorf("file store: %w", err)
		}
	}
	return stores, closeAll, nil
}

// absentStore is a file store whose directory does not exist yet: it holds
// no record, and plan never writes.
type absentStore struct{ dir string }

// Read implements secrets.Store: nothing is stored.
func (a absentStore) Read(_ context.Context, t secrets.Target) (secrets.Versioned, error) {
	return secrets.Versioned{}, fmt.Errorf("file store: %s (directory %s does not exist yet): %w", t.Path, a.dir, secrets.ErrNotFound)
}

// Write implements secrets.Store: refused, plan changes nothing.
func (a absentStore) Write(context.Context, secrets.WriteRequest) (secrets.Version, error) {
	return "", fmt.Errorf("file store: %w: plan writes nothing", secrets.ErrPermissionDenied)
}

// Describe implements secrets.Store: nothing exists.
func (a absentStore) Describe(context.Context, secrets.Target) (secrets.Description, error) {
	return secrets.Description{}, nil
}

// Name implements secrets.Store.
func (a absentStore) Name() string { return "file" }
