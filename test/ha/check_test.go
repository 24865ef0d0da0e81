package ha

import (
	"bytes"
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mrbacd/mrbacd/test/invariants"
)

// startChecker starts the independent poller: the store of every managed
// key (invariants.Checker) and, each round, the journal's own tables read
// over the poller's connection: never two rotations of one key in flight.
func (w *world) startChecker() *invariants.Checker {
	db := w.journalConn()
	return w.StartChecker(func(c *invariants.Checker) {
		rows, err := db.Query(context.Background(), `SELECT key_name, count(*) FROM rotations WHERE status = 'in_flight'
			GROUP BY key_name HAVING count(*) > 1`)
		if err != nil {
			return
		}
		defer rows.Close()
		for rows.Next() {
			var key string
			var n int
			if rows.Scan(&key, &n) == nil {
				c.Violation("overlap: the journal holds %d rotations of %s in flight at once", n, key)
			}
		}
	})
}

// check runs every end-of-test check: the poller's violations, I2, I3,
// no key rotated twice, I4 over every table of the journal and the
// daemons' output. It returns the rotations seen on the platform.
func (w *world) check(ch *invariants.Checker, db *pgx.Conn) int {
	for _, v := range ch.Stop() {
		w.t.Error(v)
	}
	w.CheckSettled(w.t, ch)
	w.CheckRevokeLast(w.t, ch)
	rotations := w.CheckNotRotatedTwice(w.t)
	w.CheckNoLeak(w.t, w.journalDump(db), []byte(w.output.String()), w.Sandbox.AdminKey())
	return rotations
}

// journalDump returns every row of every table of the journal as text.
func (w *world) journalDump(db *pgx.Conn) []byte {
	ctx := context.Background()
	rows, err := db.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`)
	must(w.t, err)
	var tables []string
	for rows.Next() {
		var name string
		must(w.t, rows.Scan(&name))
		tables = append(tables, name)
	}
	rows.Close()
	var out bytes.Buffer
	for _, tb := range tables {
		var dump *string
		must(w.t, db.QueryRow(ctx, `SELECT string_agg(t::text, E'\n') FROM `+pgx.Identifier{tb}.Sanitize()+` t`).Scan(&dump))
		if dump != nil {
			out.WriteString(*dump)
		}
	}
	return out.Bytes()
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
