// Package storetest is the contract every secrets.Store backend must meet,
// written once and run against each backend's real server (Vault dev server,
// moto_server, a temporary directory) by that backend's tests.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/secrets"
)

// Harness is one backend under test with the hooks the contract needs.
type Harness struct {
	// Store is the store under test.
	Store secrets.Store
	// Peek returns the value stored at path exactly as the backend holds it
	// (Vault: the "api_key" field for raw, the data as JSON otherwise; AWS:
	// the AWSCURRENT SecretString; file: the envelope's current value),
	// bypassing Store, so the suite can check the stored format.
	Peek func(t *testing.T, path string) string
	// Denied returns a store over the same backend whose credentials may not
	// touch path (which already holds a record): every call must fail with
	// secrets.ErrPermissionDenied. undo (may be nil) lifts the denial where it
	// also affects Store (the file backend).
	Denied func(t *testing.T, path string) (denied secrets.Store, undo func())
	// Outage makes the backend unreachable while keeping its data (pause the
	// server, hide the directory); Restore ends the outage.
	Outage, Restore func(t *testing.T)
	// OutageTimeout bounds each call made during an outage (default 3s).
	OutageTimeout time.Duration
	// Logs returns what the store logged so far, scanned for secret values
	// (nil when the store does not log).
	Logs func() string
	// Crash returns a store over the same backend as Store whose process
	// "dies" during a write: it sends the first n requests that change the
	// backend, and every request after those fails with ErrCrashed without
	// reaching it (see CrashTransport; the file store stops after n steps
	// that change the disk instead). Required.
	Crash func(t *testing.T, n int) secrets.Store
}

// ErrCrashed is what a CrashTransport answers once its process has "died".
var ErrCrashed = errors.New("storetest: simulated crash: the process died before this request")

// CrashTransport wraps base to simulate a process killed in the middle of
// a write: it forwards requests until n requests for which mutating reports
// true have been sent; the next mutating request, and every request after
// it, fails with ErrCrashed without reaching the server (a killed process
// sends nothing more).
func CrashTransport(base http.RoundTripper, n int, mutating func(*http.Request) bool) http.RoundTripper {
	return &crashTransport{base: base, left: n, mutating: mutating}
}

type crashTransport struct {
	base     http.RoundTripper
	mutating func(*http.Request) bool

	mu   sync.Mutex
	left int
	dead bool
}

func (c *crashTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	if !c.dead && c.mutating(r) {
		if c.left == 0 {
			c.dead = true
		} else {
			c.left--
		}
	}
	dead := c.dead
	c.mu.Unlock()
	if dead {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, ErrCrashed
	}
	return c.base.RoundTrip(r)
}

// suite tracks the secret values used so the no-leak checks can scan for them.
type suite struct {
	h       Harness
	mu      sync.Mutex
	secrets []string
	errs    []string
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// record returns a fresh record whose key is registered as a secret.
func (s *suite) record(name string) secrets.Record {
	key := "sk-test-" + randHex(16)
	s.mu.Lock()
	s.secrets = append(s.secrets, key)
	s.mu.Unlock()
	return secrets.Record{
		APIKey: key, KeyID: "kid-" + randHex(6), KeyName: name,
		CreatedAt: time.Now().UTC().Truncate(time.Second), RotationID: "rot-" + randHex(6),
	}
}

// path returns a path unique to this run.
func path(t *testing.T) string {
	name := strings.NewReplacer("/", "-", " ", "-", "#", "-").Replace(t.Name())
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	return "mrbacd-test/" + strings.Trim(name, "-") + "-" + randHex(4)
}

// noteErr records an error for the leak scan.
func (s *suite) noteErr(err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	s.errs = append(s.errs, err.Error())
	s.mu.Unlock()
}

// Run runs the contract against the backend newHarness builds; each subtest
// gets its own harness (and may get its own server).
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s *suite)
		// errs: the case provokes errors, which the leak check then scans.
		errs bool
	}{
		{"NotFound", testNotFound, true},
		{"RoundTripJSON", func(t *testing.T, s *suite) { testRoundTrip(t, s, secrets.FormatJSON) }, false},
		{"RoundTripRaw", func(t *testing.T, s *suite) { testRoundTrip(t, s, secrets.FormatRaw) }, false},
		{"CASConflict", testCASConflict, true},
		{"IdempotentToken", testIdempotentToken, true},
		{"ConcurrentWriters", func(t *testing.T, s *suite) { testConcurrentWriters(t, s, secrets.FormatJSON) }, true},
		{"ConcurrentWritersRaw", func(t *testing.T, s *suite) { testConcurrentWriters(t, s, secrets.FormatRaw) }, true},
		{"CrashMidWrite", testCrashMidWrite, true},
		{"PermissionDenied", testPermissionDenied, true},
		{"Outage", testOutage, true},
		{"BadInput", testBadInput, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &suite{h: newHarness(t)}
			tc.fn(t, s)
			s.checkNoLeak(t, tc.errs)
		})
	}
}

