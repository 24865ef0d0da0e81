package testenv

import (
	"context"
	"testing"
	"time"
)

// pollEvery is how often Until and WaitFor check their condition.
const pollEvery = 5 * time.Millisecond

// Until checks cond every few milliseconds until it holds (true) or ctx
// ends (false). Tests wait on conditions with it, never on a fixed sleep;
// it may run in any goroutine.
func Until(ctx context.Context, cond func() bool) bool {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// WaitFor waits until cond holds, failing t when timeout passes first
// ("timed out after T waiting for what").
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if !Until(ctx, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}
