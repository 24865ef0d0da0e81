package gateway

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// Subject and window names in the journal.
func usageSubject(client string) string { return subjectPrefix + client }

// subjectPrefix marks the gateway's per-client counters in the journal.
const subjectPrefix = "gateway-client:"

func dayWindow(day int64) string {
	return "day:" + time.Unix(day*86400, 0).UTC().Format("2006-01-02")
}

func hourWindow(hour int64) string {
	return "hour:" + time.Unix(hour*3600, 0).UTC().Format("2006-01-02T15")
}

type usageKey struct {
	subject, window string
}

type usageDelta struct {
	tokens int64
	usd    float64
}

// writeBehind batches settled usage in memory and flushes it to the store.
type writeBehind struct {
	store UsageStore

	mu      sync.Mutex
	pending map[usageKey]usageDelta
	// names caches the window names of the last settled day and hour.
	names struct {
		day, hour int64
		dw, hw    string
	}
	flushMu sync.Mutex // one flush (and sync) at a time
}

// add queues settled usage of one subject (usageSubject) for both its windows.
func (w *writeBehind) add(sub string, s settled) {
	if w == nil || w.store == nil || (s.tokens == 0 && s.usd == 0) {
		return
	}
	w.mu.Lock()
	if w.names.day != s.day || w.names.dw == "" {
		w.names.day, w.names.dw = s.day, dayWindow(s.day)
	}
	if w.names.hour != s.hour || w.names.hw == "" {
		w.names.hour, w.names.hw = s.hour, hourWindow(s.hour)
	}
	dk := usageKey{sub, w.names.dw}
	hk := usageKey{sub, w.names.hw}
	d := w.pending[dk]
	d.tokens += s.tokens
	d.usd += s.usd
	w.pending[dk] = d
	h := w.pending[hk]
	h.tokens += s.tokens
	h.usd += s.usd
	w.pending[hk] = h
	w.mu.Unlock()
}

// pendingOf returns what is queued but not yet written for one counter.
func (w *writeBehind) pendingOf(k usageKey) usageDelta {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending[k]
}

func (d usageDelta) isZero() bool { return d.tokens == 0 && d.usd == 0 }

// take removes and returns what is pending for one counter (the leaser
// reports it with its grant's renewal).
func (w *writeBehind) take(k usageKey) usageDelta {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.pending[k]
	delete(w.pending, k)
	return d
}

// putBack returns d to the pending counter k (a report that failed).
func (w *writeBehind) putBack(k usageKey, d usageDelta) {
	if d.isZero() {
		return
	}
	w.mu.Lock()
	p := w.pending[k]
	p.tokens += d.tokens
	p.usd += d.usd
	w.pending[k] = p
	w.mu.Unlock()
}

// flush writes what is pending, except the counters skip says a lease
// reports; failures stay pending for the next flush. The caller holds flushMu.
func (w *writeBehind) flush(ctx context.Context, skip func(usageKey) bool) error {
	if w == nil || w.store == nil {
		return nil
	}
	w.mu.Lock()
	batch := w.pending
	w.pending = make(map[usageKey]usageDelta, len(batch))
	for k, d := range batch {
		if skip(k) {
			w.pending[k] = d
			delete(batch, k)
		}
	}
	w.mu.Unlock()
	var firstErr error
	for k, d := range batch {
		if err := w.store.AddUsage(ctx, k.subject, k.window, d.tokens, d.usd); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			w.mu.Lock()
			p := w.pending[k]
			p.tokens += d.tokens
			p.usd += d.usd
			w.pending[k] = p
			w.mu.Unlock()
		}
	}
	return firstErr
}

func itoa(v int64) string   { return strconv.FormatInt(v, 10) }
func ftoa(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
