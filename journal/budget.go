package journal

import (
	"context"
	"fmt"
	"time"
)

// Amounts are quantities of a budget: tokens, USD and requests.
type Amounts struct {
	Tokens   int64
	USD      float64
	Requests int64
}

// IsZero reports whether every amount is zero.
func (a Amounts) IsZero() bool { return a.Tokens == 0 && a.USD == 0 && a.Requests == 0 }

// Add returns a + b.
func (a Amounts) Add(b Amounts) Amounts {
	return Amounts{a.Tokens + b.Tokens, a.USD + b.USD, a.Requests + b.Requests}
}

// Sub returns a - b.
func (a Amounts) Sub(b Amounts) Amounts {
	return Amounts{a.Tokens - b.Tokens, a.USD - b.USD, a.Requests - b.Requests}
}

// usdEpsilon is the USD below which an amount is zero (float rounding of
// sums and differences of prices).
const usdEpsilon = 1e-12

// floor returns a with every negative (or, for USD, negligible) amount set
// to zero.
func (a Amounts) floor() Amounts {
	if a.USD < usdEpsilon {
		a.USD = 0
	}
	return Amounts{max(a.Tokens, 0), a.USD, max(a.Requests, 0)}
}

// LeaseRequest is one call of a budget holder (a gateway instance) on a
// (subject, window) budget: report what it spent, give back what it will not
// use, and ask for more.
type LeaseRequest struct {
	// Owner names the holder: unique per process (host, pid, random).
	Owner string
	// Subject and Window name the budget and its usage counter.
	Subject, Window string
	// Limit is the budget; a zero amount is not limited (never granted).
	Limit Amounts
	// Held is what the owner believes its grant holds (0 when it has none):
	// when the journal has no grant of the owner although Held is not zero,
	// the grant expired and was charged in full (LeaseResult.Lost).
	Held Amounts
	// Spent is what the owner spent of its grant since its last call:
	// added to the counter and taken off the grant.
	Spent Amounts
	// Return is the unspent part of the grant given back to the budget.
	Return Amounts
	// Min and Want ask for more: every limited amount gets between its Min
	// and its Want (as much as the budget has) when the budget has at least
	// Min of each, and nothing at all otherwise.
	Min, Want Amounts
	// TTL is the grant's life from now: past it, unless renewed by a call,
	// the grant is charged to the counter and deleted by the next call on
	// the budget.
	TTL time.Duration
}

// LeaseResult is a budget after a LeaseBudget call.
type LeaseResult struct {
	// Held is what the owner's grant holds now.
	Held Amounts
	// Granted is what was added by this call (zero when Min did not fit).
	Granted Amounts
	// Used is the counter: spent, and charged for expired grants.
	Used Amounts
	// Others is what the other holders' grants hold.
	Others Amounts
	// Lost: the owner's grant had expired and was charged in full; Spent
	// was not added again (the charge covers it).
	Lost bool
	// Expires is the grant's expiry (zero when the owner holds nothing).
	Expires time.Time
}

// LeaseBudget settles and renews owner's grant on a (subject, window) budget
// in one transaction holding the budget's counter row locked (concurrent
// grants on one budget never add up past its limit): expired grants of the budget are charged to its
// counter and deleted; Spent is added to the counter and taken off the
// owner's grant, Return is taken off; then more is granted as Min and Want
// ask, provided counter + every grant stays within Limit for each limited
// amount. A grant left holding nothing is deleted.
func (db *DB) LeaseBudget(ctx context.Context, r LeaseRequest) (LeaseResult, error) {
	if r.Owner == "" || r.Subject == "" || r.Window == "" || r.TTL <= 0 {
		return LeaseResult{}, fmt.Errorf("lease budget: %w: owner, subject, window and a positive ttl are required", ErrInvalid)
	}
	var res LeaseResult
	// Every call on a budget first writes its counter row, which locks it
	// until commit: calls on one budget run one after the other. So the
	// transaction needs no serializable snapshot, only one taken after that
	// lock, per statement (READ COMMITTED on PostgreSQL, the isolation of
	// the migrations' transactions, taken after their lock for the same
	// reason); it then waits for the lock instead of failing and retrying
	// its whole transaction on every concurrent call. SQLite's writer is
	// single anyway.
	err := db.txWith(ctx, db.d.MigrationTxOptions, func(c conn) error {
		res = LeaseResult{}
		now := ns(db.now())
		// Writing the counter first takes its row lock: grants on one
		// budget queue behind each other.
		if _, err := c.exec(ctx, `INSERT INTO usage_counters (subject, period, tokens, usd, requests, updated_at) VALUES (?, ?, 0, 0, 0, ?)
			ON CONFLICT (subject, period) DO UPDATE SET updated_at = excluded.updated_at`, r.Subject, r.Window, now); err != nil {
			return err
		}
		if err := db.chargeExpired(ctx, c, r.Subject, r.Window, now); err != nil {
			return err
		}
		var held Amounts
		err := c.queryRow(ctx, `SELECT tokens, usd, requests FROM budget_grants WHERE subject = ? AND period = ? AND owner = ?`,
			r.Subject, r.Window, r.Owner).Scan(&held.Tokens, &held.USD, &held.Requests)
		switch {
		case isNoRows(err):
			res.Lost = !r.Held.IsZero()
		case err != nil:
			return err
		}
		spent := r.Spent.floor()
		if res.Lost {
			spent = Amounts{}
		}
		held = held.Sub(spent).Sub(r.Return.floor()).floor()
		if err := c.queryRow(ctx, `UPDATE usage_counters SET tokens = tokens + ?, usd = usd + ?, requests = requests + ?
			WHERE subject = ? AND period = ? RETURNING tokens, usd, requests`,
			spent.Tokens, spent.USD, spent.Requests, r.Subject, r.Window).Scan(&res.Used.Tokens, &res.Used.USD, &res.Used.Requests); err != nil {
			return err
		}
		if err := c.queryRow(ctx, `SELECT COALESCE(SUM(tokens), 0), COALESCE(SUM(usd), 0), COALESCE(SUM(requests), 0)
			FROM budget_grants WHERE subject = ? AND period = ? AND owner <> ?`, r.Subject, r.Window, r.Owner).
			Scan(&res.Others.Tokens, &res.Others.USD, &res.Others.Requests); err != nil {
			return err
		}
		res.Granted = grant(r, res.Used.Add(res.Others).Add(held))
		res.Held = held.Add(res.Granted)
		if res.Held.IsZero() {
			_, err := c.exec(ctx, `DELETE FROM budget_grants WHERE subject = ? AND period = ? AND owner = ?`, r.Subject, r.Window, r.Owner)
			return err
		}
		exp := now + int64(r.TTL)
		res.Expires = tm(exp)
		_, err = c.exec(ctx, `INSERT INTO budget_grants (subject, period, owner, tokens, usd, requests, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (subject, period, owner) DO UPDATE SET tokens = excluded.tokens, usd = excluded.usd,
				requests = excluded.requests, expires_at = excluded.expires_at`,
			r.Subject, r.Window, r.Owner, res.Held.Tokens, res.Held.USD, res.Held.Requests, exp)
		return err
	})
	if err != nil {
		return LeaseResult{}, fmt.Errorf("lease budget %s %s: %w", r.Subject, r.Window, err)
	}
	return res, nil
}

