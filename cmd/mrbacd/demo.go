package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mrbacd/mrbacd/app"
	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/rotate"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/secrets"
)

func init() {
	register(&command{name: "demo", summary: "the whole loop once on an in-process sandbox: bootstrap, forced rotation, audit, budget", run: runDemoCommand})
}

// demoOptions are the demo's settings.
type demoOptions struct {
	// keep keeps the temporary directory (its path is printed).
	keep bool
	// json prints one JSON document on stdout instead of the narrative;
	// notifications then go to stderr.
	json bool
	// verbose logs at info level on stderr (default: errors only).
	verbose bool
	// dir, when set, is the working directory to use instead of a new
	// temporary one; it is never removed (tests use it).
	dir string
	// wrap wraps the sandbox's handler (tests: the contract checker).
	wrap func(http.Handler) http.Handler
}

// demoStep is one step of the demo and how it went.
type demoStep struct {
	// Step is bootstrap, forced_rotation, audit or budget; Job the job it ran.
	Step     string       `json:"step"`
	Job      string       `json:"job"`
	Title    string       `json:"title"`
	OK       bool         `json:"ok"`
	Error    string       `json:"error,omitempty"`
	Duration string       `json:"duration"`
	Result   *jobs.Result `json:"result,omitempty"`
}

// demoRun is what a demo did; tests use it to reach the sandbox.
type demoRun struct {
	Dir        string        `json:"dir,omitempty"`
	SandboxURL string        `json:"sandbox_url"`
	Steps      []demoStep    `json:"steps"`
	OK         bool          `json:"ok"`
	Elapsed    time.Duration `json:"-"`
	ElapsedStr string        `json:"elapsed"`

	sandbox *sandbox.Server
	cfg     *config.Config
}

// runDemoCommand is `mrbacd demo [--keep] [--json] [-v]`.
func runDemoCommand(ctx context.Context, env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "demo", "[--keep] [--json] [-v]")
	keep := fs.Bool("keep", false, "keep the temporary directory (config, journal, file store) and print its path")
	asJSON := fs.Bool("json", false, "print one JSON report instead of the narrative (notifications go to stderr)")
	verbose := fs.Bool("v", false, "log the jobs' work at info level on stderr")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mrbacd demo: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	_, code := runDemo(ctx, env, demoOptions{keep: *keep, json: *asJSON, verbose: *verbose})
	return code
}

// runDemo runs the demo and returns what it did (nil when it could not set
// up) and the exit code: 0 when every step succeeded, 1 otherwise.
func runDemo(ctx context.Context, env *cmdEnv, opts demoOptions) (*demoRun, int) {
	start := time.Now()
	fail := func(format string, a ...any) (*demoRun, int) {
		fmt.Fprintf(env.stderr, "mrbacd demo: "+format+"\n", a...)
		return nil, exitFailed
	}
	// Narrative on stdout; with --json, stdout carries only the report.
	out := env.stdout
	if opts.json {
		out = io.Discard
	}
	world, err := app.StartDemo(ctx, app.DemoOptions{Dir: opts.dir, Keep: opts.keep, Verbose: opts.verbose, Wrap: opts.wrap})
	if err != nil {
		return fail("%v", err)
	}
	defer world.Close()
	dir := world.Dir
	run := &demoRun{SandboxURL: world.URL, sandbox: world.Sandbox}
	if opts.keep || opts.dir != "" {
		run.Dir = dir
	}
	cfg, code := loadConfig(env, world.ConfigPath)
	if cfg == nil {
		fmt.Fprintln(env.stderr, "mrbacd demo: the embedded demo config does not validate (a bug)")
		return nil, code
	}
	run.cfg = cfg

	// The same wiring as the one-shot commands.
	log := newLogger(env, cfg).With("demo", true)
	var notifyTo io.Writer = &indentWriter{w: out, prefix: "    "}
	if opts.json {
		notifyTo = env.stderr
	}
	a, err := app.Open(ctx, cfg, log, app.Options{Notify: notifyTo})
	if err != nil {
		return fail("%v", err)
	}
	defer a.Close()

	ws, users, keys := run.sandbox.Workspaces(), run.sandbox.Users(), run.sandbox.Keys()
	fmt.Fprintln(out, "mrbacd demo: the whole loop, once, on an in-process Mistral sandbox")
	fmt.Fprintf(out, "  platform  %s (sandbox: %d workspaces, %d user, %d keys nobody manages yet)\n",
		run.SandboxURL, len(ws), len(users), len(keys))
	fmt.Fprintf(out, "  config    %d managed keys (%s), a file store, a journal, notifications on stdout\n",
		len(cfg.Keys), strings.Join(keyNames(cfg), ", "))
	if run.Dir != "" {
		fmt.Fprintf(out, "  directory %s\n", dir)
	}
	d := &demoDriver{ctx: ctx, out: out, env: env, run: run, app: a}
	d.step("bootstrap", jobs.Request{}, "bootstrap: create, verify and publish the managed keys (the store is empty)",
		"mrbacd rotate", d.printRotation(false))
	d.step("forced_rotation", jobs.Request{Force: true}, "forced rotation: replace every managed key now, revoking the old one last",
		"mrbacd rotate --force", d.printRotation(true))
	d.stepJob("audit", jobs.Audit, jobs.Request{}, "audit: every key and workspace on the platform against the config", "mrbacd audit", nil)
	d.stepJob("budget", jobs.Budget, jobs.Request{}, "budget: this month's spend per workspace against its budget", "mrbacd budget", nil)
	return d.conclude(start, dir, opts)
}

