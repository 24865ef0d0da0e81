package rotate

import (
	"fmt"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/secrets"
)

// Actions a plan item or a dry run reports.
const (
	ActionNone      = "none"      // not due
	ActionRotate    = "rotate"    // due (or forced): rotate
	ActionBootstrap = "bootstrap" // no record in the store: create and publish
	ActionResume    = "resume"    // a rotation is in flight: resume it
)

// Sources of a key's age.
const (
	AgeFromStore    = "store"
	AgeFromPlatform = "platform"
	AgeUnknown      = "unknown"
)

// Current is what the store and the platform say about a managed key before a
// rotation: the record, the old key, and its age.
type Current struct {
	// Exists is false when the store holds no record (bootstrap).
	Exists  bool
	Version secrets.Version
	// KeyID is the platform id of the key in the store ("" if unknown).
	KeyID string
	// Adopted is true when the record was not written by mrbacd.
	Adopted bool
	// CreatedAt is the current key's creation time; zero if unknown.
	CreatedAt time.Time
	// AgeSource says where CreatedAt came from.
	AgeSource string
	// ExpiresAt is when the current key stops working: the end of the
	// platform's expiration_date for it (an organization's key-expiration
	// policy may have set or shortened it). Zero when it has none or the
	// platform does not list it.
	ExpiresAt time.Time
	// ExpiryUnknown says why ExpiresAt could not be read ("" when it was).
	ExpiryUnknown string
	// Note explains a limitation (e.g. the old key could not be identified).
	Note string
}

// Schedule is when a key is due: rotate_every after its creation, or
// earlier when it expires first, so that its rotation ends a day before
// the key stops working.
type Schedule struct {
	// Every is rotate_every (DefaultRotateEvery when 0).
	Every time.Duration
	// Lead is how long before the key's expiry its rotation must begin:
	// ExpiryMargin plus the propagation wait and the bound on the
	// rotation's own steps (see Engine.Schedule).
	Lead time.Duration
}

// ExpiryMargin is how long before a key's expiry its rotation must have
// ended.
const ExpiryMargin = 24 * time.Hour

// Due is the due decision for one key.
type Due struct {
	Due    bool
	Action string
	Reason string
	// DueAt is when the key becomes due (zero when unknown or bootstrap).
	DueAt time.Time
	// EarlyForExpiry is true when DueAt is before created_at + rotate_every
	// because the key expires first (ExpiresAt - Schedule.Lead).
	EarlyForExpiry bool
	Age            time.Duration
}

// Decide computes whether a key is due at now under s.
func Decide(now time.Time, s Schedule, cur Current, force bool) Due {
	every := s.Every
	if every <= 0 {
		every = DefaultRotateEvery
	}
	if !cur.Exists {
		return Due{Due: true, Action: ActionBootstrap, Reason: "no record in the store: bootstrap (create, verify, publish; nothing to revoke)"}
	}
	if cur.CreatedAt.IsZero() {
		r := "age of the current key unknown (no created_at in the record or on the platform): due"
		if force {
			r = "forced; " + r
		}
		return Due{Due: true, Action: ActionRotate, Reason: r}
	}
	age := now.Sub(cur.CreatedAt)
	d := Due{Age: age, DueAt: cur.CreatedAt.Add(every)}
	expiry := ""
	if !cur.ExpiresAt.IsZero() {
		if early := cur.ExpiresAt.Add(-s.Lead); early.Before(d.DueAt) {
			d.DueAt, d.EarlyForExpiry = early, true
			expiry = fmt.Sprintf("the key expires %s (its expiration_date, set by the key-expiration policy), too soon to wait for rotate_every %s: due %s before expiry so its rotation ends a day before",
				cur.ExpiresAt.UTC().Format(time.RFC3339), days(every), days(s.Lead))
		}
	}
	switch {
	case d.EarlyForExpiry && !now.Before(d.DueAt):
		d.Due, d.Action = true, ActionRotate
		d.Reason = fmt.Sprintf("due %s (age %s from %s created_at): %s", d.DueAt.UTC().Format(time.RFC3339), days(age), cur.AgeSource, expiry)
	case age >= every:
		d.Due, d.Action = true, ActionRotate
		d.Reason = fmt.Sprintf("age %s (from %s created_at) reached rotate_every %s", days(age), cur.AgeSource, days(every))
	case force:
		d.Due, d.Action = true, ActionRotate
		d.Reason = fmt.Sprintf("forced (age %s of rotate_every %s)", days(age), days(every))
	default:
		d.Action = ActionNone
		d.Reason = fmt.Sprintf("not due: age %s (from %s created_at) < rotate_every %s; due %s",
			days(age), cur.AgeSource, days(every), d.DueAt.UTC().Format(time.RFC3339))
		if expiry != "" {
			d.Reason += "; " + expiry
		}
	}
	if cur.Adopted && d.Due {
		d.Reason += "; adopting a key mrbacd did not create"
	}
	return d
}