// grant is what r gets given what the budget already counts (counter plus
// every grant): per limited amount min(Want, room), provided the room is at
// least Min for every limited amount; nothing otherwise.
func grant(r LeaseRequest, counted Amounts) Amounts {
	room := r.Limit.Sub(counted)
	var g Amounts
	if r.Limit.Tokens > 0 {
		if room.Tokens < r.Min.Tokens {
			return Amounts{}
		}
		g.Tokens = max(min(r.Want.Tokens, room.Tokens), 0)
	}
	if r.Limit.USD > 0 {
		if room.USD+usdEpsilon < r.Min.USD {
			return Amounts{}
		}
		g.USD = max(min(r.Want.USD, room.USD), 0)
	}
	if r.Limit.Requests > 0 {
		if room.Requests < r.Min.Requests {
			return Amounts{}
		}
		g.Requests = max(min(r.Want.Requests, room.Requests), 0)
	}
	return g
}

// chargeExpired charges the budget's expired grants to its counter in full
// and deletes them: the holder may have spent all of a grant it did not
// renew (it crashed, or lost the journal), and the upstream billed that.
func (db *DB) chargeExpired(ctx context.Context, c conn, subject, window string, now int64) error {
	var exp Amounts
	var n int
	if err := c.queryRow(ctx, `SELECT COUNT(*), COALESCE(SUM(tokens), 0), COALESCE(SUM(usd), 0), COALESCE(SUM(requests), 0)
		FROM budget_grants WHERE subject = ? AND period = ? AND expires_at <= ?`, subject, window, now).
		Scan(&n, &exp.Tokens, &exp.USD, &exp.Requests); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if _, err := c.exec(ctx, `UPDATE usage_counters SET tokens = tokens + ?, usd = usd + ?, requests = requests + ?
		WHERE subject = ? AND period = ?`, exp.Tokens, exp.USD, exp.Requests, subject, window); err != nil {
		return err
	}
	_, err := c.exec(ctx, `DELETE FROM budget_grants WHERE subject = ? AND period = ? AND expires_at <= ?`, subject, window, now)
	return err
}

// BudgetGrant is one holder's grant on a budget (status, tests).
type BudgetGrant struct {
	Owner   string
	Held    Amounts
	Expires time.Time
}

// BudgetGrants returns the grants on a (subject, window) budget, expired ones
// included (they are charged by the next LeaseBudget on it).
func (db *DB) BudgetGrants(ctx context.Context, subject, window string) ([]BudgetGrant, error) {
	rows, err := db.conn().query(ctx, `SELECT owner, tokens, usd, requests, expires_at FROM budget_grants
		WHERE subject = ? AND period = ? ORDER BY owner`, subject, window)
	if err != nil {
		return nil, fmt.Errorf("budget grants %s %s: %w", subject, window, err)
	}
	defer rows.Close()
	var out []BudgetGrant
	for rows.Next() {
		var g BudgetGrant
		var exp int64
		if err := rows.Scan(&g.Owner, &g.Held.Tokens, &g.Held.USD, &g.Held.Requests, &exp); err != nil {
			return nil, fmt.Errorf("budget grants: %w", err)
		}
		g.Expires = tm(exp)
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("budget grants: %w", err)
	}
	return out, nil
}

// BudgetUsed returns a counter with its requests (zero when absent).
func (db *DB) BudgetUsed(ctx context.Context, subject, window string) (Amounts, error) {
	var a Amounts
	err := db.conn().queryRow(ctx, `SELECT tokens, usd, requests FROM usage_counters WHERE subject = ? AND period = ?`,
		subject, window).Scan(&a.Tokens, &a.USD, &a.Requests)
	if isNoRows(err) {
		return Amounts{}, nil
	}
	if err != nil {
		return Amounts{}, fmt.Errorf("budget used %s %s: %w", subject, window, err)
	}
	return a, nil
}
