package journal

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var t0 = time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)

func openTest(t *testing.T) (*DB, *clock, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	c := &clock{t: t0}
	db.now = c.Now
	return db, c, path
}

func TestOpenMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "state.db")
	for i := 0; i < 3; i++ {
		db, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("open #%d: %v", i, err)
		}
		v, err := db.SchemaVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v != len(migrations) {
			t.Fatalf("open #%d: schema version %d, want %d", i, v, len(migrations))
		}
		var rows int
		if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_version`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != len(migrations) {
			t.Fatalf("open #%d: %d schema_version rows, want %d", i, rows, len(migrations))
		}
		var mode string
		if err := db.sql.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
			t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
		}
		var fk int
		if err := db.sql.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
			t.Fatalf("foreign_keys = %d, %v; want 1", fk, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("journal mode %v, want 0600", st.Mode().Perm())
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte("this is not a database file, definitely not one, no sqlite header here at all......................................................"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path string }{
		{name: "empty path", path: ""},
		{name: "parent is a file", path: filepath.Join(notDir, "state.db")},
		{name: "not a database", path: garbage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := Open(ctx, tc.path)
			if err == nil {
				db.Close()
				t.Fatalf("Open(%q) succeeded", tc.path)
			}
		})
	}
}

func TestConcurrentOpenMigrates(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := Open(ctx, path)
			if err != nil {
				errs <- err
				return
			}
			db.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent open: %v", err)
	}
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, _ := db.SchemaVersion(ctx); v != len(migrations) {
		t.Fatalf("schema version %d after concurrent opens", v)
	}
}

func TestRotations(t *testing.T) {
	ctx := context.Background()
	db, clk, _ := openTest(t)

	steps := []struct {
		name    string
		do      func() error
		wantErr error
	}{
		{name: "begin r1", do: func() error {
			return db.BeginRotation(ctx, Rotation{ID: "r1", KeyName: "dev", OldKeyID: "k-old", NewKeyName: "dev-20261127-r1", Trigger: "cron"})
		}, wantErr: nil},
		{name: "second in-flight for same key", do: func() error {
			return db.BeginRotation(ctx, Rotation{ID: "r2", KeyName: "dev"})
		}, wantErr: ErrRotationInFlight},
		{name: "duplicate id", do: func() error { return db.BeginRotation(ctx, Rotation{ID: "r1", KeyName: "other"}) }, wantErr: ErrInvalid},
		{name: "missing key name", do: func() error { return db.BeginRotation(ctx, Rotation{ID: "rx"}) }, wantErr: ErrInvalid},
		{name: "bad status", do: func() error { return db.BeginRotation(ctx, Rotation{ID: "rx", KeyName: "x", Status: "weird"}) }, wantErr: ErrInvalid},
		{name: "other key in parallel", do: func() error { return db.BeginRotation(ctx, Rotation{ID: "r3", KeyName: "ml"}) }, wantErr: nil},
		{name: "update unknown", do: func() error { return db.UpdateRotation(ctx, Rotation{ID: "nope", Status: StatusInFlight}) }, wantErr: ErrNotFound},
		{name: "update bad status", do: func() error { return db.UpdateRotation(ctx, Rotation{ID: "r1", Status: ""}) }, wantErr: ErrInvalid},
		{name: "r1 create", do: func() error {
			clk.Add(time.Second)
			return db.UpdateRotation(ctx, Rotation{ID: "r1", Step: "create", Status: StatusInFlight, OldKeyID: "k-old",
				NewKeyID: "k-new", NewKeyName: "dev-20261127-r1", Attempts: 1})
		}, wantErr: nil},
		{name: "r1 propagate", do: func() error {
			clk.Add(time.Second)
			return db.UpdateRotation(ctx, Rotation{ID: "r1", Step: "propagate", Status: StatusInFlight, OldKeyID: "k-old",
				NewKeyID: "k-new", NewKeyName: "dev-20261127-r1", StoreVersion: "7", PropagateUntil: clk.Now().Add(time.Minute)})
		}, wantErr: nil},
		{name: "r1 done", do: func() error {
			clk.Add(time.Minute)
			return db.UpdateRotation(ctx, Rotation{ID: "r1", Step: "revoke", Status: StatusDone, OldKeyID: "k-old",
				NewKeyID: "k-new", NewKeyName: "dev-20261127-r1", StoreVersion: "7", PropagateUntil: t0.Add(2*time.Second + time.Minute)})
		}, wantErr: nil},
		{name: "dev may rotate again", do: func() error {
			clk.Add(time.Hour)
			return db.BeginRotation(ctx, Rotation{ID: "r4", KeyName: "dev", OldKeyID: "k-new"})
		}, wantErr: nil},
		{name: "r4 fails", do: func() error {
			return db.UpdateRotation(ctx, Rotation{ID: "r4", Step: "verify", Status: StatusFailed, OldKeyID: "k-new", Error: "verify: 401"})
		}, wantErr: nil},
	}
	for _, s := range steps {
		err := s.do()
		if s.wantErr == nil && err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
		}
	}

	r1, err := db.Rotation(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	want := Rotation{ID: "r1", KeyName: "dev", Step: "revoke", Status: StatusDone, OldKeyID: "k-old", NewKeyID: "k-new",
		NewKeyName: "dev-20261127-r1", StoreVersion: "7", PropagateUntil: t0.Add(2*time.Second + time.Minute), Trigger: "cron",
		StartedAt: t0, UpdatedAt: t0.Add(2*time.Second + time.Minute), FinishedAt: t0.Add(2*time.Second + time.Minute)}
	if r1 != want {
		t.Fatalf("r1 =\n%+v\nwant\n%+v", r1, want)
	}
	if _, err := db.Rotation(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Rotation(missing) = %v", err)
	}

	inflight, err := db.InFlightRotations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(inflight) != 1 || inflight[0].ID != "r3" {
		t.Fatalf("in flight = %+v, want r3 only", inflight)
	}
	last, ok, err := db.LastDoneRotation(ctx, "dev")
	if err != nil || !ok || last.ID != "r1" {
		t.Fatalf("LastDoneRotation(dev) = %v %v %v, want r1", last.ID, ok, err)
	}
	if _, ok, err := db.LastDoneRotation(ctx, "ml"); ok || err != nil {
		t.Fatalf("LastDoneRotation(ml) = %v %v, want none", ok, err)
	}
	hist, err := db.RotationsForKey(ctx, "dev", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].ID != "r4" || hist[1].ID != "r1" || hist[0].Error != "verify: 401" || hist[0].FinishedAt.IsZero() {
		t.Fatalf("history = %+v", hist)
	}
	if hist, _ := db.RotationsForKey(ctx, "dev", 1); len(hist) != 1 {
		t.Fatalf("limit 1 gave %d", len(hist))
	}
	recent, err := db.RecentRotations(ctx, t0.Add(time.Hour), 0)
	if err != nil || len(recent) != 1 || recent[0].ID != "r4" {
		t.Fatalf("recent = %+v, %v", recent, err)
	}
	// A failed rotation cannot be made in flight again while another is.
	if err := db.BeginRotation(ctx, Rotation{ID: "r5", KeyName: "dev"}); err != nil {
		t.Fatal(err)
	}
	if err := db.UpdateRotation(ctx, Rotation{ID: "r4", Status: StatusInFlight}); !errors.Is(err, ErrRotationInFlight) {
		t.Fatalf("reviving r4 beside r5: %v", err)
	}
}

// openTwoHandles opens one new journal file twice, as two processes would;
// both are closed when the test ends.
func openTwoHandles(t *testing.T) (a, b *DB) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	for _, db := range []**DB{&a, &b} {
		var err error
		if *db, err = Open(context.Background(), path); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { (*db).Close() })
	}
	return a, b
}

func TestBeginRotationRaceTwoHandles(t *testing.T) {
	ctx := context.Background()
	a, b := openTwoHandles(t)
	for round := 0; round < 10; round++ {
		key := "key-" + string(rune('a'+round))
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, losses := 0, 0
		for i := 0; i < 8; i++ {
			db := a
			if i%2 == 1 {
				db = b
			}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				err := db.BeginRotation(ctx, Rotation{ID: key + "-" + string(rune('0'+i)), KeyName: key})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, ErrRotationInFlight):
					losses++
				default:
					t.Errorf("begin: %v", err)
				}
			}(i)
		}
		wg.Wait()
		if wins != 1 || losses != 7 {
			t.Fatalf("round %d: %d wins, %d losses; want exactly one winner", round, wins, losses)
		}
	}
	inflight, err := b.InFlightRotations(ctx)
	if err != nil || len(inflight) != 10 {
		t.Fatalf("in flight: %d, %v; want 10", len(inflight), err)
	}
}

func TestLeases(t *testing.T) {
	ctx := context.Background()
	db, clk, _ := openTest(t)
	type step struct {
		name    string
		do      func() (bool, error)
		want    bool
		wantErr bool
	}
	acq := func(name, owner string, ttl time.Duration) func() (bool, error) {
		return func() (bool, error) { return db.AcquireLease(ctx, name, owner, ttl) }
	}
	renew := func(name, owner string, ttl time.Duration) func() (bool, error) {
		return func() (bool, error) { return db.RenewLease(ctx, name, owner, ttl) }
	}
	advance := func(d time.Duration) func() (bool, error) {
		return func() (bool, error) { clk.Add(d); return true, nil }
	}
	release := func(name, owner string) func() (bool, error) {
		return func() (bool, error) { return true, db.ReleaseLease(ctx, name, owner) }
	}
	steps := []step{
		{"A takes free lease", acq("rotate:dev", "A", time.Minute), true, false},
		{"B refused while A holds", acq("rotate:dev", "B", time.Minute), false, false},
		{"A re-acquires (extends)", acq("rotate:dev", "A", time.Minute), true, false},
		{"other name is independent", acq("rotate:ml", "B", time.Minute), true, false},
		{"A renews", renew("rotate:dev", "A", time.Minute), true, false},
		{"B cannot renew A's", renew("rotate:dev", "B", time.Minute), false, false},
		{"time passes beyond ttl", advance(61 * time.Second), true, false},
		{"A's renew fails after expiry", renew("rotate:dev", "A", time.Minute), false, false},
		{"B takes expired lease", acq("rotate:dev", "B", time.Minute), true, false},
		{"A refused now", acq("rotate:dev", "A", time.Minute), false, false},
		{"A's release is a no-op", release("rotate:dev", "A"), true, false},
		{"A still refused", acq("rotate:dev", "A", time.Minute), false, false},
		{"B releases", release("rotate:dev", "B"), true, false},
		{"A takes released", acq("rotate:dev", "A", time.Minute), true, false},
		{"zero ttl", acq("rotate:dev", "A", 0), false, true},
		{"empty owner", acq("rotate:dev", "", time.Minute), false, true},
	}
	for _, s := range steps {
		got, err := s.do()
		if (err != nil) != s.wantErr {
			t.Fatalf("%s: err = %v", s.name, err)
		}
		if err == nil && got != s.want {
			t.Fatalf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
	owner, exp, ok, err := db.LeaseHolder(ctx, "rotate:dev")
	if err != nil || !ok || owner != "A" || !exp.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("holder = %q %v %v %v", owner, exp, ok, err)
	}
}

func TestLeaseRaceTwoHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	dbs := make([]*DB, 2)
	for i := range dbs {
		db, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		dbs[i] = db
	}
	for round := 0; round < 10; round++ {
		name := "lease-" + string(rune('a'+round))
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []string
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				owner := "owner-" + string(rune('0'+i))
				ok, err := dbs[i%2].AcquireLease(ctx, name, owner, time.Minute)
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				if ok {
					mu.Lock()
					winners = append(winners, owner)
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: winners %v, want exactly one", round, winners)
		}
		owner, _, ok, err := dbs[0].LeaseHolder(ctx, name)
		if err != nil || !ok || owner != winners[0] {
			t.Fatalf("holder %q, want %q (%v)", owner, winners[0], err)
		}
	}
}

func TestRuns(t *testing.T) {
	ctx := context.Background()
	db, clk, _ := openTest(t)
	type run struct {
		job, trigger, args, status, errMsg, summary string
	}
	runs := []run{
		{"rotate", "cron", `{"force":false}`, RunOK, "", `{"rotated":2}`},
		{"audit", "uid:0", "", RunFailed, "list keys: 503", ""},
		{"rotate", "cli", `{"key":"dev"}`, RunPanicked, "panic: boom", ""},
		{"budget", "cron", "", RunCanceled, "context canceled", ""},
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
			st = RunRunning
		}
		if got.Job != r.job || got.Trigger != r.trigger || got.Args != r.args || got.Status != st ||
			got.Error != r.errMsg || got.Summary != r.summary || got.StartedAt.IsZero() || (r.status != "") == got.FinishedAt.IsZero() {
			t.Errorf("run %d = %+v, want %+v", i, got, r)
		}
	}
	for _, tc := range []struct {
		name string
		f    RunFilter
		want []int64
	}{
		{name: "all", f: RunFilter{}, want: []int64{ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{name: "rotate", f: RunFilter{Job: "rotate"}, want: []int64{ids[4], ids[2], ids[0]}},
		{name: "rotate limit 2", f: RunFilter{Job: "rotate", Limit: 2}, want: []int64{ids[4], ids[2]}},
		{name: "page back", f: RunFilter{Job: "rotate", BeforeID: ids[2]}, want: []int64{ids[0]}},
		{name: "failed", f: RunFilter{Status: RunFailed}, want: []int64{ids[1]}},
		{name: "none", f: RunFilter{Job: "gateway"}, want: nil},
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
	if _, err := db.GetRun(ctx, 9999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetRun(9999) = %v", err)
	}
	if err := db.FinishRun(ctx, 9999, RunOK, "", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("FinishRun(9999) = %v", err)
	}
	if err := db.FinishRun(ctx, ids[4], "running", "", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("FinishRun(running) = %v", err)
	}
	if _, err := db.StartRun(ctx, "", "cron", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("StartRun(empty) = %v", err)
	}
	n, err := db.AbandonRuns(ctx, clk.Now().Add(time.Second), "daemon restarted")
	if err != nil || n != 1 {
		t.Fatalf("AbandonRuns = %d %v, want 1", n, err)
	}
	if r, _ := db.GetRun(ctx, ids[4]); r.Status != RunCanceled || r.Error != "daemon restarted" {
		t.Fatalf("abandoned run = %+v", r)
	}
}

func TestLastFire(t *testing.T) {
	ctx := context.Background()
	db, _, _ := openTest(t)
	if _, ok, err := db.LastFire(ctx, "rotate"); ok || err != nil {
		t.Fatalf("LastFire before any = %v %v", ok, err)
	}
	for _, ts := range []time.Time{t0, t0.Add(24 * time.Hour), t0.Add(48*time.Hour + time.Nanosecond)} {
		if err := db.SetLastFire(ctx, "rotate", ts); err != nil {
			t.Fatal(err)
		}
		got, ok, err := db.LastFire(ctx, "rotate")
		if err != nil || !ok || !got.Equal(ts) {
			t.Fatalf("LastFire = %v %v %v, want %v", got, ok, err, ts)
		}
	}
	if err := db.SetLastFire(ctx, "", t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetLastFire(empty job) = %v", err)
	}
	if err := db.SetLastFire(ctx, "audit", time.Time{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetLastFire(zero) = %v", err)
	}
}

func TestMarkOnce(t *testing.T) {
	ctx := context.Background()
	db, _, path := openTest(t)
	other, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, tc := range []struct {
		db   *DB
		key  string
		want bool
	}{
		{db: db, key: "budget:dev:0.8:2026-11", want: true},
		{db: db, key: "budget:dev:0.8:2026-11", want: false},
		{db: other, key: "budget:dev:0.8:2026-11", want: false},
		{db: other, key: "budget:dev:0.8:2026-12", want: true},
		{db: db, key: "budget:dev:1:2026-11", want: true},
	} {
		got, err := tc.db.MarkOnce(ctx, tc.key)
		if err != nil || got != tc.want {
			t.Fatalf("MarkOnce(%q) = %v %v, want %v", tc.key, got, err, tc.want)
		}
	}
	if _, err := db.MarkOnce(ctx, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("MarkOnce(empty) = %v", err)
	}
}

func TestUsage(t *testing.T) {
	ctx := context.Background()
	db, _, _ := openTest(t)
	adds := []struct {
		subject, window string
		tokens          int64
		usd             float64
	}{
		{subject: "client:reporting", window: "day:2026-11-27", tokens: 100, usd: 0.01},
		{subject: "client:reporting", window: "day:2026-11-27", tokens: 250, usd: 0.02},
		{subject: "role:admin", window: "hour:2026-11-27T03", tokens: 1000, usd: 1.5},
		{subject: "client:reporting", window: "day:2026-11-28", tokens: 5, usd: 0.001},
		{subject: "role:admin", window: "Day:2026-11-27", tokens: 7, usd: 0.5}, // case matters
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
	}{{prefix: "day:2026-11-27", want: 1}, {prefix: "day:", want: 2}, {prefix: "hour:", want: 1}, {prefix: "", want: 4}, {prefix: "Day:", want: 1}, {prefix: "week:", want: 0}} {
		m, err := db.LoadUsage(ctx, tc.prefix)
		if err != nil || len(m) != tc.want {
			t.Fatalf("LoadUsage(%q) = %v %v, want %d entries", tc.prefix, m, err, tc.want)
		}
	}
	m, _ := db.LoadUsage(ctx, "day:2026-11-27")
	if m[UsageKey{"client:reporting", "day:2026-11-27"}].Tokens != 350 {
		t.Fatalf("LoadUsage map = %v", m)
	}
	if err := db.AddUsage(ctx, "", "day:x", 1, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("AddUsage(empty) = %v", err)
	}
}