// conclude prints the verdict (and the JSON report with --json) and returns
// the exit code.
func (d *demoDriver) conclude(start time.Time, dir string, opts demoOptions) (*demoRun, int) {
	run, out := d.run, d.out
	run.OK = true
	okSteps := 0
	for _, s := range run.Steps {
		if s.OK {
			okSteps++
		} else {
			run.OK = false
		}
	}
	run.Elapsed = time.Since(start)
	run.ElapsedStr = run.Elapsed.Round(time.Millisecond).String()
	fmt.Fprintln(out)
	verdict := "all steps succeeded"
	if !run.OK {
		verdict = "SOME STEPS FAILED (see above and stderr)"
	}
	fmt.Fprintf(out, "demo done in %s: %d of %d steps ok, %s.\n", run.Elapsed.Round(100*time.Millisecond), okSteps, len(run.Steps), verdict)
	switch {
	case opts.keep:
		fmt.Fprintf(out, "kept %s: the rendered config (mrbacd.yaml), the journal (state.db) and the file store (secrets/);\n", dir)
		fmt.Fprintln(out, "the sandbox platform lived in this process and is gone. Remove the directory when done.")
	case opts.dir == "":
		fmt.Fprintln(out, "the temporary directory is removed; run `mrbacd demo --keep` to look at the config, journal and store.")
	}
	fmt.Fprintln(out, "next: write your config (deploy/mrbacd.example.yaml is a start), check it with `mrbacd check --config FILE`, then `mrbacd plan --config FILE`.")
	if opts.json {
		if err := printJSON(d.env.stdout, run); err != nil {
			fmt.Fprintf(d.env.stderr, "mrbacd demo: %v\n", err)
			return run, exitFailed
		}
	}
	if !run.OK {
		return run, exitFailed
	}
	return run, exitOK
}

func keyNames(cfg *config.Config) []string {
	out := make([]string, 0, len(cfg.Keys))
	for _, k := range cfg.Keys {
		out = append(out, k.Name)
	}
	return out
}

// demoDriver runs the demo's steps and prints them.
type demoDriver struct {
	ctx context.Context
	out io.Writer
	env *cmdEnv
	run *demoRun
	app *app.App
	// eventSeq is the last sandbox event already narrated.
	eventSeq int64
}

// step runs a rotation step (the rotate job with req).
func (d *demoDriver) step(name string, req jobs.Request, title, equivalent string, print func(jobs.Result)) {
	d.stepJob(name, jobs.Rotate, req, title, equivalent, print)
}

// stepJob runs one job as a journaled "cli" run (app.Run, as the one-shot
// commands do), prints its report and what happened on the platform, then
// delivers its notifications.
func (d *demoDriver) stepJob(name, job string, req jobs.Request, title, equivalent string, print func(jobs.Result)) {
	n := len(d.run.Steps) + 1
	fmt.Fprintf(d.out, "\n[%d/4] %s\n      (what `%s --config FILE` does)\n", n, title, equivalent)
	start := time.Now()
	st := demoStep{Step: name, Job: job, Title: title}
	req.Trigger = "cli"
	fin, runErr := d.app.Run(d.ctx, job, req)
	if runErr != nil {
		st.Error = runErr.Error()
		fmt.Fprintf(d.out, "  FAILED: %v\n", runErr)
	} else {
		res := fin.Result
		st.Result = &res
		st.OK = !res.Failed
		fmt.Fprintf(d.out, "  %s\n", res.Summary)
		if print != nil {
			print(res)
		} else {
			printDetails(&indentWriter{w: d.out, prefix: "  "}, res)
		}
		if res.Failed {
			st.Error = "the job reported failures"
		}
	}
	d.printPlatformEvents()
	fmt.Fprintln(d.out, "  notifications (on stdout here; Slack when notify.slack is configured):")
	before := d.app.Outbox.Stats()
	printFlushError(d.env, "demo", d.app.Flush(d.ctx))
	if after := d.app.Outbox.Stats(); after == before {
		fmt.Fprintln(d.out, "    (none)")
	}
	d.finish(&st, start)
}

