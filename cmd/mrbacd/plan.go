package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/mistral"
)

func init() {
	register(&command{name: "plan", summary: "print which keys the next rotation would rotate, and why", run: runPlan})
}

// runPlan is `mrbacd plan --config FILE [--json]`: what the next rotation run
// would do with each managed key and why. It changes nothing: it reads the
// stores, the journal (only if it exists) and, for records lacking
// created_at or key_id, the platform's key list.
func runPlan(ctx context.Context, env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "plan", "--config FILE [--json]")
	cfgPath := fs.String("config", "", "config `file` (required)")
	asJSON := fs.Bool("json", false, "print the plan as JSON")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mrbacd plan: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, code := loadConfig(env, *cfgPath)
	if cfg == nil {
		return code
	}
	log := newLogger(env, cfg)
	var platform rotate.Platform
	client, err := newMistral(cfg, log)
	if err != nil {
		// Plan what the stores tell; keys that need the platform say why not.
		log.Warn("planning without the platform", "err", err)
		platform = unavailablePlatform{err: err}
	} else {
		platform = client
	}
	stores, closeStores, err := openStores(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
		return exitFailed
	}
	defer closeStores()
	deps := rotate.Deps{Platform: platform, Stores: stores, Logger: log}
	if journalExists(cfg) {
		db, err := openJournal(ctx, cfg)
		if err != nil {
			fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
			return exitFailed
		}
		defer db.Close()
		deps.Journal = db
	}
	engine, err := rotate.New(deps, rotate.OptionsFromConfig(cfg), rotate.KeysFromConfig(cfg))
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
		return exitUsage
	}
	items, err := engine.Plan(ctx)
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
		return exitFailed
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"rotate": items}); err != nil {
			fmt.Fprintf(env.stderr, "mrbacd plan: %v\n", err)
			return exitFailed
		}
	} else {
		printPlan(env.stdout, items)
	}
	for _, it := range items {
		if it.Error != "" {
			return exitFailed
		}
	}
	return exitOK
}

// printPlan prints how many keys are due, then one line per key.
func printPlan(w io.Writer, items []rotate.PlanItem) {
	due := 0
	for _, it := range items {
		if it.Due {
			due++
		}
	}
	fmt.Fprintf(w, "rotate: %d of %d keys due\n", due, len(items))
	if len(items) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tACTION\tSTORE\tCURRENT KEY\tDUE AT\tWHY")
	for _, it := range items {
		why := it.Reason
		if it.Note != "" {
			why += " (" + it.Note + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s:%s\t%s\t%s\t%s\n", it.Key, it.Action, it.Backend, it.Location,
			dash(it.CurrentKeyID), dash(it.DueAt), why)
	}
	tw.Flush()
}

// unavailablePlatform answers every call with the reason the platform
// client could not be built.
type unavailablePlatform struct{ err error }

// CreateKey implements rotate.Platform.
func (u unavailablePlatform) CreateKey(context.Context, mistral.CreateKeyRequest) (mistral.Key, error) {
	return mistral.Key{}, u.err
}

// DeleteKey implements rotate.Platform.
func (u unavailablePlatform) DeleteKey(context.Context, string) error { return u.err }

// ListAllKeys implements rotate.Platform.
func (u unavailablePlatform) ListAllKeys(context.Context, string) ([]mistral.Key, error) {
	return nil, u.err
}

// ListModels implements rotate.Platform.
func (u unavailablePlatform) ListModels(context.Context, mistral.Secret) ([]mistral.Model, error) {
	return nil, u.err
}

// ListAllWorkspaces implements rotate.Platform.
func (u unavailablePlatform) ListAllWorkspaces(context.Context) ([]mistral.Workspace, error) {
	return nil, u.err
}