// ExpiresAt returns when k stops working: the end of its expiration_date
// (UTC), zero when it has none.
func ExpiresAt(k mistral.Key) time.Time {
	if k.ExpirationDate == nil || k.ExpirationDate.IsZero() {
		return time.Time{}
	}
	return k.ExpirationDate.AddDays(1).In(time.UTC)
}

// WithExpiry sets cur.ExpiresAt from the platform's listing of cur.KeyID.
func WithExpiry(cur Current, keys []mistral.Key) Current {
	if cur.KeyID == "" {
		return cur
	}
	for _, k := range keys {
		if k.KeyID == cur.KeyID {
			cur.ExpiresAt = ExpiresAt(k)
		}
	}
	return cur
}

// days renders a duration in days (with hours below two days).
func days(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < 48*time.Hour {
		return d.Round(time.Second).String()
	}
	return fmt.Sprintf("%.1fd", d.Hours()/24)
}

// ReadCurrent builds Current from a store read (found false: no record) and,
// when the record lacks what is needed, from the platform's keys (keys may be
// nil if not yet listed: needKeys then says a listing is required).
func ReadCurrent(v secrets.Versioned, found bool, spec KeySpec, wsID string, keys []mistral.Key) (cur Current, needKeys bool) {
	if !found {
		return Current{AgeSource: AgeUnknown}, false
	}
	cur = Current{Exists: true, Version: v.Version, KeyID: v.KeyID, Adopted: v.RotationID == "",
		CreatedAt: v.CreatedAt, AgeSource: AgeFromStore}
	if !cur.CreatedAt.IsZero() && cur.KeyID != "" {
		return cur, false
	}
	if keys == nil {
		return cur, true
	}
	cur.AgeSource = AgeUnknown
	if cur.KeyID == "" {
		var matches []mistral.Key
		for _, k := range keys {
			if (wsID == "" || k.WorkspaceID == "" || k.WorkspaceID == wsID) && hiddenMatches(k.HiddenKey, v.APIKey) {
				matches = append(matches, k)
			}
		}
		switch len(matches) {
		case 1:
			cur.KeyID = matches[0].KeyID
		case 0:
			cur.Note = "the record has no key_id and no platform key matches its hidden form: the old key will not be revoked"
		default:
			cur.Note = fmt.Sprintf("the record has no key_id and %d platform keys match its hidden form: the old key will not be revoked", len(matches))
		}
	}
	if !v.CreatedAt.IsZero() {
		cur.AgeSource = AgeFromStore
		return cur, false
	}
	for _, k := range keys {
		if cur.KeyID != "" && k.KeyID == cur.KeyID && !k.CreatedAt.IsZero() {
			cur.CreatedAt, cur.AgeSource = k.CreatedAt, AgeFromPlatform
		}
	}
	return cur, false
}

// hiddenMatches reports whether the platform's hidden form of a key
// ("ABCD...WXYZ") fits plaintext. Both ends must be non-empty.
func hiddenMatches(hidden, plaintext string) bool {
	if hidden == "" || plaintext == "" {
		return false
	}
	for _, sep := range []string{"...", "…", "*"} {
		i := strings.Index(hidden, sep)
		if i < 0 {
			continue
		}
		pre, suf := hidden[:i], strings.TrimLeft(hidden[i:], sep+"*.")
		return pre != "" && suf != "" && len(plaintext) >= len(pre)+len(suf) &&
			strings.HasPrefix(plaintext, pre) && strings.HasSuffix(plaintext, suf)
	}
	return false
}
