package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/mrbacd/mrbacd/app"
	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/daemon"
)

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

// failCode is the exit code of an error from package app: exitUsage when
// the config is at fault, else exitFailed.
func failCode(err error) int {
	if app.IsConfigError(err) {
		return exitUsage
	}
	return exitFailed
}
