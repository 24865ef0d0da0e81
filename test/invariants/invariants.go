// Package invariants checks the rotation invariants I1–I4 (see the
// protocol in package rotate, jobs/rotate/doc.go) from outside mrbacd, for
// the tests that kill it (test/kill, test/ha): a poller reads the secret
// store continuously and asks the sandbox platform whether the key it holds
// works; an interceptor snapshots the store whenever a key deletion reaches
// the platform; and the checks at the end read the platform's keys and its
// ordered event log. It shares no code with the engine beyond the store and
// sandbox clients.
package invariants

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/secrets"
)

// MrbacdName matches the names mrbacd gives the keys it creates
// (<name>-<yyyymmdd>-<8 hex of the rotation id>).
var MrbacdName = regexp.MustCompile(`-\d{8}-[0-9a-f]{8}$`)

// Key is one managed key: its config name and its store target.
type Key struct {
	Name   string
	Target secrets.Target
}

// World is what the checks look at.
type World struct {
	Sandbox *sandbox.Server
	Store   secrets.Store
	Keys    []Key
	// Explain, when set, returns what helps understand a failure about
	// the given platform key ids (the lines of mrbacd's logs about them).
	Explain func(ids []string) string

	delMu   sync.Mutex
	deletes []deleteSeen
}

func (w *World) explain(ids ...string) string {
	if w.Explain == nil {
		return ""
	}
	return "\n" + w.Explain(ids)
}

// ManagedOf returns the managed key a platform key name belongs to: its
// adopted legacy key ("legacy-<name>") or a key mrbacd created for it.
func (w *World) ManagedOf(name string) *Key {
	for i := range w.Keys {
		k := &w.Keys[i]
		if name == "legacy-"+k.Name || (strings.HasPrefix(name, k.Name+"-") && MrbacdName.MatchString(name)) {
			return k
		}
	}
	return nil
}

// deleteSeen is what the store held when a DELETE of a key reached the
// platform (taken synchronously, before the platform acted on it).
type deleteSeen struct {
	keyID   string // the key being deleted
	managed string // the managed key it belongs to
	current string // the key id the store held at that moment
	uses    int    // use events of that current key so far
	readErr error
}

// InterceptDeletes wraps the platform's handler: every DELETE of a key
// first snapshots the store of the managed key it belongs to (for
// CheckRevokeLast).
func (w *World) InterceptDeletes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if id, ok := strings.CutPrefix(r.URL.Path, "/v1/admin/api-keys/"); ok && r.Method == http.MethodDelete {
			w.snapshotDelete(id)
		}
		next.ServeHTTP(rw, r)
	})
}

func (w *World) snapshotDelete(id string) {
	pk, ok := w.Sandbox.Key(id)
	if !ok {
		return
	}
	mk := w.ManagedOf(pk.Name)
	if mk == nil {
		return
	}
	d := deleteSeen{keyID: id, managed: mk.Name}
	v, err := w.Store.Read(context.Background(), mk.Target)
	if err != nil {
		d.readErr = err
	} else {
		d.current = v.KeyID
		for _, ev := range w.Sandbox.Events() {
			if ev.Kind == sandbox.EventUse && ev.KeyID == v.KeyID {
				d.uses++
			}
		}
	}
	w.delMu.Lock()
	w.deletes = append(w.deletes, d)
	w.delMu.Unlock()
}

// Checker watches the store continuously, independently of mrbacd.
type Checker struct {
	w          *World
	each       func(c *Checker)
	quit, done chan struct{}

	mu         sync.Mutex
	reads      int
	readErrs   int
	violations []string
	history    map[string][]string // key ids each managed key's store held, in order
	idOf       map[string]string   // plaintext -> platform key id
}

// StartChecker starts polling the store of every managed key (I1 at each
// read, torn records); each, when set, runs after every round (a test's
// own look at its journal) and may call Violation.
func (w *World) StartChecker(each func(c *Checker)) *Checker {
	c := &Checker{w: w, each: each, quit: make(chan struct{}), done: make(chan struct{}),
		history: map[string][]string{}, idOf: map[string]string{}}
	go c.loop()
	return c
}

// Violation records a broken invariant.
func (c *Checker) Violation(format string, args ...any) {
	c.mu.Lock()
	c.violations = append(c.violations, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

func (c *Checker) loop() {
	defer close(c.done)
	for {
		select {
		case <-c.quit:
			return
		default:
		}
		for _, k := range c.w.Keys {
			c.read(context.Background(), k)
		}
		if c.each != nil {
			c.each(c)
		}
	}
}

// read reads k's record: the key it holds must be accepted by the
// platform (I1), unless the store no longer serves that very version.
func (c *Checker) read(ctx context.Context, k Key) {
	v, err := c.w.Store.Read(ctx, k.Target)
	c.mu.Lock()
	none := len(c.history[k.Name]) == 0
	c.mu.Unlock()
	if errors.Is(err, secrets.ErrNotFound) && none {
		return // a key to bootstrap, before its bootstrap
	}
	if err != nil {
		c.mu.Lock()
		c.readErrs++
		c.mu.Unlock()
		// A store hiccup is not a served key, but a record whose metadata
		// does not match its value is a torn write.
		if strings.Contains(err.Error(), "not written yet") {
			c.Violation("%s: torn record: %v", k.Name, err)
		}
		return
	}
	accepted := c.w.Sandbox.Accepts(v.APIKey)
	c.mu.Lock()
	c.reads++
	// The record's key id must be the id of the key it holds: a raw record
	// with another version's metadata is a torn write.
	if id := c.keyIDOf(v.APIKey); id != "" && id != v.KeyID {
		c.violations = append(c.violations, fmt.Sprintf("%s: torn record: version %s holds key %s with the metadata of key %q",
			k.Name, v.Version, id, v.KeyID))
	}
	if h := c.history[k.Name]; len(h) == 0 || h[len(h)-1] != v.KeyID {
		c.history[k.Name] = append(h, v.KeyID)
	}
	c.mu.Unlock()
	if accepted {
		return
	}
	if v2, err := c.w.Store.Read(ctx, k.Target); err == nil && v2.Version == v.Version && v2.KeyID == v.KeyID {
		c.Violation("I1: %s: the store served key %s (version %s), which the platform rejected", k.Name, v.KeyID, v.Version)
	}
}

// keyIDOf returns the platform id of the key with plaintext p ("" if the
// platform never issued it). Called with c.mu held.
func (c *Checker) keyIDOf(p string) string {
	if id, ok := c.idOf[p]; ok {
		return id
	}
	for _, k := range c.w.Sandbox.Keys() {
		c.idOf[k.Plaintext] = k.ID
	}
	return c.idOf[p]
}

// Stop stops polling and returns the violations seen.
func (c *Checker) Stop() []string {
	close(c.quit)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.violations...)
}

// Reads returns how many store reads were checked and how many failed.
func (c *Checker) Reads() (ok, failed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads, c.readErrs
}

// History returns the key ids the managed key's store held, in order.
func (c *Checker) History(name string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.history[name]...)
}

