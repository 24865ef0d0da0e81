package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"
	"unsafe"
)

// modelSet is a compiled list of model patterns: an exact set, a prefix
// list and an allow-all flag.
type modelSet struct {
	all      bool
	exact    map[string]struct{}
	prefixes []string
}

func compileModels(patterns []string) modelSet {
	m := modelSet{exact: map[string]struct{}{}}
	for _, p := range patterns {
		switch {
		case p == "*":
			m.all = true
		case strings.HasSuffix(p, "*"):
			m.prefixes = append(m.prefixes, strings.TrimSuffix(p, "*"))
		default:
			m.exact[p] = struct{}{}
		}
	}
	return m
}

// allows reports whether model matches a pattern (same rules as
// config.MatchModel). It allocates nothing.
func (m *modelSet) allows(model string) bool {
	if m.all {
		return true
	}
	if _, ok := m.exact[model]; ok {
		return true
	}
	for _, p := range m.prefixes {
		if strings.HasPrefix(model, p) {
			return true
		}
	}
	return false
}

// role is a compiled Role.
type role struct {
	name   string
	models modelSet
	Role
}

func compileRole(name string, r Role) *role {
	return &role{name: name, models: compileModels(r.Models), Role: r}
}

// allows reports whether the role may use model.
func (r *role) allows(model string) bool { return r.models.allows(model) }

// workspace is a compiled Workspace with its shared rpm window. Every
// principal of the workspace points at the same one.
type workspace struct {
	name string
	// restricted is false when the workspace lists no models.
	restricted bool
	models     modelSet
	rpm        *rpmWindow
	Workspace
}

func compileWorkspace(name string, w Workspace, win *rpmWindow) *workspace {
	if win == nil {
		win = &rpmWindow{}
	}
	return &workspace{name: name, restricted: len(w.Models) > 0, models: compileModels(w.Models), rpm: win, Workspace: w}
}

// allows reports whether the workspace may use model (any model when it
// lists none).
func (w *workspace) allows(model string) bool {
	return w == nil || !w.restricted || w.models.allows(model)
}

// principal is one client with everything its requests need.
type principal struct {
	name      string
	workspace string
	hash      [32]byte
	role      *role
	ws        *workspace
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
	denyWorkspaceModel
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
// and workspace check of the model and of max_tokens (see check). It allocates nothing.
func (a *authorizer) authorize(token, model string, maxTokens int64) (*principal, denial) {
	p := a.lookup(token)
	if p == nil {
		return nil, denyUnknownToken
	}
	return p, p.check(model, maxTokens)
}

// check is the role and workspace part of the decision: the model must
// match the role's patterns and, when the workspace lists models, the
// workspace's too; and maxTokens (the request's max_tokens, or the role's maximum
// when the request has none; negative when not applicable, as for
// embeddings) must not exceed max_tokens_per_request. It allocates nothing.
func (p *principal) check(model string, maxTokens int64) denial {
	if !p.role.allows(model) {
		return denyModel
	}
	if !p.ws.allows(model) {
		return denyWorkspaceModel
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
