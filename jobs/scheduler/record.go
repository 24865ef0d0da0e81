package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
)

// How a run is journaled, shared by the scheduler's runs and Once (the
// one-shot commands and the demo): StartRun with the request as JSON
// arguments, the runner with a recovered panic, the status, and FinishRun
// with the result as a JSON summary (the admin socket reads it back as a
// jobs.Result).

// finishTimeout bounds journaling a run's end, done even when its context
// was cancelled.
const finishTimeout = 10 * time.Second

// Once runs runner once as job, outside the schedule, journaled exactly as
// a scheduled run is. A journal that refuses the start is an error and
// nothing runs: a run that cannot be journaled must not act. The run ends
// canceled when ctx ends (SIGINT of a one-shot command). A nil journal
// (a dry run, which records nothing) runs without journaling.
func Once(ctx context.Context, j Journal, job string, runner jobs.Runner, req jobs.Request, log *slog.Logger) (Finished, error) {
	if log == nil {
		log = slog.Default()
	}
	fin := Finished{Job: job, Trigger: req.Trigger, Started: time.Now()}
	if j != nil {
		id, err := startRun(ctx, j, job, req)
		if err != nil {
			return fin, fmt.Errorf("run %s: journal: %w", job, err)
		}
		fin.RunID, req.RunID = id, id
		log = log.With("run_id", id)
	}
	invoke(ctx, runner, req, &fin, log.With("job", job, "trigger", req.Trigger))
	fin.Duration = time.Since(fin.Started)
	classify(&fin, ctx)
	if j != nil {
		finishRun(ctx, j, &fin, log.With("job", job, "trigger", req.Trigger))
	}
	return fin, nil
}

// startRun journals a run's start; its arguments are the request's key,
// dry_run and force as JSON.
func startRun(ctx context.Context, j Journal, job string, req jobs.Request) (int64, error) {
	args, _ := json.Marshal(struct {
		Key    string `json:"key,omitempty"`
		DryRun bool   `json:"dry_run,omitempty"`
		Force  bool   `json:"force,omitempty"`
	}{req.Key, req.DryRun, req.Force})
	return j.StartRun(ctx, job, req.Trigger, string(args))
}

// invoke runs runner into fin (Result, Err, Panic), recovering a panic.
func invoke(ctx context.Context, runner jobs.Runner, req jobs.Request, fin *Finished, log *slog.Logger) {
	log.Info("job run started", "key_name", req.Key, "dry_run", req.DryRun, "force", req.Force)
	defer func() {
		if v := recover(); v != nil {
			fin.Panic = v
			fin.Err = fmt.Errorf("panic: %v", v)
			log.Error("job panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	fin.Result, fin.Err = runner.Run(ctx, req)
}

// classify sets fin.Status: panicked; canceled when it failed (an error or
// a result that says so) after parent, the scheduler's or the command's
// context, ended; failed on an error or a failed result; else ok (a run
// that finished its work as parent ended is ok).
func classify(fin *Finished, parent context.Context) {
	switch {
	case fin.Panic != nil:
		fin.Status = StatusPanicked
	case (fin.Err != nil || fin.Result.Failed) && parent.Err() != nil:
		fin.Status = StatusCanceled
	case fin.Err != nil || fin.Result.Failed:
		fin.Status = StatusFailed
	default:
		fin.Status = StatusOK
	}
}

// finishRun journals fin's end (even after ctx ended) and logs it.
func finishRun(ctx context.Context, j Journal, fin *Finished, log *slog.Logger) {
	errMsg := ""
	if fin.Err != nil {
		errMsg = fin.Err.Error()
	}
	summary, err := json.Marshal(fin.Result)
	if err != nil {
		summary, _ = json.Marshal(jobs.Result{Failed: fin.Result.Failed, Summary: fin.Result.Summary})
	}
	jctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	if err := j.FinishRun(jctx, fin.RunID, fin.Status, errMsg, string(summary)); err != nil {
		log.Error("journaling run result failed", "err", err)
	}
	attrs := []any{"status", fin.Status, "duration_ms", fin.Duration.Milliseconds(), "summary", fin.Result.Summary}
	if fin.Err != nil {
		attrs = append(attrs, "err", errMsg)
	}
	if fin.Status == StatusOK {
		log.Info("job run finished", attrs...)
	} else {
		log.Warn("job run finished", attrs...)
	}
}
