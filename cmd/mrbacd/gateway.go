package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/gateway"
	"github.com/mrbacd/mrbacd/metrics"
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
	if *listen != "" {
		cfg.Gateway.Listen = *listen
	}
	if cfg.Gateway.Listen == "" {
		fmt.Fprintf(env.stderr, "mrbacd gateway: %s: gateway.listen is empty and no --listen given\n", *cfgPath)
		return exitUsage
	}
	log := newLogger(env, cfg)
	if err := serveGateway(ctx, env, cfg, log); err != nil {
		log.Error("gateway stopped", "err", err)
		return exitFailed
	}
	return exitOK
}

func serveGateway(ctx context.Context, env *cmdEnv, cfg *config.Config, log *slog.Logger) error {
	stores, closeStores, err := gatewayStores(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeStores()
	db, err := openJournal(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	m := metrics.New(version, log)
	opts, err := gateway.FromConfig(cfg, gateway.Deps{Stores: stores, Usage: db, Registerer: m.Registry(), Logger: log})
	if err != nil {
		return err
	}
	if cfg.Metrics.Listen != "" {
		ms, err := metrics.Listen(cfg.Metrics.Listen, m, db.Ping, log)
		if err != nil {
			return err
		}
		go func() {
			if err := ms.Serve(); err != nil {
				log.Error("metrics listener failed", "err", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ms.Shutdown(sctx)
		}()
	}
	gw, err := gateway.New(ctx, opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		gw.Close(context.Background())
		return fmt.Errorf("gateway: listen: %w", err)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	fmt.Fprintf(env.stdout, "mrbacd gateway listening on http://%s\n", ln.Addr())
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reloadGateway(ctx, cfg.Path, gw, stores, db, log)
			}
		}
	}()
	return gw.Serve(ctx, ln)
}

// reloadGateway re-reads the config on SIGHUP and swaps the gateway's
// clients, roles and prices; a config that does not load keeps the old one.
// The listen address, upstream URL, journal and secret stores are kept
// (changing them needs a restart).
func reloadGateway(ctx context.Context, path string, gw *gateway.Gateway, stores map[string]gateway.KeyReader, db gateway.UsageStore, log *slog.Logger) {
	cfg, err := config.Load(path)
	if err != nil {
		log.Error("gateway reload: config invalid; keeping the running one", "err", err)
		return
	}
	opts, err := gateway.FromConfig(cfg, gateway.Deps{Stores: stores, Usage: db, Logger: log})
	if err == nil {
		err = gw.Reload(ctx, opts)
	}
	if err != nil {
		log.Error("gateway reload failed; keeping the running config", "err", err)
		return
	}
	log.Info("gateway reloaded", "config", path)
}

// gatewayStores opens the configured secret stores (openStores) for reading
// upstream keys. The returned func closes them.
func gatewayStores(ctx context.Context, cfg *config.Config, log *slog.Logger) (map[string]gateway.KeyReader, func(), error) {
	stores, closeAll, err := openStores(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]gateway.KeyReader, len(stores))
	for name, s := range stores {
		out[name] = s
	}
	return out, closeAll, nil
}