// checkNoLeak fails if any error or log line seen holds a secret value.
func (s *suite) checkNoLeak(t *testing.T, wantErrs bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var logs string
	if s.h.Logs != nil {
		logs = s.h.Logs()
	}
	for _, sec := range s.secrets {
		for _, e := range s.errs {
			if strings.Contains(e, sec) {
				t.Errorf("an error holds a secret value: %q", strings.ReplaceAll(e, sec, "<SECRET>"))
			}
		}
		if strings.Contains(logs, sec) {
			t.Errorf("the store's logs hold a secret value")
		}
	}
	if wantErrs && len(s.errs) == 0 {
		t.Errorf("no errors were observed: the leak check checked nothing")
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// write writes r with CAS on ifv and fails the test on error.
func (s *suite) write(t *testing.T, tg secrets.Target, r secrets.Record, ifv secrets.Version) secrets.Version {
	t.Helper()
	v, err := s.h.Store.Write(ctxT(t), secrets.WriteRequest{Target: tg, Record: r, IfVersion: ifv, Token: r.RotationID})
	s.noteErr(err)
	if err != nil {
		t.Fatalf("Write(%s, if %q): %v", tg.Path, ifv, err)
	}
	if v == secrets.NoVersion {
		t.Fatalf("Write(%s) returned no version", tg.Path)
	}
	return v
}

// mustRead reads tg and checks it holds want at version wantV.
func (s *suite) mustRead(t *testing.T, tg secrets.Target, want secrets.Record, wantV secrets.Version) {
	t.Helper()
	got, err := s.h.Store.Read(ctxT(t), tg)
	s.noteErr(err)
	if err != nil {
		t.Fatalf("Read(%s): %v", tg.Path, err)
	}
	if !sameRecord(got.Record, want) {
		t.Fatalf("Read(%s) = %v, want %v (keys equal: %v)", tg.Path, got.Record, want, got.APIKey == want.APIKey)
	}
	if wantV != "" && got.Version != wantV {
		t.Fatalf("Read(%s) version = %q, want %q", tg.Path, got.Version, wantV)
	}
}

func sameRecord(a, b secrets.Record) bool {
	return a.APIKey == b.APIKey && a.KeyID == b.KeyID && a.KeyName == b.KeyName &&
		a.RotationID == b.RotationID && a.CreatedAt.Equal(b.CreatedAt)
}

func testNotFound(t *testing.T, s *suite) {
	ctx := ctxT(t)
	for _, f := range []secrets.Format{secrets.FormatJSON, secrets.FormatRaw} {
		tg := secrets.Target{Path: path(t), Format: f}
		_, err := s.h.Store.Read(ctx, tg)
		s.noteErr(err)
		if !errors.Is(err, secrets.ErrNotFound) {
			t.Fatalf("Read(missing) err = %v, want ErrNotFound", err)
		}
		if secrets.Retryable(err) {
			t.Fatalf("not found must not be retryable: %v", err)
		}
		d, err := s.h.Store.Describe(ctx, tg)
		if err != nil || d.Exists || d.Current != secrets.NoVersion {
			t.Fatalf("Describe(missing) = %+v, %v; want not existing, no error", d, err)
		}
		// Expecting a version of a target that does not exist is a conflict.
		r := s.record("nf")
		_, err = s.h.Store.Write(ctx, secrets.WriteRequest{Target: tg, Record: r, IfVersion: "1", Token: r.RotationID})
		s.noteErr(err)
		if !errors.Is(err, secrets.ErrConflict) {
			t.Fatalf("Write(missing, if 1) err = %v, want ErrConflict", err)
		}
		if _, err := s.h.Store.Read(ctx, tg); !errors.Is(err, secrets.ErrNotFound) {
			t.Fatalf("a failed write left something behind: Read err = %v", err)
		}
	}
}

func testRoundTrip(t *testing.T, s *suite, f secrets.Format) {
	ctx := ctxT(t)
	tg := secrets.Target{Path: path(t), Format: f}
	r1 := s.record("dev-team-key")
	v1 := s.write(t, tg, r1, secrets.NoVersion)
	s.mustRead(t, tg, r1, v1)

	peek := s.h.Peek(t, tg.Path)
	switch f {
	case secrets.FormatRaw:
		if peek != r1.APIKey {
			t.Fatalf("raw format: stored value is not the bare key (len %d)", len(peek))
		}
	default:
		dec, err := secrets.Decode(secrets.FormatJSON, []byte(peek), nil)
		if err != nil || !sameRecord(dec, r1) {
			t.Fatalf("json format: stored value is not the record JSON: %v", err)
		}
	}

	d, err := s.h.Store.Describe(ctx, tg)
	if err != nil {
		t.Fatalf("Describe: %v", err)
	}
	want := r1.Metadata()
	if !d.Exists || d.Current != v1 || d.Versions < 1 {
		t.Fatalf("Describe = %+v, want exists at %q", d, v1)
	}
	for _, k := range []string{"managed-by", "key_id", "key_name", "rotation_id"} {
		if d.Metadata[k] != want[k] {
			t.Fatalf("Describe metadata[%s] = %q, want %q", k, d.Metadata[k], want[k])
		}
	}
	for k, v := range d.Metadata {
		if strings.Contains(v, r1.APIKey) {
			t.Fatalf("metadata %s holds the key", k)
		}
	}

	r2 := s.record("dev-team-key")
	v2 := s.write(t, tg, r2, v1)
	if v2 == v1 {
		t.Fatalf("second write returned the same version %q", v2)
	}
	s.mustRead(t, tg, r2, v2)
	d, err = s.h.Store.Describe(ctx, tg)
	if err != nil || d.Current != v2 || d.Versions < 2 || d.Metadata["key_id"] != r2.KeyID {
		t.Fatalf("Describe after 2 writes = %+v, %v; want current %q, >= 2 versions, key_id %s", d, err, v2, r2.KeyID)
	}
}

func testCASConflict(t *testing.T, s *suite) {
	ctx := ctxT(t)
	tg := secrets.Target{Path: path(t)}
	r1 := s.record("k")
	v1 := s.write(t, tg, r1, secrets.NoVersion)
	r2 := s.record("k")
	v2 := s.write(t, tg, r2, v1)

	cases := []struct {
		name string
		ifv  secrets.Version
	}{
		{"stale version", v1},
		{"must not exist", secrets.NoVersion},
		{"unknown version", secrets.Version("999999")},
	}
	for _, c := range cases {
		r := s.record("k")
		_, err := s.h.Store.Write(ctx, secrets.WriteRequest{Target: tg, Record: r, IfVersion: c.ifv, Token: r.RotationID})
		s.noteErr(err)
		if !errors.Is(err, secrets.ErrConflict) {
			t.Fatalf("%s: Write err = %v, want ErrConflict", c.name, err)
		}
		if secrets.Retryable(err) {
			t.Fatalf("%s: a conflict must not be retryable: %v", c.name, err)
		}
		s.mustRead(t, tg, r2, v2)
	}
}

func testIdempotentToken(t *testing.T, s *suite) {
	ctx := ctxT(t)
	tg := secrets.Target{Path: path(t)}
	v1 := s.write(t, tg, s.record("k"), secrets.NoVersion)
	r2 := s.record("k")
	req := secrets.WriteRequest{Target: tg, Record: r2, IfVersion: v1, Token: r2.RotationID}
	v2, err := s.h.Store.Write(ctx, req)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	d1, err := s.h.Store.Describe(ctx, tg)
	if err != nil {
		t.Fatal(err)
	}
	// The retry of the same request (a crash after the write landed) is a no-op.
	again, err := s.h.Store.Write(ctx, req)
	s.noteErr(err)
	if err != nil || again != v2 {
		t.Fatalf("retried Write = %q, %v; want %q, nil", again, err, v2)
	}
	d2, err := s.h.Store.Describe(ctx, tg)
	if err != nil || d2.Current != v2 || d2.Versions != d1.Versions {
		t.Fatalf("retried write changed the target: before %+v after %+v (%v)", d1, d2, err)
	}
	s.mustRead(t, tg, r2, v2)
	// Another rotation with a stale version still conflicts.
	r3 := s.record("k")
	_, err = s.h.Store.Write(ctx, secrets.WriteRequest{Target: tg, Record: r3, IfVersion: v1, Token: r3.RotationID})
	s.noteErr(err)
	if !errors.Is(err, secrets.ErrConflict) {
		t.Fatalf("stale write with a new token err = %v, want ErrConflict", err)
	}
}

func testConcurrentWriters(t *testing.T, s *suite, f secrets.Format) {
	tg := secrets.Target{Path: path(t), Format: f}
	// Round 0 races to create the target; the others race to replace it.
	var cur secrets.Version = secrets.NoVersion
	const writers, rounds = 4, 4
	for round := 0; round < rounds; round++ {
		recs := make([]secrets.Record, writers)
		for i := range recs {
			recs[i] = s.record("k")
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		vers := make([]secrets.Version, writers)
		errs := make([]error, writers)
		for i := 0; i < writers; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-start
				vers[i], errs[i] = s.h.Store.Write(context.Background(), secrets.WriteRequest{
					Target: tg, Record: recs[i], IfVersion: cur, Token: recs[i].RotationID})
			}(i)
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			s.noteErr(err)
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: writers %d and %d both won (versions %q, %q)", round, winner, i, vers[winner], vers[i])
				}
				winner = i
			case !errors.Is(err, secrets.ErrConflict):
				t.Fatalf("round %d: writer %d err = %v, want nil or ErrConflict", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer won: %v", round, errs)
		}
		s.mustRead(t, tg, recs[winner], vers[winner])
		cur = vers[winner]
	}
}

func testPermissionDenied(t *testing.T, s *suite) {
	ctx := ctxT(t)
	tg := secrets.Target{Path: path(t)}
	r1 := s.record("k")
	v1 := s.write(t, tg, r1, secrets.NoVersion)
	denied, undo := s.h.Denied(t, tg.Path)

	_, err := denied.Read(ctx, tg)
	s.checkDenied(t, "Read", err)
	_, err = denied.Describe(ctx, tg)
	s.checkDenied(t, "Describe", err)
	r2 := s.record("k")
	_, err = denied.Write(ctx, secrets.WriteRequest{Target: tg, Record: r2, IfVersion: v1, Token: r2.RotationID})
	s.checkDenied(t, "Write", err)
	if undo != nil {
		undo()
	}
	s.mustRead(t, tg, r1, v1)
}

func (s *suite) checkDenied(t *testing.T, op string, err error) {
	t.Helper()
	s.noteErr(err)
	if !errors.Is(err, secrets.ErrPermissionDenied) {
		t.Fatalf("denied %s err = %v, want ErrPermissionDenied", op, err)
	}
	if secrets.Retryable(err) {
		t.Fatalf("denied %s: permission denied must not be retryable: %v", op, err)
	}
}

func testOutage(t *testing.T, s *suite) {
	tg := secrets.Target{Path: path(t)}
	r1 := s.record("k")
	v1 := s.write(t, tg, r1, secrets.NoVersion)

	timeout := s.h.OutageTimeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	s.h.Outage(t)
	restored := false
	defer func() {
		if !restored {
			s.h.Restore(t)
		}
	}()
	r2 := s.record("k")
	req := secrets.WriteRequest{Target: tg, Record: r2, IfVersion: v1, Token: r2.RotationID}
	calls := []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"Read", func(ctx context.Context) error { _, err := s.h.Store.Read(ctx, tg); return err }},
		{"Describe", func(ctx context.Context) error { _, err := s.h.Store.Describe(ctx, tg); return err }},
		{"Write", func(ctx context.Context) error { _, err := s.h.Store.Write(ctx, req); return err }},
	}
	for _, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := c.do(ctx)
		cancel()
		s.noteErr(err)
		if !secrets.Retryable(err) {
			t.Fatalf("%s during outage err = %v, want retryable (ErrUnavailable)", c.name, err)
		}
		if errors.Is(err, secrets.ErrNotFound) || errors.Is(err, secrets.ErrConflict) {
			t.Fatalf("%s during outage err = %v: must not claim not-found or conflict", c.name, err)
		}
	}
	s.h.Restore(t)
	restored = true

	// Nothing written before is lost or corrupted. The write attempted during
	// the outage may or may not have landed (a timed-out request can still be
	// served later); either way the target holds one whole record.
	ctx := ctxT(t)
	got, err := s.h.Store.Read(ctx, tg)
	if err != nil {
		t.Fatalf("Read after outage: %v", err)
	}
	switch {
	case sameRecord(got.Record, r1) && got.Version == v1:
	case sameRecord(got.Record, r2):
	default:
		t.Fatalf("after the outage the target holds neither the old nor the new record: %v", got.Record)
	}
	// The caller retries the same write: it lands exactly once.
	v2, err := s.h.Store.Write(ctx, req)
	s.noteErr(err)
	if err != nil {
		t.Fatalf("retrying the write after the outage: %v", err)
	}
	s.mustRead(t, tg, r2, v2)
}

