// Package sandbox is an in-memory Mistral platform: an http.Handler that
// speaks the paths, methods and JSON shapes of Mistral's published OpenAPI
// spec (admin API and inference; see package contract, whose checker the
// tests put in front of it), for tests, the demo and benchmarks.
//
// Created keys work on inference at once; deleted or expired keys get 401;
// last_used is set on use; chat and embedding calls add to the workspace's
// usage. The clock is settable, faults (a status N times, latency, 429 with
// or without Retry-After, a dropped connection) can be injected, and every
// create, delete, use and rejection is logged as an Event. Control routes
// live under /sandbox/ (never /v1/) and take the admin key, so a separate
// process (mrbacd sandbox) can be driven too; Control is a client for them.
//
// Behaviour worth knowing when writing tests against it:
//   - Admin routes take the admin key as "Authorization: Bearer" or
//     "x-api-key". A missing or wrong key gets 401 {"message","request_id"};
//     a valid inference key gets 403 with no body.
//   - Inference 401 bodies vary by route: GET /v1/models answers
//     {"message":"Unauthorized","request_id":...}, chat and embeddings
//     {"detail":"Unauthorized"}.
//   - A key is valid through its expiration date (UTC, sandbox clock);
//     last_used is the sandbox clock's UTC date of the last accepted call.
//   - GET /v1/admin/api-keys filters name by case-insensitive substring,
//     lists keys in creation order and omits deleted keys.
//   - Token counts are deterministic (CountTokens, ChatUsage); chat and
//     embeddings add to the key's workspace under usage category
//     "completion". Past a reached spend limit they answer 429 code 1300.
//   - Every 422 has the spec's shape, {"detail":[{"loc","msg","type"}]}.
//     The other shapes seen from the platform (wrapped in an error object,
//     or the list as the JSON text of "message") are for faults to inject.
//   - Paged listings serve at most Options.MaxPageSize items a page, and
//     an organization key policy (KeyPolicy) may shorten a new key's
//     expiration. Changes are recorded in the audit log
//     (GET /v1/admin/audit-logs), attributed to the admin key used, or
//     to the person for changes made in the "console" (SetKeyPolicy,
//     SetWorkspaceSpendLimit, RateLimitRule, DeleteKeyAs, AddKey).
package sandbox

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mrbacd/mrbacd/mistral"
)

// DefaultWorkspaceName is the workspace a seedless sandbox starts with.
const DefaultWorkspaceName = "Default Workspace"

// DefaultUserEmail is the user a sandbox without seeded users starts with.
const DefaultUserEmail = "admin@sandbox.local"

// DefaultMaxEvents bounds the event log (oldest events are dropped).
const DefaultMaxEvents = 200000

// Options configure a Server.
type Options struct {
	// AdminKey, else Seed.AdminKey, else a random key (see AdminKey()).
	AdminKey string
	// Seed is the initial state; it must be valid (ParseSeed validates).
	Seed *Seed
	// Now is the clock when not frozen by SetNow (default time.Now).
	Now func() time.Time
	// Logger gets one debug line per request (default: discard).
	Logger *slog.Logger
	// MaxEvents bounds the event log (default DefaultMaxEvents).
	MaxEvents int
	// MaxPageSize caps every paged listing (api-keys, workspaces, users,
	// audit-logs): a page holds at most this many items whatever is asked,
	// as a real server may (default DefaultMaxPageSize).
	MaxPageSize int
}

// DefaultMaxPageSize is the page-size cap when Options.MaxPageSize is 0.
const DefaultMaxPageSize = 100

// KeyPolicy is the organization's API-key expiration policy: with MaxDays
// > 0, a new key expires at most MaxDays days after its creation day, so a
// key asked without expiration, or with a later one, gets that day.
type KeyPolicy struct {
	MaxDays int `json:"max_days" yaml:"max_days"`
}

// Workspace is a sandbox workspace.
type Workspace struct {
	UUID        string
	Name        string
	Description string
	IsDefault   bool
	IsArchived  bool
	// SpendLimit is the workspace's monthly limit in USD (nil: none).
	SpendLimit *float64
}

