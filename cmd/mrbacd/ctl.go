package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/ctlsock"
)

func init() {
	register(&command{name: "ctl", summary: "control a running daemon over its admin socket", run: runCtl})
}

const ctlSynopsis = "[--socket PATH | --config FILE] [--json] [--timeout D] COMMAND\n\n" +
	"commands:\n" +
	"  status                                        daemon version, uptime, config, who leads, last reload, jobs\n" +
	"  jobs                                          schedule, last and next run of each job\n" +
	"  run JOB [--key NAME] [--force] [--dry-run] [--wait]   start a job now (JOB: rotate, audit, budget);\n" +
	"                                                on a standby, queued for the leader\n" +
	"  history [--limit N]                           recent runs, newest first\n" +
	"  reload                                        re-read the config; kept only if valid\n\n" +
	"The socket is --socket, else --config's admin.socket, else $" + ctlsock.SocketEnv + ", else " + config.DefaultAdminSocket + ".\n" +
	"Exit status: 0 ok, 1 the job or reload failed, 2 bad usage, 3 daemon unreachable or access refused.\n\nflags:"

// ctl holds the parsed global flags of one ctl invocation.
type ctl struct {
	env    *cmdEnv
	client *ctlsock.Client
	json   bool
}

func runCtl(ctx context.Context, env *cmdEnv, args []string) int {
	fs := newFlagSet(env, "ctl", ctlSynopsis)
	socket := fs.String("socket", "", "admin socket `path`")
	cfgPath := fs.String("config", "", "read the socket path from this config `file`")
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	timeout := fs.Duration("timeout", 0, "give up after this `duration` (default: 30s, none for run --wait)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(env.stderr, "mrbacd ctl: missing command (status, jobs, run, history or reload)")
		fs.Usage()
		return exitUsage
	}
	path, err := ctlsock.SocketPath(*socket, *cfgPath)
	if err != nil {
		fmt.Fprintf(env.stderr, "mrbacd ctl: %v\n", err)
		return exitUsage
	}
	c := &ctl{env: env, client: ctlsock.NewClient(path), json: *asJSON}
	sub, rest := fs.Arg(0), fs.Args()[1:]
	wait := sub == "run" && slices.ContainsFunc(rest, func(a string) bool {
		return slices.Contains([]string{"--wait", "-wait", "--wait=true", "-wait=true"}, a)
	})
	if *timeout > 0 || !wait {
		d := *timeout
		if d <= 0 {
			d = 30 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	switch sub {
	case "status":
		return c.status(ctx, rest)
	case "jobs":
		return c.jobs(ctx, rest)
	case "run":
		return c.run(ctx, rest)
	case "history":
		return c.history(ctx, rest)
	case "reload":
		return c.reload(ctx, rest)
	default:
		fmt.Fprintf(env.stderr, "mrbacd ctl: unknown command %q (status, jobs, run, history or reload)\n", sub)
		return exitUsage
	}
}

// subFlags returns a FlagSet for a ctl subcommand; --json is accepted there too.
func (c *ctl) subFlags(name, synopsis string) *flag.FlagSet {
	fs := newFlagSet(c.env, "ctl "+name, synopsis)
	fs.BoolVar(&c.json, "json", c.json, "print JSON instead of tables")
	return fs
}

func (c *ctl) noArgs(name string, args []string) (int, bool) {
	fs := c.subFlags(name, "")
	if code, done := parseFlags(fs, args); done {
		return code, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.env.stderr, "mrbacd ctl %s: unexpected argument %q\n", name, fs.Arg(0))
		return exitUsage, true
	}
	return 0, false
}

// fail reports a client error and returns the exit code the contract gives it.
func (c *ctl) fail(err error, usageCodes ...int) int {
	var ue *ctlsock.UnreachableError
	var ae *ctlsock.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded): // --timeout (the client wraps it as unreachable)
		fmt.Fprintf(c.env.stderr, "mrbacd ctl: no answer in time (--timeout): %v\n", err)
		return exitUnreachable
	case errors.As(err, &ue):
		why := "is mrbacd running, and is this the right socket (--socket, --config, $" + ctlsock.SocketEnv + ")?"
		if errors.Is(err, syscall.EACCES) || errors.Is(err, os.ErrPermission) {
			why = "access refused by the socket's file permissions (admin.socket_mode, admin.socket_group)"
		}
		fmt.Fprintf(c.env.stderr, "mrbacd ctl: cannot reach the daemon at %s: %v\n  %s\n", ue.Socket, ue.Err, why)
		return exitUnreachable
	case errors.As(err, &ae):
		if ae.Refused() {
			fmt.Fprintf(c.env.stderr, "mrbacd ctl: access refused by the daemon: %s\n  add this uid to admin.allowed_uids, or run as the daemon's user\n", ae.Message)
			return exitUnreachable
		}
		fmt.Fprintf(c.env.stderr, "mrbacd ctl: %s\n", ae.Message)
		if ae.StatusCode == http.StatusServiceUnavailable {
			return exitUnreachable
		}
		for _, u := range usageCodes {
			if ae.StatusCode == u {
				return exitUsage
			}
		}
		return exitFailed
	default:
		fmt.Fprintf(c.env.stderr, "mrbacd ctl: %v\n", err)
		return exitFailed
	}
}

