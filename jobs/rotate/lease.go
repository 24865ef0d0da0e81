package rotate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LeaseName is the journal lease a process holds while it runs rotations:
// two processes sharing a journal never resume the same rotation (the
// journal's unique index already keeps them from beginning two of one key).
const LeaseName = "rotate"

// lockJournal takes the journal lease for this engine (re-entrant across the
// engine's concurrent runs), taking over one left by a dead process of this
// host. held is false when another live process holds it.
func (e *Engine) lockJournal(ctx context.Context) (held bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.leaseRefs > 0 {
		e.leaseRefs++
		return true, nil
	}
	j := e.d.Journal
	ok, err := j.AcquireLease(ctx, LeaseName, e.opts.Owner, e.opts.LeaseTTL)
	if err == nil && !ok {
		owner, _, has, herr := j.LeaseHolder(ctx, LeaseName)
		if herr == nil && has && e.deadOwner(owner) {
			e.log.Warn("taking over the rotation lease of a dead process", "lease_owner", owner)
			if err = j.ReleaseLease(ctx, LeaseName, owner); err == nil {
				ok, err = j.AcquireLease(ctx, LeaseName, e.opts.Owner, e.opts.LeaseTTL)
			}
		}
	}
	if err != nil {
		return false, fmt.Errorf("rotation lease: %w", err)
	}
	if !ok {
		e.log.Info("another process holds the rotation lease: nothing to do")
		return false, nil
	}
	e.leaseRefs = 1
	return true, nil
}

// unlockJournal releases the lease when the engine's last run ends.
func (e *Engine) unlockJournal() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.leaseRefs--
	if e.leaseRefs > 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.d.Journal.ReleaseLease(ctx, LeaseName, e.opts.Owner); err != nil {
		e.log.Warn("release the rotation lease", "err", err)
	}
}

// renewLease renews the lease every third of its TTL until ctx ends; if the
// lease was lost (another process took it after it expired), or renewals have
// failed for two thirds of the TTL (it may expire before the next one, and
// another process could then resume the same rotations), it stops the run.
func (e *Engine) renewLease(ctx context.Context, stop context.CancelFunc, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(e.opts.LeaseTTL / 3)
	defer tick.Stop()
	renewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ok, err := e.d.Journal.RenewLease(ctx, LeaseName, e.opts.Owner, e.opts.LeaseTTL)
		switch {
		case err == nil && !ok:
			e.log.Error("rotation lease lost: stopping this run; its rotations stay journaled")
			stop()
			return
		case err == nil:
			renewed = time.Now()
		case ctx.Err() != nil:
			return
		case time.Since(renewed) >= e.opts.LeaseTTL*2/3:
			e.log.Error("rotation lease not renewed in time: stopping this run; its rotations stay journaled", "err", err)
			stop()
			return
		default:
			e.log.Warn("renew the rotation lease", "err", err)
		}
	}
}

// deadOwner reports whether a lease owner "mrbacd:HOST:PID:..." is a process
// of this host that no longer exists.
func (e *Engine) deadOwner(owner string) bool {
	parts := strings.Split(owner, ":")
	if len(parts) < 4 || parts[0] != "mrbacd" || parts[1] != e.host {
		return false
	}
	pid, err := strconv.Atoi(parts[2])
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// claim marks t's key as worked on by this engine; false (busy) when another
// run of the engine has it.
func (e *Engine) claim(t *task) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.active[t.rep.Key] {
		t.rep.Outcome = OutcomeBusy
		t.rep.Reason = "another run of this process is rotating this key"
		return false
	}
	e.active[t.rep.Key] = true
	t.claimed = true
	return true
}

func (e *Engine) unclaim(t *task) {
	if !t.claimed {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.active, t.rep.Key)
	t.claimed = false
}