// User is a sandbox member. Role is "A" (admin) or "M" (member).
type User struct {
	ID        string
	Email     string
	Name      string
	Role      string
	CreatedAt time.Time
}

// KeyState is a snapshot of one key, deleted ones included.
type KeyState struct {
	ID          string
	Name        string
	Plaintext   string
	HiddenKey   string
	WorkspaceID string
	CreatedBy   string
	Product     string
	CreatedAt   time.Time
	Expiration  *mistral.Date
	LastUsed    *mistral.Date
	Deleted     bool
	DeletedAt   time.Time
}

// Event kinds.
const (
	EventCreate = "create"
	EventDelete = "delete"
	EventUse    = "use"
	EventReject = "reject"
)

// Event is one entry of the ordered event log.
type Event struct {
	Seq       int64     `json:"seq"`
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	KeyID     string    `json:"key_id,omitempty"`
	KeyName   string    `json:"key_name,omitempty"`
	Workspace string    `json:"workspace,omitempty"`
	Route     string    `json:"route,omitempty"`
	// Reason says why a request was rejected (deleted, expired, unknown).
	Reason string `json:"reason,omitempty"`
}

type keyRec struct {
	KeyState
	ws *workspace
}

type workspace struct {
	Workspace
}

type usageKey struct {
	ws, month, category, model string
}

type tokens struct {
	prompt, completion int64
}

// Server is the sandbox. It is safe for concurrent use.
type Server struct {
	adminKey string
	log      *slog.Logger
	mux      *http.ServeMux
	stats    map[string]*atomic.Int64
	wallNow  func() time.Time
	frozen   atomic.Pointer[time.Time]
	reqSeq   atomic.Uint64
	idPrefix string

	// promptCache holds, per prompt_cache_key, the message contents of
	// the last chat request that gave it (see cachedTokens).
	promptCache sync.Map

	faultMu    sync.Mutex
	faults     []*Fault
	faultCount atomic.Int32

	mu         sync.RWMutex
	workspaces []*workspace
	users      []*User
	keys       []*keyRec
	keyByID    map[string]*keyRec
	keyByPlain map[string]*keyRec
	usage      map[usageKey]*tokens
	monthCost  map[string]float64
	prices     map[string]mistral.Price
	spendLimit int64
	noLimit    bool
	events     []Event
	seq        int64
	maxEvents  int
	maxPage    int
	keyPolicy  KeyPolicy
	adminKeys  []*adminKey
	audit      []mistral.AuditEvent
	orgUUID    string
}

