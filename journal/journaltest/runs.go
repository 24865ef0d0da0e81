package journaltest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/journal"
)

func testRuns(t *testing.T, h *harness) {
	ctx := context.Background()
	db, clk := h.journal(t), h.clk
	type run struct {
		job, trigger, args, status, errMsg, summary string
	}
	runs := []run{
		{"rotate", "cron", `{"force":false}`, journal.RunOK, "", `{"rotated":2}`},
		{"audit", "uid:0", "", journal.RunFailed, "list keys: 503", ""},
		{"rotate", "cli", `{"key":"dev"}`, journal.RunPanicked, "panic: boom", ""},
		{"budget", "cron", "", journal.RunCanceled, "context canceled", ""},
		{"rotate", "catchup", "", "", "", ""}, // left running
	}
	ids := make([]int64, len(runs))
	for i, r := range runs {
		clk.Add(time.Second)
		id, err := db.StartRun(ctx, r.job, r.trigger, r.args)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
		if r.status != "" {
			clk.Add(time.Second)
			if err := db.FinishRun(ctx, id, r.status, r.errMsg, r.summary); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, r := range runs {
		got, err := db.GetRun(ctx, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		st := r.status
		if st == "" {
			st = journal.RunRunning
		}
		if got.Job != r.job || got.Trigger != r.trigger || got.Args != r.args || got.Status != st ||
			got.Error != r.errMsg || got.Summary != r.summary || got.StartedAt.IsZero() || (r.status != "") == got.FinishedAt.IsZero() {
			t.Errorf("run %d = %+v, want %+v", i, got, r)
		}
	}
	for _, tc := range []struct {
		name string
		f    journal.RunFilter
		want []int64
	}{
		{"all", journal.RunFilter{}, []int64{ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"rotate", journal.RunFilter{Job: "rotate"}, []int64{ids[4], ids[2], ids[0]}},
		{"rotate limit 2", journal.RunFilter{Job: "rotate", Limit: 2}, []int64{ids[4], ids[2]}},
		{"page back", journal.RunFilter{Job: "rotate", BeforeID: ids[2]}, []int64{ids[0]}},
		{"failed", journal.RunFilter{Status: journal.RunFailed}, []int64{ids[1]}},
		{"none", journal.RunFilter{Job: "gateway"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := db.Runs(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var gotIDs []int64
			for _, r := range got {
				gotIDs = append(gotIDs, r.ID)
			}
			if len(gotIDs) != len(tc.want) {
				t.Fatalf("ids %v, want %v", gotIDs, tc.want)
			}
			for i := range gotIDs {
				if gotIDs[i] != tc.want[i] {
					t.Fatalf("ids %v, want %v", gotIDs, tc.want)
				}
			}
		})
	}
	last, ok, err := db.LastRun(ctx, "rotate")
	if err != nil || !ok || last.ID != ids[4] {
		t.Fatalf("LastRun = %v %v %v", last.ID, ok, err)
	}
	if _, ok, err := db.LastRun(ctx, "never"); ok || err != nil {
		t.Fatalf("LastRun(never) = %v %v", ok, err)
	}
	if _, err := db.GetRun(ctx, 9999); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("GetRun(9999) = %v", err)
	}
	if err := db.FinishRun(ctx, 9999, journal.RunOK, "", ""); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("FinishRun(9999) = %v", err)
	}
	if err := db.FinishRun(ctx, ids[4], "running", "", ""); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("FinishRun(running) = %v", err)
	}
	if _, err := db.StartRun(ctx, "", "cron", ""); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("StartRun(empty) = %v", err)
	}
	n, err := db.AbandonRuns(ctx, clk.Now().Add(time.Second), "daemon restarted")
	if err != nil || n != 1 {
		t.Fatalf("AbandonRuns = %d %v, want 1", n, err)
	}
	if r, _ := db.GetRun(ctx, ids[4]); r.Status != journal.RunCanceled || r.Error != "daemon restarted" {
		t.Fatalf("abandoned run = %+v", r)
	}
}

func testLastFire(t *testing.T, h *harness) {
	ctx := context.Background()
	db := h.journal(t)
	if _, ok, err := db.LastFire(ctx, "rotate"); ok || err != nil {
		t.Fatalf("LastFire before any = %v %v", ok, err)
	}
	for _, ts := range []time.Time{T0, T0.Add(24 * time.Hour), T0.Add(48*time.Hour + time.Nanosecond)} {
		if err := db.SetLastFire(ctx, "rotate", ts); err != nil {
			t.Fatal(err)
		}
		got, ok, err := db.LastFire(ctx, "rotate")
		if err != nil || !ok || !got.Equal(ts) {
			t.Fatalf("LastFire = %v %v %v, want %v", got, ok, err, ts)
		}
	}
	if err := db.SetLastFire(ctx, "", T0); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("SetLastFire(empty job) = %v", err)
	}
	if err := db.SetLastFire(ctx, "audit", time.Time{}); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("SetLastFire(zero) = %v", err)
	}
}

