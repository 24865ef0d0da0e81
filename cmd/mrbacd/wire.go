package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/daemon"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/awssm"
	"github.com/mrbacd/mrbacd/secrets/file"
	"github.com/mrbacd/mrbacd/secrets/vault"
)

// Shared wiring of the subcommands: config, logger, platform client, stores
// and journal, built the same way everywhere.

// loadConfig loads and validates the config at path. On error it prints every
// problem (FILE:LINE:COL: field: message) to stderr and returns exitUsage.
func loadConfig(env *cmdEnv, path string) (*config.Config, int) {
	if path == "" {
		fmt.Fprintln(env.stderr, "mrbacd: --config is required")
		return nil, exitUsage
	}
	cfg, err := config.Load(path)
	if err != nil {
		printConfigError(env, "mrbacd", err)
		return nil, exitUsage
	}
	return cfg, exitOK
}

// printConfigError prints why a config did not load to stderr: every
// problem (FILE:LINE:COL: field: message) on its own line, or else the
// error after prefix ("mrbacd", "mrbacd check").
func printConfigError(env *cmdEnv, prefix string, err error) {
	var ps config.Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			fmt.Fprintln(env.stderr, p.String())
		}
		return
	}
	fmt.Fprintf(env.stderr, "%s: %v\n", prefix, err)
}

// newLogger returns the slog logger the config asks for (text or json, its
// level, overridden by $MRBACD_LOG_LEVEL), writing to stderr. A bad level or
// format falls back to text at info, with a warning.
func newLogger(env *cmdEnv, cfg *config.Config) *slog.Logger {
	log, _, err := daemon.NewLogger(env.stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd: %v; logging text at info\n", err)
		return slog.New(slog.NewTextHandler(env.stderr, nil))
	}
	return log
}

// newMistral returns the platform client, its admin key read from
// mistral.admin_key_env or mistral.admin_key_file.
func newMistral(cfg *config.Config, logger *slog.Logger) (*mistral.Client, error) {
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

// openJournal opens (creating if needed) the journal at state.path.
func openJournal(ctx context.Context, cfg *config.Config) (*journal.DB, error) {
	db, err := journal.Open(ctx, cfg.State.Path)
	if err != nil {
		return nil, err
	}
	return db, nil
}

// storeTarget is the store target of a managed key.
func storeTarget(k config.Key) secrets.Target { return rotate.Target(k) }
