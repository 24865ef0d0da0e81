package journal

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrFenced: the write carried a fence (WithFence) whose lease is no
// longer held by that tenure: another instance took it over, or it expired.
// Nothing was written; the caller has lost leadership and must stop.
var ErrFenced = errors.New("journal: fenced: the lease this write depends on was lost")

// Fence identifies one tenure of a fenced lease: the lease's name, its
// owner and the token AcquireFenced returned.
type Fence struct {
	Name  string
	Owner string
	Token int64
}

type fenceKey struct{}

// WithFence returns a context whose journal writes are each checked against
// f in the same transaction: a write whose tenure is no longer current
// (another owner, a newer token, or expired) fails with ErrFenced and
// changes nothing. The daemon runs a leader's jobs under such a context, so
// a paused old leader cannot write after losing its lease.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceFrom returns the fence ctx carries, if any.
func FenceFrom(ctx context.Context) (Fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(Fence)
	return f, ok
}

// LeaseInfo is a fenced lease's current state.
type LeaseInfo struct {
	Owner   string
	Token   int64
	Expires time.Time
}

// checkFence refuses the transaction unless f's tenure is current: same
// owner and token, unexpired. The dialect's share lock holds the lease row
// so a takeover waits for this transaction to end.
func (db *DB) checkFence(ctx context.Context, c conn, f Fence) error {
	var owner string
	var token, exp int64
	err := c.queryRow(ctx, `SELECT owner, token, expires_at FROM fenced_leases WHERE name = ?`+db.d.ShareLock, f.Name).
		Scan(&owner, &token, &exp)
	if isNoRows(err) {
		return fmt.Errorf("%w: lease %q has never been held", ErrFenced, f.Name)
	}
	if err != nil {
		return fmt.Errorf("check fence %q: %w", f.Name, err)
	}
	if owner != f.Owner || token != f.Token || exp <= ns(db.now()) {
		return fmt.Errorf("%w: lease %q token %d is no longer current (now token %d)", ErrFenced, f.Name, f.Token, token)
	}
	return nil
}

// AcquireFenced takes the named fenced lease for owner until now+ttl and
// returns its tenure's token; ok is false when another owner holds it
// unexpired. An owner re-acquiring its own unexpired tenure extends it and
// keeps the token; every new tenure (a takeover, or the same owner after
// its lease expired) gets a token greater than every earlier one of that
// name, so writes fenced with an older token are refused. Atomic across
// processes sharing the journal.
func (db *DB) AcquireFenced(ctx context.Context, name, owner string, ttl time.Duration) (token int64, ok bool, err error) {
	if name == "" || owner == "" || ttl <= 0 {
		return 0, false, fmt.Errorf("acquire fenced lease %q: %w: name, owner and a positive ttl are required", name, ErrInvalid)
	}
	now := ns(db.now())
	err = db.conn().queryRow(ctx, `INSERT INTO fenced_leases (name, owner, token, expires_at) VALUES (?, ?, 1, ?)
		ON CONFLICT (name) DO UPDATE SET
			token = CASE WHEN fenced_leases.owner = excluded.owner AND fenced_leases.expires_at > ?
				THEN fenced_leases.token ELSE fenced_leases.token + 1 END,
			owner = excluded.owner, expires_at = excluded.expires_at
		WHERE fenced_leases.owner = excluded.owner OR fenced_leases.expires_at <= ?
		RETURNING token`, name, owner, now+int64(ttl), now, now).Scan(&token)
	if isNoRows(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("acquire fenced lease %q: %w", name, err)
	}
	return token, true, nil
}

// RenewFenced extends the tenure (owner, token) to now+ttl; false when it is
// no longer current (expired, taken over): the caller must stop.
func (db *DB) RenewFenced(ctx context.Context, name, owner string, token int64, ttl time.Duration) (bool, error) {
	if name == "" || owner == "" || ttl <= 0 {
		return false, fmt.Errorf("renew fenced lease %q: %w: name, owner and a positive ttl are required", name, ErrInvalid)
	}
	now := ns(db.now())
	res, err := db.conn().exec(ctx, `UPDATE fenced_leases SET expires_at = ? WHERE name = ? AND owner = ? AND token = ? AND expires_at > ?`,
		now+int64(ttl), name, owner, token, now)
	if err != nil {
		return false, fmt.Errorf("renew fenced lease %q: %w", name, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ReleaseFenced ends the tenure (owner, token) now, so a standby need not
// wait for it to expire; the token is kept so the next tenure's is greater.
// Releasing a tenure that is not current is a no-op.
func (db *DB) ReleaseFenced(ctx context.Context, name, owner string, token int64) error {
	if _, err := db.conn().exec(ctx, `UPDATE fenced_leases SET expires_at = 0 WHERE name = ? AND owner = ? AND token = ?`,
		name, owner, token); err != nil {
		return fmt.Errorf("release fenced lease %q: %w", name, err)
	}
	return nil
}

// FencedHolder returns the fenced lease's last tenure; ok is false when
// nobody holds it now (never held, released or expired: info then still
// carries the last owner and token).
func (db *DB) FencedHolder(ctx context.Context, name string) (info LeaseInfo, ok bool, err error) {
	var exp int64
	err = db.conn().queryRow(ctx, `SELECT owner, token, expires_at FROM fenced_leases WHERE name = ?`, name).
		Scan(&info.Owner, &info.Token, &exp)
	if isNoRows(err) {
		return LeaseInfo{}, false, nil
	}
	if err != nil {
		return LeaseInfo{}, false, fmt.Errorf("fenced lease %q: %w", name, err)
	}
	info.Expires = tm(exp)
	return info, exp > ns(db.now()), nil
}
