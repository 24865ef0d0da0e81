package main

import (
	"context"
	"fmt"
	"net"

	"github.com/mrbacd/mrbacd/app"
)

func init() {
	register(&command{name: "gateway", summary: "serve the role-enforcing gateway alone (no scheduler)", run: runGateway})
}

// runGateway serves the gateway of a config until ctx ends (SIGTERM, SIGINT),
// then drains requests in flight within shutdown_timeout and flushes usage
// to the journal. SIGHUP reloads clients, roles and prices from the file.
// The metrics listener runs too when metrics.listen is set.
func runGateway(ctx context.Context, env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "gateway", "--config FILE [--listen ADDR]")
	cfgPath := fs.String("config", "", "config `file` (required)")
	listen := fs.String("listen", "", "`address` to serve on, overriding gateway.listen")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mrbacd gateway: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, code := loadConfig(env, *cfgPath)
	if cfg == nil {
		return code
	}
	if *listen == "" && cfg.Gateway.Listen == "" {
		fmt.Fprintf(env.stderr, "mrbacd gateway: %s: gateway.listen is empty and no --listen given\n", *cfgPath)
		return exitUsage
	}
	log := newLogger(env, cfg)
	err := app.ServeGateway(ctx, app.GatewayOptions{Config: cfg, Listen: *listen, Version: version, Logger: log,
		Listening: func(addr net.Addr) { fmt.Fprintf(env.stdout, "mrbacd gateway listening on http://%s\n", addr) }})
	if err != nil {
		log.Error("gateway stopped", "err", err)
		return exitFailed
	}
	return exitOK
}
