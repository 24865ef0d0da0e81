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
	// Note explains a limitation (e.g. the old key could not be identified).
	Note string
}

// Due is the due decision for one key.
type Due struct {
	Due    bool
	Action string
	Reason string
	// DueAt is when the key becomes due (zero when unknown or bootstrap).
	DueAt time.Time
	Age   time.Duration
}

// Decide computes whether a key is due at now.
func Decide(now time.Time, every time.Duration, cur Current, force bool) Due {
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
	switch {
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
	}
	if cur.Adopted && d.Due {
		d.Reason += "; adopting a key mrbacd did not create"
	}
	return d
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