// CheckSettled asserts I2 once mrbacd is done: one live mrbacd key per
// managed key, the store's, accepted (I1); no adopted legacy key alive;
// and every key that had a record was seen rotated.
func (w *World) CheckSettled(t testing.TB, c *Checker) {
	t.Helper()
	for _, k := range w.Keys {
		v, err := w.Store.Read(context.Background(), k.Target)
		if err != nil {
			t.Fatalf("I2: %s: read store: %v", k.Name, err)
		}
		var live []string
		for _, pk := range w.Sandbox.Keys() {
			if !pk.Deleted && strings.HasPrefix(pk.Name, k.Name+"-") && MrbacdName.MatchString(pk.Name) {
				live = append(live, pk.ID)
			}
			if pk.Name == "legacy-"+k.Name && !pk.Deleted {
				t.Errorf("I2: %s: the adopted legacy key %s is still alive", k.Name, pk.ID)
			}
		}
		h := c.History(k.Name)
		if len(live) != 1 || live[0] != v.KeyID {
			t.Errorf("I2: %s: live mrbacd keys %v, want exactly the store's %s; history %v%s", k.Name, live, v.KeyID, h, w.explain(live...))
		}
		if !w.Sandbox.Accepts(v.APIKey) {
			t.Errorf("I1: %s: the settled store key %s is rejected", k.Name, v.KeyID)
		}
		if len(h) < 2 && w.hadRecord(k) {
			t.Errorf("%s: the checker saw only %d keys in the store", k.Name, len(h))
		}
	}
}

// hadRecord reports whether k started with an adopted key (a legacy key).
func (w *World) hadRecord(k Key) bool {
	for _, pk := range w.Sandbox.Keys() {
		if pk.Name == "legacy-"+k.Name {
			return true
		}
	}
	return false
}

// CheckRevokeLast asserts I3 for every key the store served that the
// platform deleted: at the moment of the delete the store held another key
// (its successor was published) and that key had been used at least twice
// (verify before publish, re-verify after it: a successful verify stops at
// its first use, and the checker never calls the platform).
func (w *World) CheckRevokeLast(t testing.TB, c *Checker) {
	t.Helper()
	deleted := map[string]bool{}
	for _, ev := range w.Sandbox.Events() {
		if ev.Kind == sandbox.EventDelete {
			deleted[ev.KeyID] = true
		}
	}
	served := map[string]bool{}
	for _, k := range w.Keys {
		for _, id := range c.History(k.Name) {
			served[id] = true
		}
	}
	w.delMu.Lock()
	defer w.delMu.Unlock()
	checked := 0
	for _, d := range w.deletes {
		if !deleted[d.keyID] {
			continue // the request died with its process before the platform acted
		}
		if d.readErr == nil && d.current == d.keyID {
			t.Errorf("I3: %s: key %s deleted while the store still served it%s", d.managed, d.keyID, w.explain(d.keyID))
			continue
		}
		if !served[d.keyID] {
			continue // an unpublished key of an aborted or recovered attempt
		}
		checked++
		if d.readErr != nil {
			t.Errorf("I3: %s: could not read the store when key %s was deleted: %v", d.managed, d.keyID, d.readErr)
			continue
		}
		if d.uses < 2 {
			t.Errorf("I3: %s: key %s deleted when its successor %s had been used %d time(s): not re-verified after publish%s",
				d.managed, d.keyID, d.current, d.uses, w.explain(d.keyID, d.current))
		}
	}
	if checked == 0 {
		t.Error("I3: no revocation of a served key was observed")
	}
}

// CheckNoLeak asserts I4: no key material the platform issued, and none of
// secrets (admin key, tokens), in journal (the journal's contents) or out
// (mrbacd's output).
func (w *World) CheckNoLeak(t testing.TB, journal, out []byte, secrets ...string) {
	t.Helper()
	if len(journal) == 0 {
		t.Fatal("I4: no journal contents to scan")
	}
	if len(out) == 0 {
		t.Fatal("I4: no mrbacd output to scan")
	}
	material := append([]string(nil), secrets...)
	for _, k := range w.Sandbox.Keys() {
		material = append(material, k.Plaintext)
	}
	for _, m := range material {
		if strings.Contains(string(journal), m) {
			t.Errorf("I4: key material found in the journal")
		}
		if strings.Contains(string(out), m) {
			t.Errorf("I4: key material found in mrbacd's output")
		}
	}
}