func (c *ctl) printJSON(v any) { printJSON(c.env.stdout, v) }

func (c *ctl) status(ctx context.Context, args []string) int {
	if code, done := c.noArgs("status", args); done {
		return code
	}
	st, err := c.client.Status(ctx)
	if err != nil {
		return c.fail(err)
	}
	if c.json {
		c.printJSON(st)
		return exitOK
	}
	w := c.env.stdout
	fmt.Fprintf(w, "mrbacd %s, pid %d, up %s (since %s)\n", st.Version, st.PID,
		(time.Duration(st.UptimeSeconds) * time.Second).String(), st.StartedAt.Format(time.RFC3339))
	fmt.Fprintf(w, "config       %s (sha256 %s)\n", st.ConfigPath, shortHash(st.ConfigHash))
	fmt.Fprintf(w, "leader       %s\n", leaderLine(st.Leadership))
	if r := st.LastReload; r != nil {
		res := "ok"
		if !r.OK {
			res = "refused: " + firstLine(r.Error)
		}
		fmt.Fprintf(w, "last reload  %s by %s: %s\n", r.At.Format(time.RFC3339), r.Trigger, res)
	} else {
		fmt.Fprintln(w, "last reload  none")
	}
	fmt.Fprintln(w)
	ctlsock.WriteJobs(w, st.Jobs)
	return exitOK
}

// leaderLine says who leads, from this instance's point of view.
func leaderLine(l ctlsock.Leadership) string {
	if l.LeaderError != "" {
		role := "a standby"
		if l.Leader {
			role = "leading until " + fmtLease(l.LeaseExpires)
		}
		return fmt.Sprintf("unknown (%s); this instance (%s) is %s", l.LeaderError, l.Instance, role)
	}
	switch {
	case l.Leader:
		return fmt.Sprintf("this instance (%s), lease until %s", l.Instance, fmtLease(l.LeaseExpires))
	case l.LeaderInstance == "":
		return fmt.Sprintf("none: the lease lapsed and no instance took it yet; this instance (%s) is a standby", l.Instance)
	default:
		return fmt.Sprintf("%s, lease until %s; this instance (%s) is a standby: runs asked of it are queued for the leader",
			l.LeaderInstance, fmtLease(l.LeaseExpires), l.Instance)
	}
}

func fmtLease(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339Nano)
}

func (c *ctl) jobs(ctx context.Context, args []string) int {
	if code, done := c.noArgs("jobs", args); done {
		return code
	}
	js, err := c.client.Jobs(ctx)
	if err != nil {
		return c.fail(err)
	}
	if c.json {
		c.printJSON(js)
		return exitOK
	}
	ctlsock.WriteJobs(c.env.stdout, js)
	return exitOK
}