func testBadInput(t *testing.T, s *suite) {
	ctx := ctxT(t)
	r := s.record("k")
	_, err := s.h.Store.Read(ctx, secrets.Target{Path: ""})
	s.noteErr(err)
	if err == nil || errors.Is(err, secrets.ErrNotFound) {
		t.Fatalf("Read(empty path) err = %v, want an input error", err)
	}
	_, err = s.h.Store.Write(ctx, secrets.WriteRequest{Target: secrets.Target{Path: ""}, Record: r})
	s.noteErr(err)
	if err == nil {
		t.Fatalf("Write(empty path) succeeded")
	}
	// A cancelled context stops a call without claiming anything about the target.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.h.Store.Write(cctx, secrets.WriteRequest{Target: secrets.Target{Path: path(t)}, Record: r, Token: r.RotationID})
	s.noteErr(err)
	if err == nil || errors.Is(err, secrets.ErrConflict) || errors.Is(err, secrets.ErrNotFound) {
		t.Fatalf("Write(cancelled ctx) err = %v, want a context error", err)
	}
}

// testCrashMidWrite kills a writer after each step of a write in turn (the
// first write of a target and a replacement, both formats) and checks that
// the target stays readable, holding the old record or the whole new one,
// that Describe agrees, and that the target still takes writes: a new
// record (a recovery, which never has the lost key) and, in turn, the retry
// of the crashed request.
func testCrashMidWrite(t *testing.T, s *suite) {
	if s.h.Crash == nil {
		t.Fatal("the harness has no Crash hook: every backend must show it survives a crash mid-write")
	}
	ctx := ctxT(t)
	cases := []struct {
		name   string
		format secrets.Format
		create bool // crash in the target's first write
	}{
		{"raw/create", secrets.FormatRaw, true},
		{"raw/replace", secrets.FormatRaw, false},
		{"json/create", secrets.FormatJSON, true},
		{"json/replace", secrets.FormatJSON, false},
	}
	for _, c := range cases {
		completed := false
		for n := 0; !completed; n++ {
			if n > 16 {
				t.Fatalf("%s: the write still had not completed after %d requests", c.name, n)
			}
			where := fmt.Sprintf("%s, crash after %d requests", c.name, n)
			tg := secrets.Target{Path: path(t), Format: c.format}
			var old secrets.Record
			oldV := secrets.NoVersion
			if !c.create {
				old = s.record("k")
				oldV = s.write(t, tg, old, secrets.NoVersion)
			}
			r := s.record("k")
			req := secrets.WriteRequest{Target: tg, Record: r, IfVersion: oldV, Token: r.RotationID}
			v, err := s.h.Crash(t, n).Write(ctx, req)
			s.noteErr(err)
			if err == nil {
				// n requests were enough: the sweep has covered every step.
				completed = true
				s.mustRead(t, tg, r, v)
				continue
			}
			if !errors.Is(err, ErrCrashed) {
				t.Fatalf("%s: Write err = %v, want the simulated crash", where, err)
			}
			// The target holds one whole record, old or new, readable.
			got, err := s.h.Store.Read(ctx, tg)
			s.noteErr(err)
			landed := false
			switch {
			case c.create && errors.Is(err, secrets.ErrNotFound):
			case err != nil:
				t.Fatalf("%s: Read: %v (the store must stay readable)", where, err)
			case !c.create && sameRecord(got.Record, old) && got.Version == oldV:
			case sameRecord(got.Record, r):
				landed = true
			default:
				t.Fatalf("%s: Read = %v at %q: neither the old record nor the whole new one", where, got.Record, got.Version)
			}
			d, err := s.h.Store.Describe(ctx, tg)
			if err != nil {
				t.Fatalf("%s: Describe: %v", where, err)
			}
			switch {
			case got.Version != secrets.NoVersion && (!d.Exists || d.Current != got.Version):
				t.Fatalf("%s: Describe = %+v, Read version %q", where, d, got.Version)
			case c.format == secrets.FormatRaw && got.Version != secrets.NoVersion && d.Metadata["key_id"] != got.KeyID:
				// (JSON metadata is informational, written after the value.)
				t.Fatalf("%s: Describe metadata key_id %q, Read key_id %q", where, d.Metadata["key_id"], got.KeyID)
			case got.Version == secrets.NoVersion && d.Exists:
				t.Fatalf("%s: Describe = %+v after a crashed first write that Read does not show", where, d)
			}
			if n%2 == 1 {
				// The retry of the crashed request completes it.
				v, err := s.h.Store.Write(ctx, req)
				s.noteErr(err)
				if err != nil {
					t.Fatalf("%s (landed %t): retrying the write: %v", where, landed, err)
				}
				if landed && v != got.Version {
					t.Fatalf("%s: the retry of a landed write wrote again: %q, then %q", where, got.Version, v)
				}
				s.mustRead(t, tg, r, v)
				got.Version = v
			}
			// Another record replaces whatever is there (a recovery never has
			// the crashed writer's key, so it writes a new one).
			r2 := s.record("k")
			v2 := s.write(t, tg, r2, got.Version)
			s.mustRead(t, tg, r2, v2)
			if n%2 == 0 {
				// A late retry of the crashed request is refused.
				_, err := s.h.Store.Write(ctx, req)
				s.noteErr(err)
				if !errors.Is(err, secrets.ErrConflict) {
					t.Fatalf("%s: a stale retry after a newer write err = %v, want ErrConflict", where, err)
				}
				s.mustRead(t, tg, r2, v2)
			}
		}
	}
}

