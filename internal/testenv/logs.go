package testenv

import (
	"bytes"
	"strings"
	"sync"
)

// LogBuffer is a goroutine-safe sink for the log lines (or any output) of a
// test's components, to scan afterwards for key material and expected
// messages. Its zero value is ready to use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Count reports how many times s occurs in what was written.
func (b *LogBuffer) Count(s string) int { return strings.Count(b.String(), s) }

// Contains reports whether s occurs in what was written.
func (b *LogBuffer) Contains(s string) bool { return strings.Contains(b.String(), s) }