func (c *ctl) run(ctx context.Context, args []string) int {
	fs := c.subFlags("run", "JOB [--key NAME] [--force] [--dry-run] [--wait]")
	key := fs.String("key", "", "limit the run to this managed `key` (rotate)")
	force := fs.Bool("force", false, "rotate whatever the age")
	dry := fs.Bool("dry-run", false, "report what would happen; change nothing")
	wait := fs.Bool("wait", false, "wait for the run to finish and print its result")
	job := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		job, args = args[0], args[1:]
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if job == "" && fs.NArg() > 0 {
		job = fs.Arg(0)
		if fs.NArg() > 1 {
			fmt.Fprintf(c.env.stderr, "mrbacd ctl run: unexpected argument %q\n", fs.Arg(1))
			return exitUsage
		}
	} else if fs.NArg() > 0 {
		fmt.Fprintf(c.env.stderr, "mrbacd ctl run: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if job == "" {
		fmt.Fprintln(c.env.stderr, "mrbacd ctl run: missing JOB (rotate, audit or budget)")
		fs.Usage()
		return exitUsage
	}
	run, err := c.client.RunJob(ctx, job, ctlsock.RunRequest{Key: *key, Force: *force, DryRun: *dry, Wait: *wait})
	if err != nil {
		return c.fail(err, http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusBadRequest, http.StatusRequestEntityTooLarge)
	}
	if c.json {
		c.printJSON(run)
	} else if !*wait && run.RequestID != 0 {
		fmt.Fprintf(c.env.stdout, "queued %s run for the leader (request %d, asked by %s); see it with: mrbacd ctl history\n", run.Job, run.RequestID, run.Trigger)
	} else if !*wait {
		fmt.Fprintf(c.env.stdout, "started %s run %d (asked by %s); see it with: mrbacd ctl history\n", run.Job, run.ID, run.Trigger)
	} else {
		if run.RunBy != "" {
			fmt.Fprintf(c.env.stdout, "run by the leader %s (request %d)\n", run.RunBy, run.RequestID)
		}
		printRun(c.env.stdout, run)
	}
	if *wait && !run.Succeeded() {
		return exitFailed
	}
	return exitOK
}

func printRun(w io.Writer, r ctlsock.Run) {
	fmt.Fprintf(w, "run %d %s: %s", r.ID, r.Job, r.Status)
	if r.Summary != "" {
		fmt.Fprintf(w, ": %s", r.Summary)
	}
	fmt.Fprintln(w)
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	if r.Details != nil {
		data, err := json.MarshalIndent(r.Details, "", "  ")
		if err == nil {
			fmt.Fprintf(w, "details:\n%s\n", data)
		}
	}
}

func (c *ctl) history(ctx context.Context, args []string) int {
	fs := c.subFlags("history", "[--limit N]")
	limit := fs.Int("limit", 20, "show at most `N` runs (1 to 1000)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.env.stderr, "mrbacd ctl history: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *limit < 1 || *limit > ctlsock.MaxRunsLimit {
		fmt.Fprintf(c.env.stderr, "mrbacd ctl history: --limit must be from 1 to %d, got %d\n", ctlsock.MaxRunsLimit, *limit)
		return exitUsage
	}
	runs, err := c.client.Runs(ctx, *limit)
	if err != nil {
		return c.fail(err, http.StatusBadRequest)
	}
	if c.json {
		c.printJSON(runs)
		return exitOK
	}
	tw := tabwriter.NewWriter(c.env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tJOB\tTRIGGER\tSTATUS\tSTARTED\tDURATION\tSUMMARY")
	for _, r := range runs {
		dur := "-"
		if r.FinishedAt != nil {
			dur = r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
		}
		sum := r.Summary
		if r.Error != "" {
			if sum != "" {
				sum += "; "
			}
			sum += "error: " + firstLine(r.Error)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Job, r.Trigger, r.Status, r.StartedAt.Format(time.RFC3339), dur, sum)
	}
	tw.Flush()
	return exitOK
}

func (c *ctl) reload(ctx context.Context, args []string) int {
	if code, done := c.noArgs("reload", args); done {
		return code
	}
	rel, err := c.client.Reload(ctx)
	var ae *ctlsock.APIError
	if errors.As(err, &ae) && ae.Reload != nil && ae.StatusCode == http.StatusUnprocessableEntity {
		if c.json {
			c.printJSON(ae.Reload)
		} else {
			fmt.Fprintf(c.env.stderr, "mrbacd ctl: reload refused; the daemon keeps its current config:\n%s\n", ae.Reload.Error)
		}
		return exitFailed
	}
	if err != nil {
		return c.fail(err)
	}
	if c.json {
		c.printJSON(rel)
		return exitOK
	}
	fmt.Fprintf(c.env.stdout, "reloaded (config sha256 %s)\n", shortHash(rel.ConfigHash))
	for _, n := range rel.Notes {
		fmt.Fprintf(c.env.stdout, "note: %s\n", n)
	}
	return exitOK
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