func (d *demoDriver) finish(st *demoStep, start time.Time) {
	st.Duration = time.Since(start).Round(time.Millisecond).String()
	d.run.Steps = append(d.run.Steps, *st)
}

// printPlatformEvents narrates the keys the sandbox saw created and deleted
// since the last step (uses of keys are left out).
func (d *demoDriver) printPlatformEvents() {
	evs := d.run.sandbox.EventsSince(d.eventSeq)
	var lines []string
	for _, ev := range evs {
		d.eventSeq = max(d.eventSeq, ev.Seq)
		switch ev.Kind {
		case sandbox.EventCreate:
			lines = append(lines, fmt.Sprintf("created key %s (%s)", ev.KeyID, ev.KeyName))
		case sandbox.EventDelete:
			lines = append(lines, fmt.Sprintf("deleted key %s (%s): it is refused from now on", ev.KeyID, ev.KeyName))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(d.out, "  on the platform:")
	for _, l := range lines {
		fmt.Fprintf(d.out, "    - %s\n", l)
	}
}

// printRotation returns the printer of a rotation step: one line per key
// with its old and new key ids and hidden keys, and what the store holds.
func (d *demoDriver) printRotation(forced bool) func(jobs.Result) {
	return func(res jobs.Result) {
		reps, _ := res.Details.([]rotate.KeyReport)
		hidden := map[string]string{}
		for _, k := range d.run.sandbox.Keys() {
			hidden[k.ID] = k.HiddenKey
		}
		tw := tabwriter.NewWriter(&indentWriter{w: d.out, prefix: "  "}, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tOUTCOME\tOLD KEY\tNEW KEY\tNEW KEY NAME\tHIDDEN KEY")
		for _, r := range reps {
			outcome := r.Outcome
			if r.Error != "" {
				outcome += ": " + r.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Key, outcome, dash(r.OldKeyID), dash(r.NewKeyID),
				dash(r.NewKeyName), dash(hidden[r.NewKeyID]))
		}
		tw.Flush()
		byName := map[string]rotate.KeyReport{}
		for _, r := range reps {
			byName[r.Key] = r
		}
		for _, k := range d.run.cfg.Keys {
			st := d.app.Stores[k.Store.Backend]
			if st == nil {
				continue
			}
			v, err := st.Read(d.ctx, rotate.Target(k))
			switch {
			case errors.Is(err, secrets.ErrNotFound):
				fmt.Fprintf(d.out, "  store %s:%s: no record\n", k.Store.Backend, k.Store.Location())
			case err != nil:
				fmt.Fprintf(d.out, "  store %s:%s: unreadable: %v\n", k.Store.Backend, k.Store.Location(), err)
			default:
				fmt.Fprintf(d.out, "  store %s:%s now serves key %s (%s), version %s\n", k.Store.Backend,
					k.Store.Location(), v.KeyID, dash(hidden[v.KeyID]), v.Version)
			}
			if r := byName[k.Name]; forced && r.OldKeyID != "" {
				if old, ok := d.run.sandbox.Key(r.OldKeyID); ok && old.Deleted {
					fmt.Fprintf(d.out, "    old key %s revoked after the new one was published and re-verified\n", r.OldKeyID)
				} else {
					fmt.Fprintf(d.out, "    old key %s is still live on the platform\n", r.OldKeyID)
				}
			}
		}
	}
}

// indentWriter prefixes every line written through it.
type indentWriter struct {
	w      io.Writer
	prefix string
	mid    bool // in the middle of a line
}

// Write implements io.Writer.
func (iw *indentWriter) Write(p []byte) (int, error) {
	var b bytes.Buffer
	for rest := p; len(rest) > 0; {
		if !iw.mid {
			b.WriteString(iw.prefix)
		}
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			b.Write(rest)
			iw.mid = true
			break
		}
		b.Write(rest[:i+1])
		iw.mid = false
		rest = rest[i+1:]
	}
	if _, err := iw.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}
