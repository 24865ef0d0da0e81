package rotate

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/journal"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/mistral/sandbox/sandboxtest"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
)

// env is a sandbox platform, a file store and a journal for one test.
type env struct {
	t      testing.TB
	sb     *sandbox.Server
	url    string
	client *mistral.Client
	files  *file.Store
	store  secrets.Store // what the engine writes through (may wrap files)
	db     *journal.DB
	dbPath string
	logs   *testenv.LogBuffer
	user   string
	notes  *recorder
	level  slog.Level // of the engine's logger (debug unless set)
}

func newEnv(t testing.TB) *env {
	t.Helper()
	sb := sandbox.New(sandbox.Options{})
	srv := sandboxtest.Serve(t, sb, true)
	client, err := mistral.New(mistral.Options{BaseURL: srv.URL, AdminKey: mistral.Secret(sb.AdminKey()),
		MaxRetries: 3, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fs, err := file.New(filepath.Join(dir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "state.db")
	db, err := journal.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &env{t: t, sb: sb, url: srv.URL, client: client, files: fs, store: fs, db: db, dbPath: dbPath,
		logs: &testenv.LogBuffer{}, user: sb.Users()[0].ID, notes: &recorder{}, level: slog.LevelDebug}
}

func (e *env) spec(name string) KeySpec {
	return KeySpec{Name: name, Workspace: sandbox.DefaultWorkspaceName, OwnerUserID: e.user, Backend: "file",
		Target: secrets.Target{Path: "mistral/" + name}, RotateEvery: 90 * 24 * time.Hour,
		PropagationWait: 20 * time.Millisecond, ExpirationGrace: 30 * 24 * time.Hour}
}

func (e *env) engine(opts Options, keys ...KeySpec) *Engine {
	e.t.Helper()
	if opts.VerifyTimeout == 0 {
		opts.VerifyTimeout = 300 * time.Millisecond
	}
	if opts.PublishTimeout == 0 {
		opts.PublishTimeout = 200 * time.Millisecond
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = 5 * time.Millisecond
	}
	eng, err := New(Deps{Platform: e.client, Stores: map[string]secrets.Store{"file": e.store}, Journal: e.db,
		Notifier: e.notes, Logger: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: e.level}))},
		opts, keys)
	if err != nil {
		e.t.Fatal(err)
	}
	return eng
}

// seed creates a platform key not made by mrbacd and stores it as an
// adopted record (no rotation id) created age ago.
func (e *env) seed(name string, age time.Duration, withID bool) sandbox.KeyState {
	e.t.Helper()
	k, err := e.sb.AddKey("legacy-"+name, "", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	rec := secrets.Record{APIKey: k.Plaintext, KeyName: k.Name, CreatedAt: time.Now().Add(-age).UTC()}
	if withID {
		rec.KeyID = k.ID
	}
	if _, err := e.files.Write(context.Background(), secrets.WriteRequest{Target: e.spec(name).Target, Record: rec}); err != nil {
		e.t.Fatal(err)
	}
	return k
}

func (e *env) read(name string) (secrets.Versioned, bool) {
	v, err := e.files.Read(context.Background(), e.spec(name).Target)
	if errors.Is(err, secrets.ErrNotFound) {
		return v, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return v, true
}

func (e *env) run(eng *Engine, req jobs.Request) (jobs.Result, []KeyReport) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := eng.Run(ctx, req)
	if err != nil {
		e.t.Fatalf("Run: %v", err)
	}
	reps, _ := res.Details.([]KeyReport)
	return res, reps
}

// liveManaged returns the live platform keys mrbacd created for name.
func (e *env) liveManaged(name string) []sandbox.KeyState {
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `-\d{8}-[0-9a-f]{8}$`)
	var out []sandbox.KeyState
	for _, k := range e.sb.Keys() {
		if !k.Deleted && re.MatchString(k.Name) {
			out = append(out, k)
		}
	}
	return out
}

// checkSettled asserts I2 for name (exactly one live mrbacd key, the one in
// the store, accepted) and returns the record.
func (e *env) checkSettled(name string) secrets.Versioned {
	e.t.Helper()
	v, ok := e.read(name)
	if !ok {
		e.t.Fatalf("%s: no record in the store", name)
	}
	if !e.sb.Accepts(v.APIKey) {
		e.t.Fatalf("%s: the store's key %s is not accepted by the platform", name, v.KeyID)
	}
	live := e.liveManaged(name)
	if len(live) != 1 || live[0].ID != v.KeyID {
		ids := []string{}
		for _, k := range live {
			ids = append(ids, k.ID+"/"+k.Name)
		}
		e.t.Fatalf("%s: live mrbacd keys %v, want exactly the store's %s", name, ids, v.KeyID)
	}
	return v
}

// checkNoLeak asserts I4: no plaintext of any platform key in the logs or
// the journal files.
func (e *env) checkNoLeak() {
	e.t.Helper()
	logs := e.logs.String()
	var journal []byte
	for _, suffix := range []string{"", "-wal", "-shm"} {
		b, _ := os.ReadFile(e.dbPath + suffix)
		journal = append(journal, b...)
	}
	for _, k := range e.sb.Keys() {
		if strings.Contains(logs, k.Plaintext) {
			e.t.Fatalf("plaintext of key %s found in the logs", k.ID)
		}
		if bytes.Contains(journal, []byte(k.Plaintext)) {
			e.t.Fatalf("plaintext of key %s found in the journal", k.ID)
		}
	}
	if strings.Contains(logs, e.sb.AdminKey()) {
		e.t.Fatal("admin key found in the logs")
	}
}

func (e *env) rotations(key string) []journal.Rotation {
	e.t.Helper()
	rs, err := e.db.RotationsForKey(context.Background(), key, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return rs
}

// recorder is a Notifier that keeps events.
type recorder struct {
	mu       sync.Mutex
	rotated  []Event
	failures []Event
}

func (r *recorder) OnRotated(_ context.Context, ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rotated = append(r.rotated, ev)
}

func (r *recorder) OnFailed(_ context.Context, ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, ev)
}

func (r *recorder) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.rotated), len(r.failures)
}

// flakyStore is a real store whose writes can be made to fail, as a store
// outage at publish would.
type flakyStore struct {
	secrets.Store
	failWrites atomic.Int32 // writes left to fail; <0: all
	// failReadsAfterWrite makes reads fail once a write was tried.
	failReadsAfterWrite atomic.Bool
	writes              atomic.Int32
}

func (f *flakyStore) Write(ctx context.Context, req secrets.WriteRequest) (secrets.Version, error) {
	f.writes.Add(1)
	if n := f.failWrites.Load(); n != 0 {
		if n > 0 {
			f.failWrites.Add(-1)
		}
		return "", errors.Join(secrets.ErrUnavailable, errors.New("test outage"))
	}
	return f.Store.Write(ctx, req)
}

func (f *flakyStore) Read(ctx context.Context, t secrets.Target) (secrets.Versioned, error) {
	if f.failReadsAfterWrite.Load() && f.writes.Load() > 0 {
		return secrets.Versioned{}, errors.Join(secrets.ErrUnavailable, errors.New("test outage"))
	}
	return f.Store.Read(ctx, t)
}

// deletesOf returns the delete events of the key id.
func (e *env) deleted(id string) bool {
	k, ok := e.sb.Key(id)
	return ok && k.Deleted
}
