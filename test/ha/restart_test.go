package ha

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/ctlsock"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// TestPostgresRestartDuringRotation: a daemon on the PostgreSQL journal
// rotates its keys (forced) while every session of the journal's database
// is ended again and again, as restarts of the server would. The run
// completes with no restart of mrbacd; each rotation is journaled once
// (one row per key, done, never restarted), the platform sees exactly one
// new key per managed key and each old key revoked once, and the daemon's
// log names each recovery with a WARN line.
func TestPostgresRestartDuringRotation(t *testing.T) {
	w := newWorld(t, 2*time.Second) // each rotation parks 2 s: several restarts land in it
	ch := w.startChecker()
	n := w.nodes[0]
	w.start(n)
	w.leader(10 * lease)
	ctx := context.Background()

	// A first run bootstraps the key without a record; the forced run
	// below then rotates every key from a known key id.
	first, err := n.client.RunJob(ctx, "rotate", ctlsock.RunRequest{Wait: true})
	must(t, err)
	if first.Status != "ok" {
		t.Fatalf("first rotate run: %s (%s)", first.Status, first.Summary)
	}
	before := map[string]string{} // key name → platform key id in the store
	for _, k := range w.Keys {
		v, err := w.Store.Read(ctx, k.Target)
		must(t, err)
		before[k.Name] = v.KeyID
	}
	events := w.Sandbox.Events()
	seq := events[len(events)-1].Seq
	began := time.Now()

	type result struct {
		run ctlsock.Run
		err error
	}
	done := make(chan result, 1)
	go func() {
		run, err := n.client.RunJob(ctx, "rotate", ctlsock.RunRequest{Force: true, Wait: true})
		done <- result{run, err}
	}()
	// Restart after restart: every 300 ms, each open session of the
	// journal (the daemon's pool, the poller's) is ended.
	restarts, ended := 0, 0
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	var res result
wait:
	for {
		select {
		case res = <-done:
			break wait
		case <-tick.C:
			if m := w.pg.TerminateSessions(t); m > 0 {
				restarts++
				ended += m
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("the forced rotation did not end within 2 minutes of restarts:\n%s", tail(n.out.String(), 12000))
		}
	}
	if res.err != nil {
		t.Fatalf("forced rotate run: %v\n%s", res.err, tail(n.out.String(), 12000))
	}
	if res.run.Status != "ok" {
		t.Fatalf("forced rotate run: %s (%s): %s\n%s", res.run.Status, res.run.Summary, res.run.Error, tail(n.out.String(), 12000))
	}
	if restarts < 3 {
		t.Fatalf("only %d restarts landed during the rotation (want at least 3)", restarts)
	}
	if n.proc.exited() {
		t.Fatalf("mrbacd exited (%d) during the restarts", n.proc.code)
	}

	// The platform: one key created per managed key, each old key revoked once.
	after := map[string]string{}
	for _, k := range w.Keys {
		v, err := w.Store.Read(ctx, k.Target)
		must(t, err)
		after[k.Name] = v.KeyID
		if v.KeyID == before[k.Name] {
			t.Errorf("key %s: still %s in the store after the forced rotation", k.Name, v.KeyID)
		}
	}
	var created, deleted []string
	for _, e := range w.Sandbox.EventsSince(seq) {
		switch e.Kind {
		case sandbox.EventCreate:
			created = append(created, e.KeyID)
		case sandbox.EventDelete:
			deleted = append(deleted, e.KeyID)
		}
	}
	wantCreated, wantDeleted := slices.Sorted(maps.Values(after)), slices.Sorted(maps.Values(before))
	slices.Sort(created)
	slices.Sort(deleted)
	if !slices.Equal(created, wantCreated) {
		t.Errorf("keys created on the platform during the rotation: %v, want exactly the new ones %v", created, wantCreated)
	}
	if !slices.Equal(deleted, wantDeleted) {
		t.Errorf("keys revoked on the platform during the rotation: %v, want each old one once %v", deleted, wantDeleted)
	}

	// The journal: one rotation per key, done, its steps never restarted.
	poll := w.journalConn()
	rows, err := poll.Query(ctx, `SELECT key_name, status, step, attempts, old_key_id, new_key_id FROM rotations
		WHERE started_at >= $1 ORDER BY key_name`, began.UnixNano())
	must(t, err)
	journaled := map[string]int{}
	for rows.Next() {
		var key, status, step, oldID, newID string
		var attempts int
		must(t, rows.Scan(&key, &status, &step, &attempts, &oldID, &newID))
		journaled[key]++
		if status != "done" || attempts != 0 || oldID != before[key] || newID != after[key] {
			t.Errorf("journal: rotation of %s: status %s, step %s, attempts %d, %s → %s; want done, 0 attempts, %s → %s",
				key, status, step, attempts, oldID, newID, before[key], after[key])
		}
	}
	must(t, rows.Err())
	for _, k := range w.Keys {
		if journaled[k.Name] != 1 {
			t.Errorf("journal: %d rotations of %s, want 1", journaled[k.Name], k.Name)
		}
	}
	var runs int
	must(t, poll.QueryRow(ctx, `SELECT count(*) FROM runs WHERE job = 'rotate' AND started_at >= $1`, began.UnixNano()).Scan(&runs))
	if runs != 1 {
		t.Errorf("journal: %d rotate runs since the forced one began, want 1", runs)
	}

	// The log names the recoveries.
	out := n.out.String()
	recovered := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "retrying on a new session") {
			recovered++
		}
	}
	if recovered == 0 {
		t.Errorf("no WARN line names a journal recovery after %d restarts:\n%s", restarts, tail(out, 8000))
	}
	w.check(ch, poll)
	t.Logf("postgres restarts: %d during the forced rotation (%d sessions ended), %d WARN recovery lines, run %s in %s",
		restarts, ended, recovered, res.run.Status, time.Since(began).Round(time.Millisecond))
}
