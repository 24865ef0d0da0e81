package app

import (
	"log/slog"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/daemon"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/secrets"
)

// newDaemonEngine is newEngine for a daemon: the engine holds the rotation
// lease as the daemon's election instance (daemon.RotationLeaseOwner), so
// a daemon that takes leadership over frees its predecessor's lease and
// resumes the rotations in flight at once.
func newDaemonEngine(cfg *config.Config, platform rotate.Platform, stores map[string]secrets.Store, de daemon.Env,
	n rotate.Notifier, log *slog.Logger) (*rotate.Engine, error) {
	opts := rotate.OptionsFromConfig(cfg)
	opts.Owner = daemon.RotationLeaseOwner(de.Instance)
	deps := rotate.Deps{Platform: platform, Stores: stores, Logger: log, Notifier: n, Journal: de.Journal}
	return rotate.New(deps, opts, rotate.KeysFromConfig(cfg))
}