// New returns a sandbox seeded from opts.Seed. It panics if the seed does
// not pass Seed.Validate (a programming error: ParseSeed validates).
func New(opts Options) *Server {
	s := &Server{
		log:        opts.Logger,
		wallNow:    opts.Now,
		keyByID:    map[string]*keyRec{},
		keyByPlain: map[string]*keyRec{},
		usage:      map[usageKey]*tokens{},
		monthCost:  map[string]float64{},
		prices:     map[string]mistral.Price{},
		spendLimit: 1000,
		noLimit:    true,
		maxEvents:  opts.MaxEvents,
		maxPage:    opts.MaxPageSize,
		idPrefix:   randomHex(4),
		orgUUID:    newUUID(),
	}
	if s.maxPage <= 0 {
		s.maxPage = DefaultMaxPageSize
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.wallNow == nil {
		s.wallNow = time.Now
	}
	if s.maxEvents <= 0 {
		s.maxEvents = DefaultMaxEvents
	}
	for _, p := range mistral.DefaultPrices() {
		s.prices[p.Model] = p
	}
	seed := opts.Seed
	if seed == nil {
		seed = &Seed{}
	}
	if err := seed.Validate(); err != nil {
		panic(fmt.Sprintf("sandbox.New: invalid seed: %v", err))
	}
	s.adminKey = opts.AdminKey
	if s.adminKey == "" {
		s.adminKey = seed.AdminKey
	}
	if s.adminKey == "" {
		s.adminKey = "sk-admin-" + randomAlnum(32)
	}
	s.adminKeys = []*adminKey{{ID: newUUID(), Name: DefaultAdminKeyName, Plaintext: s.adminKey}}
	s.applySeed(seed)
	s.routes()
	return s
}

func (s *Server) applySeed(seed *Seed) {
	if seed.Now != "" {
		t, _ := time.Parse(time.RFC3339, seed.Now)
		s.SetNow(t)
	}
	for _, w := range seed.Workspaces {
		ws := s.addWorkspace(w.UUID, w.Name, w.Description)
		if w.SpendLimit != nil {
			v := *w.SpendLimit
			ws.SpendLimit = &v
		}
	}
	if len(s.workspaces) == 0 {
		s.addWorkspace("", DefaultWorkspaceName, "The default workspace")
	}
	s.workspaces[0].IsDefault = true
	if seed.KeyPolicy != nil {
		s.keyPolicy = *seed.KeyPolicy
	}
	for _, u := range seed.Users {
		s.addUser(u.ID, u.Email, u.Name).Role = u.Role
	}
	if len(s.users) == 0 {
		s.addUser("", DefaultUserEmail, "Sandbox Admin")
	}
	now := s.Now()
	for _, k := range seed.Keys {
		ws := s.findWorkspace(k.Workspace)
		rec := &keyRec{ws: ws, KeyState: KeyState{
			ID: k.KeyID, Name: k.Name, Plaintext: k.Key, WorkspaceID: ws.UUID,
			CreatedBy: k.CreatedBy, Product: k.Product, CreatedAt: now,
		}}
		if rec.CreatedBy == "" {
			rec.CreatedBy = s.users[0].ID
		}
		if k.CreatedAt != "" {
			rec.CreatedAt, _ = parseSeedTime(k.CreatedAt)
		}
		if k.LastUsed != "" {
			d, _ := mistral.ParseDate(k.LastUsed)
			rec.LastUsed = &d
		}
		if k.ExpirationDate != "" {
			d, _ := mistral.ParseDate(k.ExpirationDate)
			rec.Expiration = &d
		}
		s.insertKey(rec)
	}
	for _, u := range seed.Usage {
		ws := s.findWorkspace(u.Workspace)
		s.addUsage(ws.UUID, u.Month, u.Category, u.Model, u.PromptTokens, u.CompletionTokens)
	}
	if seed.SpendLimit != nil {
		s.spendLimit = seed.SpendLimit.Amount
		s.noLimit = seed.SpendLimit.NoMonthlyLimit
	}
	for i, u := range s.users {
		if u.Role == "" {
			u.Role = "M"
			if i == 0 {
				u.Role = "A"
			}
		}
	}
}

// AdminKey returns the admin key the admin and control routes accept.
func (s *Server) AdminKey() string { return s.adminKey }

// SetNow freezes the clock at t (for last_used, expiry and created_at).
func (s *Server) SetNow(t time.Time) { s.frozen.Store(&t) }

// Advance moves a frozen clock by d (it freezes the clock first if needed).
func (s *Server) Advance(d time.Duration) { s.SetNow(s.Now().Add(d)) }

// Now returns the sandbox clock.
func (s *Server) Now() time.Time {
	if t := s.frozen.Load(); t != nil {
		return *t
	}
	return s.wallNow()
}

func (s *Server) today() mistral.Date { return mistral.DateOf(s.Now().UTC()) }

// AddWorkspace adds a workspace with a generated uuid.
func (s *Server) AddWorkspace(name string) Workspace {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addWorkspace("", name, "").Workspace
}

func (s *Server) addWorkspace(uuid, name, desc string) *workspace {
	if uuid == "" {
		uuid = newUUID()
	}
	w := &workspace{Workspace{UUID: uuid, Name: name, Description: desc}}
	s.workspaces = append(s.workspaces, w)
	return w
}

// Workspaces returns the workspaces, archived ones included.
func (s *Server) Workspaces() []Workspace {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Workspace, len(s.workspaces))
	for i, w := range s.workspaces {
		out[i] = w.Workspace
	}
	return out
}

// AddUser adds a member with a generated id.
func (s *Server) AddUser(email, name string) User {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *s.addUser("", email, name)
}

