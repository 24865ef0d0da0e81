package main

import (
	"context"
	"fmt"

	"github.com/mrbacd/mrbacd/config"
)

func init() {
	register(&command{name: "check", summary: "validate a config file and print every problem", run: runCheck})
}

// runCheck validates a config: every problem goes to stderr as
// FILE:LINE:COL: field.path: message, and the exit code is 2 if there is
// any, 0 with a one-line summary on stdout if there is none.
func runCheck(_ context.Context, env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "check", "--config FILE")
	path := fs.String("config", "", "the config `FILE` to validate (required)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mrbacd check: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	if *path == "" {
		fmt.Fprintln(env.stderr, "mrbacd check: --config is required")
		fs.Usage()
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigError(env, "mrbacd check", err)
		return exitUsage
	}
	fmt.Fprintf(env.stdout, "ok: %s: %d workspace%s, %d key%s, %d role%s, %d gateway client%s\n",
		cfg.Path,
		len(cfg.Workspaces), checkPlural(len(cfg.Workspaces)),
		len(cfg.Keys), checkPlural(len(cfg.Keys)),
		len(cfg.Roles), checkPlural(len(cfg.Roles)),
		len(cfg.Gateway.Clients), checkPlural(len(cfg.Gateway.Clients)))
	return exitOK
}

// checkPlural returns "s" unless n is 1.
func checkPlural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
