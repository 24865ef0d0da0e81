package journal

import (
	"context"
	"fmt"
	"time"
)

// AcquireLease takes the named lease for owner until now+ttl. It succeeds
// (true) when the lease is free, expired, or already held by owner (which
// extends it); it returns false when another owner holds it. Atomic across
// processes sharing the journal. Owners should be unique per process and
// purpose (e.g. "host:pid:random").
func (db *DB) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if name == "" || owner == "" || ttl <= 0 {
		return false, fmt.Errorf("acquire lease %q: %w: name, owner and a positive ttl are required", name, ErrInvalid)
	}
	now := db.now()
	res, err := db.execWrite(ctx, `INSERT INTO leases (name, owner, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
		WHERE leases.owner = excluded.owner OR leases.expires_at <= ?`,
		name, owner, ns(now.Add(ttl)), ns(now))
	if err != nil {
		return false, fmt.Errorf("acquire lease %q: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("acquire lease %q: %w", name, err)
	}
	return n == 1, nil
}

// RenewLease extends owner's unexpired lease to now+ttl. It returns false when
// owner no longer holds it (expired and possibly taken): the caller must stop
// the work the lease protects.
func (db *DB) RenewLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if name == "" || owner == "" || ttl <= 0 {
		return false, fmt.Errorf("renew lease %q: %w: name, owner and a positive ttl are required", name, ErrInvalid)
	}
	now := db.now()
	res, err := db.execWrite(ctx, `UPDATE leases SET expires_at = ? WHERE name = ? AND owner = ? AND expires_at > ?`,
		ns(now.Add(ttl)), name, owner, ns(now))
	if err != nil {
		return false, fmt.Errorf("renew lease %q: %w", name, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ReleaseLease gives owner's lease up; releasing a lease one does not hold is a no-op.
func (db *DB) ReleaseLease(ctx context.Context, name, owner string) error {
	if _, err := db.execWrite(ctx, `DELETE FROM leases WHERE name = ? AND owner = ?`, name, owner); err != nil {
		return fmt.Errorf("release lease %q: %w", name, err)
	}
	return nil
}

// LeaseHolder returns the lease's current owner and expiry; ok is false when
// nobody holds it (absent or expired).
func (db *DB) LeaseHolder(ctx context.Context, name string) (owner string, expires time.Time, ok bool, err error) {
	var exp int64
	err = db.conn().queryRow(ctx, `SELECT owner, expires_at FROM leases WHERE name = ? AND expires_at > ?`,
		name, ns(db.now())).Scan(&owner, &exp)
	if err != nil {
		if isNoRows(err) {
			return "", time.Time{}, false, nil
		}
		return "", time.Time{}, false, fmt.Errorf("lease %q: %w", name, err)
	}
	return owner, tm(exp), true, nil
}