func (s *Server) addUser(id, email, name string) *User {
	if id == "" {
		id = newUUID()
	}
	role := "M"
	if len(s.users) == 0 {
		role = "A"
	}
	u := &User{ID: id, Email: email, Name: name, Role: role, CreatedAt: s.Now().UTC()}
	s.users = append(s.users, u)
	return u
}

// Users returns the members.
func (s *Server) Users() []User {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]User, len(s.users))
	for i, u := range s.users {
		out[i] = *u
	}
	return out
}

// findWorkspace resolves a uuid or name; "" is the first workspace. Caller holds mu.
func (s *Server) findWorkspace(ref string) *workspace {
	if ref == "" {
		return s.workspaces[0]
	}
	for _, w := range s.workspaces {
		if w.UUID == ref {
			return w
		}
	}
	for _, w := range s.workspaces {
		if w.Name == ref {
			return w
		}
	}
	return nil
}

// UsageRecord adds tokens to a workspace's month (AddUsage).
type UsageRecord struct {
	Workspace        string // uuid or name; "" for the first workspace
	Month            string // YYYY-MM; "" for the sandbox clock's month
	Category         string // default "completion"
	Model            string
	PromptTokens     int64
	CompletionTokens int64
}

// AddUsage adds tokens to a workspace's usage.
func (s *Server) AddUsage(u UsageRecord) error {
	if u.Month == "" {
		u.Month = s.Now().UTC().Format("2006-01")
	}
	if _, err := time.Parse("2006-01", u.Month); err != nil {
		return fmt.Errorf("sandbox: add usage: month %q: want YYYY-MM", u.Month)
	}
	if u.Model == "" || u.PromptTokens < 0 || u.CompletionTokens < 0 {
		return fmt.Errorf("sandbox: add usage: need a model and non-negative token counts")
	}
	if checkCategory(u.Category) == "" {
		return fmt.Errorf("sandbox: add usage: category %q: want one of %s", u.Category, strings.Join(usageCategoryNames(), ", "))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.findWorkspace(u.Workspace)
	if ws == nil {
		return fmt.Errorf("sandbox: add usage: unknown workspace %q", u.Workspace)
	}
	s.addUsage(ws.UUID, u.Month, u.Category, u.Model, u.PromptTokens, u.CompletionTokens)
	return nil
}

func (s *Server) addUsage(ws, month, category, model string, prompt, completion int64) {
	if category == "" {
		category = "completion"
	}
	k := usageKey{ws, month, category, model}
	t := s.usage[k]
	if t == nil {
		t = &tokens{}
		s.usage[k] = t
	}
	t.prompt += prompt
	t.completion += completion
	if p, ok := s.prices[model]; ok {
		s.monthCost[month] += p.Cost(prompt, completion)
	}
}

// WorkspaceUsage returns a workspace's tokens per model for a month (YYYY-MM).
func (s *Server) WorkspaceUsage(workspace, month string) map[string]mistral.ModelUsage {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]mistral.ModelUsage{}
	ws := s.findWorkspace(workspace)
	if ws == nil {
		return out
	}
	for k, t := range s.usage {
		if k.ws == ws.UUID && k.month == month {
			mu := out[k.model]
			mu.PromptTokens += t.prompt
			mu.CompletionTokens += t.completion
			out[k.model] = mu
		}
	}
	return out
}

