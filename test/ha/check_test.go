package ha

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/secrets"
)

var mrbacdName = regexp.MustCompile(`-\d{8}-[0-9a-f]{8}$`)

// checker polls the store and the journal continuously, independently of
// the daemons: what each key's store served (I1 at every read), and that
// the journal never holds two rotations of one key in flight.
type checker struct {
	w          *world
	db         *pgx.Conn
	quit, done chan struct{}

	mu         sync.Mutex
	reads      int
	violations []string
	history    map[string][]string // key ids each store target held, in order
}

func startChecker(w *world) *checker {
	c := &checker{w: w, db: w.journalConn(), quit: make(chan struct{}), done: make(chan struct{}), history: map[string][]string{}}
	go c.loop()
	return c
}

func (c *checker) violation(format string, args ...any) {
	c.mu.Lock()
	c.violations = append(c.violations, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

func (c *checker) loop() {
	defer close(c.done)
	ctx := context.Background()
	for {
		select {
		case <-c.quit:
			return
		default:
		}
		for _, k := range c.w.keys {
			c.readStore(ctx, k)
		}
		rows, err := c.db.Query(ctx, `SELECT key_name, count(*) FROM rotations WHERE status = 'in_flight' GROUP BY key_name HAVING count(*) > 1`)
		if err == nil {
			for rows.Next() {
				var key string
				var n int
				if rows.Scan(&key, &n) == nil {
					c.violation("overlap: the journal holds %d rotations of %s in flight at once", n, key)
				}
			}
			rows.Close()
		}
	}
}

// readStore reads k's record: I1, the key it holds is accepted by the
// platform (or the store no longer serves that version).
func (c *checker) readStore(ctx context.Context, k managedKey) {
	v, err := c.w.store.Read(ctx, k.target)
	if errors.Is(err, secrets.ErrNotFound) {
		return // key c before its bootstrap
	}
	if err != nil {
		if strings.Contains(err.Error(), "not written yet") {
			c.violation("%s: torn record: %v", k.name, err)
		}
		return
	}
	accepted := c.w.sb.Accepts(v.APIKey)
	c.mu.Lock()
	c.reads++
	if h := c.history[k.name]; len(h) == 0 || h[len(h)-1] != v.KeyID {
		c.history[k.name] = append(h, v.KeyID)
	}
	c.mu.Unlock()
	if accepted {
		return
	}
	if v2, err := c.w.store.Read(ctx, k.target); err == nil && v2.Version == v.Version && v2.KeyID == v.KeyID {
		c.violation("I1: %s: the store served key %s (version %s), which the platform rejected", k.name, v.KeyID, v.Version)
	}
}

func (c *checker) stop() {
	close(c.quit)
	<-c.done
}

// checkSettled asserts I2: one live mrbacd key per managed key, the
// store's, accepted; the adopted legacy keys are gone.
func (w *world) checkSettled(ch *checker) {
	t := w.t
	for _, k := range w.keys {
		v, err := w.store.Read(context.Background(), k.target)
		if err != nil {
			t.Fatalf("I2: %s: read store: %v", k.name, err)
		}
		var live []string
		for _, pk := range w.sb.Keys() {
			if !pk.Deleted && strings.HasPrefix(pk.Name, k.name+"-") && mrbacdName.MatchString(pk.Name) {
				live = append(live, pk.ID)
			}
			if pk.Name == "legacy-"+k.name && !pk.Deleted {
				t.Errorf("I2: %s: the adopted legacy key %s is still alive", k.name, pk.ID)
			}
		}
		if len(live) != 1 || live[0] != v.KeyID {
			t.Errorf("I2: %s: live mrbacd keys %v, want exactly the store's %s; history %v", k.name, live, v.KeyID, ch.history[k.name])
		}
		if !w.sb.Accepts(v.APIKey) {
			t.Errorf("I1: %s: the settled store key %s is rejected", k.name, v.KeyID)
		}
		if n := len(ch.history[k.name]); n < 2 {
			t.Errorf("%s: the checker saw only %d keys in the store", k.name, n)
		}
	}
}

// checkRevokeLast asserts I3: every served key the platform deleted was
// deleted while the store held its successor, used at least twice
// (verified before publish, re-verified after).
func (w *world) checkRevokeLast(ch *checker) {
	t := w.t
	deleted := map[string]bool{}
	for _, ev := range w.sb.Events() {
		if ev.Kind == sandbox.EventDelete {
			deleted[ev.KeyID] = true
		}
	}
	served := map[string]bool{}
	for _, h := range ch.history {
		for _, id := range h {
			served[id] = true
		}
	}
	w.delMu.Lock()
	defer w.delMu.Unlock()
	checked := 0
	for _, d := range w.deletes {
		if !deleted[d.keyID] {
			continue
		}
		if d.readErr == nil && d.current == d.keyID {
			t.Errorf("I3: %s: key %s deleted while the store still served it", d.managed, d.keyID)
			continue
		}
		if !served[d.keyID] {
			continue // an unpublished key of an aborted or recovered attempt
		}
		checked++
		if d.readErr != nil {
			t.Errorf("I3: %s: could not read the store when key %s was deleted: %v", d.managed, d.keyID, d.readErr)
		} else if d.uses < 2 {
			t.Errorf("I3: %s: key %s deleted when its successor %s had been used %d time(s)", d.managed, d.keyID, d.current, d.uses)
		}
	}
	if checked == 0 {
		t.Error("I3: no revocation of a served key was observed")
	}
}

// checkNoLeak asserts I4: no key material or admin key in any table of the
// journal or in the daemons' output.
func (w *world) checkNoLeak(db *pgx.Conn) {
	t := w.t
	ctx := context.Background()
	rows, err := db.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`)
	must(t, err)
	var tables []string
	for rows.Next() {
		var name string
		must(t, rows.Scan(&name))
		tables = append(tables, name)
	}
	rows.Close()
	var journal bytes.Buffer
	for _, tb := range tables {
		var dump *string
		must(t, db.QueryRow(ctx, `SELECT string_agg(t::text, E'\n') FROM `+pgx.Identifier{tb}.Sanitize()+` t`).Scan(&dump))
		if dump != nil {
			journal.WriteString(*dump)
		}
	}
	if journal.Len() == 0 || !bytes.Contains(journal.Bytes(), []byte("rotations")) && len(tables) < 5 {
		t.Fatalf("I4: the journal looks empty (%d tables)", len(tables))
	}
	out := w.output.String()
	if out == "" {
		t.Fatal("I4: no daemon output to scan")
	}
	material := []string{w.sb.AdminKey()}
	for _, k := range w.sb.Keys() {
		material = append(material, k.Plaintext)
	}
	for _, m := range material {
		if bytes.Contains(journal.Bytes(), []byte(m)) {
			t.Errorf("I4: key material found in the journal")
		}
		if strings.Contains(out, m) {
			t.Errorf("I4: key material found in the daemons' output")
		}
	}
}

// checkNotRotatedTwice replays the platform's ordered event log: for each
// managed key, never two live keys of one name (a rotation's key created
// twice), never live keys of more than two names (the current key and one
// rotation's: two rotations overlapping), and no key of a rotation created
// once a later rotation of the same key had created its own.
func (w *world) checkNotRotatedTwice() (rotations int) {
	t := w.t
	type keyState struct {
		live  map[string]int // live keys by name
		order []string       // rotation names in order of first create
	}
	states := map[string]*keyState{}
	names := map[string]string{} // key id -> name
	for _, pk := range w.sb.Keys() {
		names[pk.ID] = pk.Name
	}
	for _, ev := range w.sb.Events() {
		if ev.Kind != sandbox.EventCreate && ev.Kind != sandbox.EventDelete {
			continue
		}
		name := names[ev.KeyID]
		mk := w.managedOf(name)
		if mk == nil {
			continue
		}
		st := states[mk.name]
		if st == nil {
			st = &keyState{live: map[string]int{}}
			states[mk.name] = st
		}
		if ev.Kind == sandbox.EventDelete {
			if st.live[name]--; st.live[name] <= 0 {
				delete(st.live, name)
			}
			continue
		}
		st.live[name]++
		if st.live[name] > 1 {
			t.Errorf("rotated twice: %s: two live keys named %s at event %d", mk.name, name, ev.Seq)
		}
		if len(st.live) > 2 {
			t.Errorf("overlap: %s: live keys of %d names at once at event %d: %v", mk.name, len(st.live), ev.Seq, st.live)
		}
		if strings.HasPrefix(name, "legacy-") {
			continue
		}
		seen := -1
		for i, n := range st.order {
			if n == name {
				seen = i
			}
		}
		switch {
		case seen < 0:
			st.order = append(st.order, name)
			rotations++
		case seen < len(st.order)-1:
			t.Errorf("rotated twice: %s: rotation %s created a key at event %d after rotation %s began", mk.name, name, ev.Seq, st.order[len(st.order)-1])
		}
	}
	return rotations
}

// percentile returns the p-th (0 to 1) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1)+0.5)]
}
