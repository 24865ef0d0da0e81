package journal

import (
	"context"
	"fmt"
	"unicode/utf8"
)

// UsageKey names one gateway counter: a subject (client, role, workspace) and
// a window (e.g. "day:2026-11-27", "hour:2026-11-27T13").
type UsageKey struct {
	Subject string
	Window  string
}

// UsageTotal is a counter's sums.
type UsageTotal struct {
	Tokens int64
	USD    float64
}

// AddUsage adds tokens and usd to the (subject, window) counter, creating it.
func (db *DB) AddUsage(ctx context.Context, subject, window string, tokens int64, usd float64) error {
	if subject == "" || window == "" {
		return fmt.Errorf("add usage: %w: subject and window are required", ErrInvalid)
	}
	_, err := db.execWrite(ctx, `INSERT INTO usage_counters (subject, period, tokens, usd, updated_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (subject, period) DO UPDATE SET tokens = usage_counters.tokens + excluded.tokens,
			usd = usage_counters.usd + excluded.usd, updated_at = excluded.updated_at`,
		subject, window, tokens, usd, ns(db.now()))
	if err != nil {
		return fmt.Errorf("add usage %s %s: %w", subject, window, err)
	}
	return nil
}

// Usage returns a counter's sums (zero when absent).
func (db *DB) Usage(ctx context.Context, subject, window string) (tokens int64, usd float64, err error) {
	err = db.conn().queryRow(ctx, `SELECT tokens, usd FROM usage_counters WHERE subject = ? AND period = ?`,
		subject, window).Scan(&tokens, &usd)
	if isNoRows(err) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("usage %s %s: %w", subject, window, err)
	}
	return tokens, usd, nil
}

// LoadUsage returns every counter whose window starts with windowPrefix ("" for
// all): what a gateway loads at start.
func (db *DB) LoadUsage(ctx context.Context, windowPrefix string) (map[UsageKey]UsageTotal, error) {
	// substr keeps the match exact and case-sensitive on SQLite and PostgreSQL alike.
	rows, err := db.conn().query(ctx, `SELECT subject, period, tokens, usd FROM usage_counters WHERE substr(period, 1, ?) = ?`,
		utf8.RuneCountInString(windowPrefix), windowPrefix)
	if err != nil {
		return nil, fmt.Errorf("load usage: %w", err)
	}
	defer rows.Close()
	out := map[UsageKey]UsageTotal{}
	for rows.Next() {
		var k UsageKey
		var v UsageTotal
		if err := rows.Scan(&k.Subject, &k.Window, &v.Tokens, &v.USD); err != nil {
			return nil, fmt.Errorf("load usage: %w", err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load usage: %w", err)
	}
	return out, nil
}
