package app

// The on-call wiring: the state gauges and the Slack actions over Socket
// Mode. daemonWiring holds a configInForce (field inForce), calls onCall
// from services and inForce.note from reloaded.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/ctlsock"
	"github.com/mrbacd/mrbacd/daemon"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/metrics"
	"github.com/mrbacd/mrbacd/notify/slack"
	"github.com/mrbacd/mrbacd/secrets"
)

// configInForce is the config the daemon runs, updated on every reload.
type configInForce struct {
	mu  sync.RWMutex
	cfg *config.Config
}

// note records the config in force (at start and after a reload).
func (c *configInForce) note(cfg *config.Config) {
	c.mu.Lock()
	c.cfg = cfg
	c.mu.Unlock()
}

// current returns the config in force.
func (c *configInForce) current() *config.Config {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cfg
}

// Allows checks a Slack user against the operators of the config in force.
func (c *configInForce) Allows(user, action string) bool {
	cfg := c.current()
	return cfg != nil && cfg.Notify.Slack.Allows(user, action)
}

// onCall registers the state gauges and, when notify.slack has an app
// token, returns the Socket Mode service that carries out button clicks.
func onCall(ctx context.Context, de daemon.Env, inForce *configInForce) ([]daemon.Service, error) {
	inForce.note(de.Config)
	de.Metrics.RegisterStateGauges(metrics.GaugeSources{Journal: de.Journal, Config: inForce.current})
	cfg, log := de.Config, de.Logger
	if !slack.SocketModeEnabled(cfg.Notify.Slack) {
		return nil, nil
	}
	platform, err := NewMistral(cfg, log)
	if err != nil {
		return nil, err
	}
	stores, closeStores, err := openStores(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	ctl := ctlsock.NewClient(cfg.Admin.Socket)
	actor := slack.PlatformActor{
		Platform: platform,
		Managed:  []func(context.Context, string) (string, bool, error){de.Journal.ManagedKeyName, storeRecords(stores, inForce)},
		Rotate: func(ctx context.Context, name, by string) (string, error) {
			r, err := ctl.RunJob(ctx, jobs.Rotate, ctlsock.RunRequest{Key: name, Force: true, Wait: true})
			if err != nil {
				return "", err
			}
			if !r.Succeeded() {
				return "", fmt.Errorf("rotate run #%d %s: %s %s", r.ID, r.Status, r.Summary, r.Error)
			}
			return fmt.Sprintf("rotate run #%d: %s", r.ID, r.Summary), nil
		},
	}
	status := func(ctx context.Context) (string, error) {
		st, err := ctl.Status(ctx)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		ctlsock.WriteJobs(&b, st.Jobs)
		return b.String(), nil
	}
	acts, err := slack.ActionsFromConfig(cfg.Notify.Slack, actor, de.Journal, status, log.With("component", "slack-actions"))
	if acts != nil {
		acts.SetAccess(inForce) // operators follow reloads
	}
	if err != nil {
		closeStores()
		return nil, err
	}
	log.Info("slack actions over socket mode enabled", "operators", len(cfg.Notify.Slack.Operators))
	return []daemon.Service{{Name: "slack actions", Run: func(ctx context.Context) error {
		defer closeStores()
		return acts.Run(ctx)
	}}}, nil
}

// storeRecords says a platform key is managed when a keys: entry's store
// record names it (keys adopted without a rotation included).
func storeRecords(stores map[string]secrets.Store, inForce *configInForce) func(ctx context.Context, keyID string) (string, bool, error) {
	return func(ctx context.Context, keyID string) (string, bool, error) {
		cfg := inForce.current()
		if cfg == nil {
			return "", false, errors.New("no config in force")
		}
		for _, k := range cfg.Keys {
			v, found, err := readRecord(ctx, stores, k)
			if err != nil {
				// Unsure is managed: never revoke a key a store may still serve.
				return "", false, fmt.Errorf("reading the store record of %s: %w", k.Name, err)
			}
			if found && v.KeyID == keyID {
				return k.Name, true, nil
			}
		}
		return "", false, nil
	}
}