// RaceWrites writes recs to tg concurrently, each write conditional on
// version cur, and returns the version of the one that won; it fails t
// (messages start with where) unless every other write fails with
// secrets.ErrConflict and a read then returns the winner's record at the
// winner's version. Backend tests use it to race writers against their
// own crash and pruning scenarios.
func RaceWrites(ctx context.Context, t testing.TB, where string, s secrets.Store, tg secrets.Target, cur secrets.Version, recs []secrets.Record) secrets.Version {
	t.Helper()
	var wg sync.WaitGroup
	vers, errs := make([]secrets.Version, len(recs)), make([]error, len(recs))
	for i, r := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vers[i], errs[i] = s.Write(ctx, secrets.WriteRequest{Target: tg, Record: r, IfVersion: cur, Token: r.RotationID})
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			winner = i
		} else if !errors.Is(err, secrets.ErrConflict) {
			t.Fatalf("%s: racing write err = %v", where, err)
		}
	}
	if winner < 0 {
		t.Fatalf("%s: no racing writer won: %v", where, errs)
	}
	r := recs[winner]
	got, err := s.Read(ctx, tg)
	if err != nil || got.KeyID != r.KeyID || got.APIKey != r.APIKey || got.Version != vers[winner] {
		t.Fatalf("%s: Read = %v %q, %v; want %s", where, got.Record, got.Version, err, r.KeyID)
	}
	return vers[winner]
}
