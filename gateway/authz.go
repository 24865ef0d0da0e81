package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"
	"unsafe"
)

// role is a compiled Role.
type role struct {
	name     string
	all      bool
	exact    map[string]struct{}
	prefixes []string
	Role
}

func compileRole(name string, r Role) *role {
	c := &role{name: name, exact: map[string]struct{}{}, Role: r}
	for _, p := range r.Models {
		switch {
		case p == "*":
			c.all = true
		case strings.HasSuffix(p, "*"):
			c.prefixes = append(c.prefixes, strings.TrimSuffix(p, "*"))
		default:
			c.exact[p] = struct{}{}
		}
	}
	return c
}

// allows reports whether the role may use model (same rules as config.MatchModel).
func (r *role) allows(model string) bool {
	if r.all {
		return true
	}
	if _, ok := r.exact[model]; ok {
		return true
	}
	for _, p := range r.prefixes {
		if strings.HasPrefix(model, p) {
			return true
		}
	}
	return false
}

// principal is one client with everything its requests need.
type principal struct {
	name      string
	workspace string
	hash      [32]byte
	role      *role
	ledger    *ledger
	keys      *keyCache
	// queue hands settled usage to the write-behind (nil without a journal).
	queue func(settled)
}

// denial is the outcome of an authorization decision.
type denial uint8

const (
	allowed denial = iota
	denyUnknownToken
	denyModel
	denyMaxTokens
)

// authorizer maps token hashes to principals.
type authorizer struct {
	byHash map[[32]byte]*principal
}

// lookup finds the principal of a bearer token. The map is keyed by the
// token's SHA-256 (timing of the lookup reveals nothing usable about the
// token), and the match is confirmed with a constant-time compare.
func (a *authorizer) lookup(token string) *principal {
	if token == "" {
		return nil
	}
	h := sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
	p := a.byHash[h]
	if p == nil || subtle.ConstantTimeCompare(p.hash[:], h[:]) != 1 {
		return nil
	}
	return p
}

// authorize is the whole authorization decision: token → principal → role
// check of the model and of max_tokens (see check). It allocates nothing.
func (a *authorizer) authorize(token, model string, maxTokens int64) (*principal, denial) {
	p := a.lookup(token)
	if p == nil {
		return nil, denyUnknownToken
	}
	return p, p.check(model, maxTokens)
}

// check is the role part of the decision: the model must match the role's
// patterns, and maxTokens (the request's max_tokens, or the role's maximum
// when the request has none; negative when not applicable, as for
// embeddings) must not exceed max_tokens_per_request. It allocates nothing.
func (p *principal) check(model string, maxTokens int64) denial {
	if !p.role.allows(model) {
		return denyModel
	}
	if maxTokens > 0 && p.role.MaxTokensPerRequest > 0 && maxTokens > int64(p.role.MaxTokensPerRequest) {
		return denyMaxTokens
	}
	return allowed
}

// bearer extracts the token of an "Authorization: Bearer TOKEN" header.
func bearer(h string) string {
	const prefix = "bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return ""
	}
	return strings.TrimSpace(h[len(prefix):])
}