// AddKey creates a key as POST /v1/admin/api-keys would (workspace by uuid
// or name, "" for the first), logging a create event.
func (s *Server) AddKey(name, workspace string, expiration *mistral.Date) (KeyState, error) {
	if strings.TrimSpace(name) == "" {
		return KeyState{}, fmt.Errorf("sandbox: add key: empty name")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.findWorkspace(workspace)
	if ws == nil {
		return KeyState{}, fmt.Errorf("sandbox: add key: unknown workspace %q", workspace)
	}
	rec := &keyRec{ws: ws, KeyState: KeyState{Name: name, WorkspaceID: ws.UUID, CreatedBy: s.users[0].ID, CreatedAt: s.Now().UTC(), Expiration: expiration}}
	s.insertKey(rec)
	s.event(EventCreate, rec, "", "")
	s.auditKey(s.humanLocked(), "api_key.create", rec)
	return rec.snapshot(), nil
}

// insertKey fills generated fields and indexes rec. Caller holds mu (or is New).
func (s *Server) insertKey(rec *keyRec) {
	if rec.ID == "" {
		rec.ID = newUUID()
	}
	if rec.Plaintext == "" {
		rec.Plaintext = randomAlnum(32)
	}
	if rec.Product == "" {
		rec.Product = "API"
	}
	rec.HiddenKey = hide(rec.Plaintext)
	s.keys = append(s.keys, rec)
	s.keyByID[rec.ID] = rec
	s.keyByPlain[rec.Plaintext] = rec
}

func (r *keyRec) snapshot() KeyState {
	ks := r.KeyState
	if r.Expiration != nil {
		d := *r.Expiration
		ks.Expiration = &d
	}
	if r.LastUsed != nil {
		d := *r.LastUsed
		ks.LastUsed = &d
	}
	return ks
}

// Keys returns a snapshot of every key, deleted ones included, in creation order.
func (s *Server) Keys() []KeyState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]KeyState, len(s.keys))
	for i, r := range s.keys {
		out[i] = r.snapshot()
	}
	return out
}

// Key returns the key with this id.
func (s *Server) Key(id string) (KeyState, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.keyByID[id]
	if !ok {
		return KeyState{}, false
	}
	return r.snapshot(), true
}

// Accepts reports whether inference would accept this plaintext key now.
func (s *Server) Accepts(plaintext string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.keyByPlain[plaintext]
	return ok && s.rejectReason(r) == ""
}

// rejectReason says why rec is refused ("" when usable). Caller holds mu.
func (s *Server) rejectReason(r *keyRec) string {
	switch {
	case r.Deleted:
		return "deleted"
	case r.Expiration != nil && s.today().After(*r.Expiration):
		return "expired"
	case r.ws.IsArchived:
		return "workspace archived"
	}
	return ""
}

// Events returns the event log in order.
func (s *Server) Events() []Event {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]Event(nil), s.events...)
}

// EventsSince returns the events with Seq > seq.
func (s *Server) EventsSince(seq int64) []Event {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i := sort.Search(len(s.events), func(i int) bool { return s.events[i].Seq > seq })
	return append([]Event(nil), s.events[i:]...)
}

// event appends to the log. Caller holds mu for writing.
func (s *Server) event(kind string, r *keyRec, route, reason string) {
	s.seq++
	e := Event{Seq: s.seq, Time: s.Now(), Kind: kind, Route: route, Reason: reason}
	if r != nil {
		e.KeyID, e.KeyName, e.Workspace = r.ID, r.Name, r.ws.Name
	}
	if len(s.events) >= s.maxEvents {
		n := copy(s.events, s.events[len(s.events)/2:])
		s.events = s.events[:n]
	}
	s.events = append(s.events, e)
}

// Stats returns the requests served per route pattern ("GET /v1/models").
func (s *Server) Stats() map[string]int64 {
	out := make(map[string]int64, len(s.stats))
	for k, v := range s.stats {
		if n := v.Load(); n > 0 {
			out[k] = n
		}
	}
	return out
}

// ResetStats zeroes the request counters.
func (s *Server) ResetStats() {
	for _, v := range s.stats {
		v.Store(0)
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) requestID() string {
	return fmt.Sprintf("%s%012x", s.idPrefix, s.reqSeq.Add(1))
}

// adminFor returns the admin key in Authorization: Bearer or x-api-key,
// nil when there is none.
func (s *Server) adminFor(r *http.Request) *adminKey {
	tok := bearer(r)
	if tok == "" {
		tok = r.Header.Get("x-api-key")
	}
	if tok == "" {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, k := range s.adminKeys {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(k.Plaintext)) == 1 {
			return k
		}
	}
	return nil
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randomAlnum(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox: crypto/rand failed:", err)
		os.Exit(1)
	}
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// hide renders a key as the admin API's hidden_key ("HQSx...Ug6Y").
func hide(p string) string {
	if len(p) < 8 {
		return "****"
	}
	return p[:4] + "..." + p[len(p)-4:]
}
