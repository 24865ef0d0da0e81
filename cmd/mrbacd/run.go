package main

import (
	"context"
	"fmt"

	"github.com/mrbacd/mrbacd/app"
	"github.com/mrbacd/mrbacd/daemon"
)

func init() {
	register(&command{name: "run", summary: "run the daemon: scheduler, admin socket, metrics, gateway", run: runDaemon})
}

// runDaemon is `mrbacd run --config FILE [--no-gateway]`: it runs until SIGTERM or SIGINT
// (graceful stop within shutdown_timeout, exit 0) and reloads on SIGHUP.
func runDaemon(ctx context.Context, env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "run", "--config FILE")
	cfgPath := fs.String("config", "", "config `file` (required)")
	noGateway := fs.Bool("no-gateway", false, "do not run the gateway even when gateway.listen is set (the gateways run as mrbacd gateway)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mrbacd run: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, code := loadConfig(env, *cfgPath)
	if cfg == nil {
		return code
	}
	log, level, err := daemon.NewLogger(env.stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd run: %s: %v\n", *cfgPath, err)
		return exitUsage
	}
	err = app.RunDaemon(ctx, app.DaemonOptions{ConfigPath: *cfgPath, Config: cfg, Version: version,
		Logger: log, LogLevel: level, Stdout: env.stdout, NoGateway: *noGateway})
	if err != nil {
		return exitFailed // logged by RunDaemon
	}
	return exitOK
}
