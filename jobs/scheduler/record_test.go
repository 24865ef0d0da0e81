package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mrbacd/mrbacd/jobs"
)

// TestOnceJournalsLikeAScheduledRun runs one-shot runs through Once and
// reads them back from the real journal: status, error, JSON summary and
// arguments as the scheduler records them.
func TestOnceJournalsLikeAScheduledRun(t *testing.T) {
	tests := []struct {
		name       string
		runner     jobs.RunnerFunc
		wantStatus string
		wantErr    string
		wantSum    string
	}{
		{name: "ok",
			runner: func(context.Context, jobs.Request) (jobs.Result, error) {
				return jobs.Result{Summary: "rotated 2 keys"}, nil
			}, wantStatus: StatusOK, wantSum: "rotated 2 keys"},
		{name: "result failed",
			runner: func(context.Context, jobs.Request) (jobs.Result, error) {
				return jobs.Result{Failed: true, Summary: "1 of 2 keys failed"}, nil
			}, wantStatus: StatusFailed, wantSum: "1 of 2 keys failed"},
		{name: "error",
			runner: func(context.Context, jobs.Request) (jobs.Result, error) {
				return jobs.Result{}, errors.New("platform down")
			}, wantStatus: StatusFailed, wantErr: "platform down"},
		{name: "interrupted", // SIGINT while it runs
			runner: func(ctx context.Context, _ jobs.Request) (jobs.Result, error) {
				ctx.Value(cancelKey{}).(context.CancelFunc)()
				return jobs.Result{}, ctx.Err()
			}, wantStatus: StatusCanceled, wantErr: "context canceled"},
		{name: "panic",
			runner: func(context.Context, jobs.Request) (jobs.Result, error) {
				panic("boom")
			}, wantStatus: StatusPanicked, wantErr: "panic: boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openJournal(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ctx = context.WithValue(ctx, cancelKey{}, cancel)
			fin, err := Once(ctx, db, jobs.Rotate, tc.runner, jobs.Request{Trigger: "cli", Key: "k1", Force: true}, quietLogger())
			if err != nil {
				t.Fatalf("Once: %v", err)
			}
			if fin.Status != tc.wantStatus || fin.RunID == 0 {
				t.Fatalf("status %q run %d, want %q and a journaled run", fin.Status, fin.RunID, tc.wantStatus)
			}
			run, err := db.GetRun(context.Background(), fin.RunID)
			if err != nil {
				t.Fatal(err)
			}
			if run.Status != tc.wantStatus || run.Trigger != "cli" || !strings.Contains(run.Error, tc.wantErr) {
				t.Fatalf("journaled %q %q err %q, want %q cli %q", run.Status, run.Trigger, run.Error, tc.wantStatus, tc.wantErr)
			}
			if run.Args != `{"key":"k1","force":true}` {
				t.Fatalf("args %q, want the request as JSON", run.Args)
			}
			var res jobs.Result
			if err := json.Unmarshal([]byte(run.Summary), &res); err != nil || res.Summary != tc.wantSum {
				t.Fatalf("summary %q (%v), want the JSON of a result saying %q", run.Summary, err, tc.wantSum)
			}
		})
	}
}

// cancelKey carries a run's cancel func to the runner that interrupts itself.
type cancelKey struct{}

// TestOnceRefusesToActUnjournaled: a journal that refuses the start is an
// error and the runner never runs.
func TestOnceRefusesToActUnjournaled(t *testing.T) {
	db := openJournal(t)
	db.Close() // the journal now refuses every write
	var ran atomic.Bool
	_, err := Once(context.Background(), db, jobs.Audit, jobs.RunnerFunc(func(context.Context, jobs.Request) (jobs.Result, error) {
		ran.Store(true)
		return jobs.Result{}, nil
	}), jobs.Request{Trigger: "cli"}, quietLogger())
	if err == nil || ran.Load() {
		t.Fatalf("err %v ran %v, want an error and no run", err, ran.Load())
	}
}

func TestParseSchedule(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		wantErr string
	}{
		{name: "five fields", spec: "0 3 * * *"},
		{name: "step", spec: "*/30 * * * *"},
		{name: "descriptor", spec: "@daily"},
		{name: "every", spec: "@every 1h"},
		{name: "range", spec: "30 2 * * 1-5"},
		{name: "empty", spec: "", wantErr: "empty schedule"},
		{name: "four fields", spec: "0 3 * *", wantErr: `invalid cron schedule "0 3 * *"`},
		{name: "hour out of range", spec: "0 25 * * *", wantErr: "invalid cron schedule"},
		{name: "TZ prefix", spec: "TZ=UTC 0 3 * * *", wantErr: "TZ= prefix"},
		{name: "CRON_TZ prefix", spec: "CRON_TZ=UTC 0 3 * * *", wantErr: "TZ= prefix"},
		{name: "unknown descriptor", spec: "@sometimes", wantErr: "invalid cron schedule"},
		{name: "six fields", spec: "0 0 3 * * *", wantErr: "invalid cron schedule"},
		{name: "secret-like token not echoed", spec: "sk-0123456789abcdefghij 3 * * *", wantErr: "value not shown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSchedule(tc.spec)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseSchedule(%q) = %v", tc.spec, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidSchedule) {
				t.Fatalf("ParseSchedule(%q) = %v, want ErrInvalidSchedule saying %q", tc.spec, err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "sk-0123456789") {
				t.Fatal("the error quotes a secret-like token")
			}
		})
	}
}