func testMarkOnce(t *testing.T, h *harness) {
	ctx := context.Background()
	db, other := h.journal(t), h.journal(t)
	for _, tc := range []struct {
		db   journal.Journal
		key  string
		want bool
	}{
		{db, "budget:dev:0.8:2026-11", true},
		{db, "budget:dev:0.8:2026-11", false},
		{other, "budget:dev:0.8:2026-11", false},
		{other, "budget:dev:0.8:2026-12", true},
		{db, "budget:dev:1:2026-11", true},
	} {
		got, err := tc.db.MarkOnce(ctx, tc.key)
		if err != nil || got != tc.want {
			t.Fatalf("MarkOnce(%q) = %v %v, want %v", tc.key, got, err, tc.want)
		}
	}
	if _, err := db.MarkOnce(ctx, ""); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("MarkOnce(empty) = %v", err)
	}
}

func testUsage(t *testing.T, h *harness) {
	ctx := context.Background()
	db := h.journal(t)
	adds := []struct {
		subject, window string
		tokens          int64
		usd             float64
	}{
		{"client:reporting", "day:2026-11-27", 100, 0.01},
		{"client:reporting", "day:2026-11-27", 250, 0.02},
		{"role:admin", "hour:2026-11-27T03", 1000, 1.5},
		{"client:reporting", "day:2026-11-28", 5, 0.001},
		{"role:admin", "Day:2026-11-27", 7, 0.5}, // case matters
	}
	for _, a := range adds {
		if err := db.AddUsage(ctx, a.subject, a.window, a.tokens, a.usd); err != nil {
			t.Fatal(err)
		}
	}
	tok, usd, err := db.Usage(ctx, "client:reporting", "day:2026-11-27")
	if err != nil || tok != 350 || usd < 0.0299 || usd > 0.0301 {
		t.Fatalf("Usage = %d %v %v", tok, usd, err)
	}
	if tok, usd, err := db.Usage(ctx, "nobody", "day:2026-11-27"); tok != 0 || usd != 0 || err != nil {
		t.Fatalf("Usage(absent) = %d %v %v", tok, usd, err)
	}
	for _, tc := range []struct {
		prefix string
		want   int
	}{{"day:2026-11-27", 1}, {"day:", 2}, {"hour:", 1}, {"", 4}, {"Day:", 1}, {"week:", 0}} {
		m, err := db.LoadUsage(ctx, tc.prefix)
		if err != nil || len(m) != tc.want {
			t.Fatalf("LoadUsage(%q) = %v %v, want %d entries", tc.prefix, m, err, tc.want)
		}
	}
	m, _ := db.LoadUsage(ctx, "day:2026-11-27")
	if m[journal.UsageKey{Subject: "client:reporting", Window: "day:2026-11-27"}].Tokens != 350 {
		t.Fatalf("LoadUsage map = %v", m)
	}
	if err := db.AddUsage(ctx, "", "day:x", 1, 0); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("AddUsage(empty) = %v", err)
	}
}
