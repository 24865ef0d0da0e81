package invariants

import (
	"strings"
	"testing"

	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// CheckNotRotatedTwice replays the platform's ordered event log and asserts
// that no key was rotated twice: for each managed key, never two live keys
// of one name (a rotation's key created twice over), never live keys of more
// than two names (the current key and one rotation's: two rotations
// overlapping), and no key of a rotation created once a later rotation of
// the same key had created its own. It returns the rotations seen (distinct
// names of keys mrbacd created).
func (w *World) CheckNotRotatedTwice(t testing.TB) (rotations int) {
	t.Helper()
	type keyState struct {
		live  map[string]int // live keys by name
		order []string       // rotation names in order of first create
	}
	states := map[string]*keyState{}
	names := map[string]string{} // key id -> name
	for _, pk := range w.Sandbox.Keys() {
		names[pk.ID] = pk.Name
	}
	for _, ev := range w.Sandbox.Events() {
		if ev.Kind != sandbox.EventCreate && ev.Kind != sandbox.EventDelete {
			continue
		}
		name := names[ev.KeyID]
		mk := w.ManagedOf(name)
		if mk == nil {
			continue
		}
		st := states[mk.Name]
		if st == nil {
			st = &keyState{live: map[string]int{}}
			states[mk.Name] = st
		}
		if ev.Kind == sandbox.EventDelete {
			if st.live[name]--; st.live[name] <= 0 {
				delete(st.live, name)
			}
			continue
		}
		st.live[name]++
		if st.live[name] > 1 {
			t.Errorf("rotated twice: %s: two live keys named %s at event %d%s", mk.Name, name, ev.Seq, w.explain(ev.KeyID))
		}
		if len(st.live) > 2 {
			t.Errorf("overlap: %s: live keys of %d names at once at event %d: %v%s", mk.Name, len(st.live), ev.Seq, st.live, w.explain(ev.KeyID))
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
			t.Errorf("rotated twice: %s: rotation %s created a key at event %d after rotation %s began%s",
				mk.Name, name, ev.Seq, st.order[len(st.order)-1], w.explain(ev.KeyID))
		}
	}
	return rotations
}
