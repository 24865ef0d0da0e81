package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/mrbacd/mrbacd/app"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

func init() {
	register(&command{name: "sandbox", summary: "serve an in-memory Mistral platform for tests and demos", run: runSandbox})
}

// runSandbox serves the sandbox until ctx ends. The admin key comes from
// the seed's admin_key, else MISTRAL_ADMIN_KEY, else a random one printed
// on stderr.
func runSandbox(ctx context.Context, env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "sandbox", "--listen ADDR [--seed FILE] [--now RFC3339]")
	listen := fs.String("listen", "127.0.0.1:8089", "`address` to listen on (host:port; port 0 picks a free one)")
	seedPath := fs.String("seed", "", "YAML `file` with the initial workspaces, users, keys and usage")
	nowFlag := fs.String("now", "", "freeze the sandbox clock at this RFC 3339 `time`")
	verbose := fs.Bool("v", false, "log every request on stderr")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mrbacd sandbox: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	var now time.Time
	if *nowFlag != "" {
		t, err := time.Parse(time.RFC3339, *nowFlag)
		if err != nil {
			fmt.Fprintf(env.stderr, "mrbacd sandbox: --now %q: want an RFC 3339 time like 2026-11-27T12:00:00Z\n", *nowFlag)
			return exitUsage
		}
		now = t
	}
	seed := &sandbox.Seed{}
	if *seedPath != "" {
		s, err := sandbox.LoadSeed(*seedPath)
		if err != nil {
			fmt.Fprintf(env.stderr, "mrbacd sandbox: %v\n", err)
			return exitUsage
		}
		seed = s
	}
	adminKey, keySource := seed.AdminKey, "seed"
	if adminKey == "" {
		adminKey, keySource = os.Getenv("MISTRAL_ADMIN_KEY"), "MISTRAL_ADMIN_KEY"
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: level}))
	srv := sandbox.New(sandbox.Options{AdminKey: adminKey, Seed: seed, Logger: logger})
	if !now.IsZero() {
		srv.SetNow(now)
	}
	hs, err := app.ServeSandbox(srv, *listen)
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd sandbox: %v\n", err)
		return exitFailed
	}
	if adminKey == "" {
		// A random key: the operator needs it to use the admin API.
		fmt.Fprintf(env.stderr, "mrbacd sandbox: admin key (random): %s\n", srv.AdminKey())
	} else {
		fmt.Fprintf(env.stderr, "mrbacd sandbox: admin key from %s\n", keySource)
	}
	fmt.Fprintf(env.stdout, "mrbacd sandbox listening on %s\n", hs.URL)
	select {
	case err := <-hs.Err():
		fmt.Fprintf(env.stderr, "mrbacd sandbox: %v\n", err)
		return exitFailed
	case <-ctx.Done():
	}
	if err := hs.Close(context.Background()); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintf(env.stderr, "mrbacd sandbox: shutdown: %v\n", err)
	}
	return exitOK
}
