package sandbox

import (
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mrbacd/mrbacd/mistral"
)

// keyActions is APIKeyActions: no rotate endpoint exists, delete does.
type keyActions struct {
	Rotate map[string]any `json:"rotate"`
	Delete map[string]any `json:"delete"`
}

var defaultKeyActions = keyActions{
	Rotate: map[string]any{"status": "unavailable", "reason": nil},
	Delete: map[string]any{"status": "available"},
}

// keyJSON is APIKeyOUT, the answer to a create.
type keyJSON struct {
	KeyID          string        `json:"key_id"`
	Key            *string       `json:"key"`
	Name           *string       `json:"name"`
	HiddenKey      string        `json:"hidden_key"`
	CreatedAt      string        `json:"created_at"`
	ExpirationDate *mistral.Date `json:"expiration_date"`
	Actions        keyActions    `json:"actions"`
}

// keyExtendedJSON is APIKeyExtendedOUT, an entry of the key listing.
type keyExtendedJSON struct {
	keyJSON
	WorkspaceID   string        `json:"workspace_id"`
	WorkspaceName string        `json:"workspace_name"`
	CreatedBy     string        `json:"created_by"`
	Product       string        `json:"product"`
	LastUsed      *mistral.Date `json:"last_used"`
	CanDelete     bool          `json:"can_delete"`
}

// toJSON renders rec as APIKeyOUT. Caller holds mu.
func (r *keyRec) toJSON(withPlaintext bool) keyJSON {
	k := keyJSON{KeyID: r.ID, HiddenKey: r.HiddenKey, Actions: defaultKeyActions,
		CreatedAt: r.CreatedAt.UTC().Format("2006-01-02T15:04:05.000000Z07:00"), ExpirationDate: r.Expiration}
	if r.Name != "" {
		n := r.Name
		k.Name = &n
	}
	if withPlaintext {
		p := r.Plaintext
		k.Key = &p
	}
	return k
}

// extendedJSON renders rec as APIKeyExtendedOUT; created_by is the
// creator's email, as the platform shows it. Caller holds mu.
func (s *Server) extendedJSON(r *keyRec) keyExtendedJSON {
	by := r.CreatedBy
	for _, u := range s.users {
		if u.ID == r.CreatedBy {
			by = u.Email
		}
	}
	return keyExtendedJSON{keyJSON: r.toJSON(false), WorkspaceID: r.WorkspaceID, WorkspaceName: r.ws.Name,
		CreatedBy: by, Product: r.Product, LastUsed: r.LastUsed, CanDelete: true}
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	limit, ok := queryInt(w, r, "limit", 100, 0, 1<<30)
	if !ok {
		return
	}
	offset, ok := queryInt(w, r, "offset", 0, 0, 1<<30)
	if !ok {
		return
	}
	limit = min(limit, s.maxPage)
	name := strings.ToLower(r.URL.Query().Get("name"))
	s.mu.RLock()
	out := make([]keyExtendedJSON, 0, min(limit, len(s.keys)))
	skipped := 0
	for _, k := range s.keys {
		if k.Deleted || (name != "" && !strings.Contains(strings.ToLower(k.Name), name) && !strings.HasSuffix(strings.ToLower(k.Plaintext), name)) {
			continue
		}
		if skipped < offset {
			skipped++
			continue
		}
		if len(out) == limit {
			break
		}
		out = append(out, s.extendedJSON(k))
	}
	s.mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]any{"keys": out})
}

type createKeyBody struct {
	Name          *string `json:"name"`
	Expiration    *string `json:"expiration"`
	WorkspaceUUID *string `json:"workspace_uuid"`
	UserID        *string `json:"user_id"`
}

// check returns the 422 details of b and the expiration it asks for.
func (b createKeyBody) check(today mistral.Date) ([]detail, *mistral.Date) {
	var ds []detail
	if b.Name != nil && utf8.RuneCountInString(*b.Name) > mistral.MaxKeyNameLength {
		ds = append(ds, detail{Loc: []string{"body", "name"}, Msg: "String should have at most 255 characters", Type: "string_too_long"})
	}
	if b.WorkspaceUUID == nil {
		ds = append(ds, missing("workspace_uuid"))
	}
	if b.UserID == nil {
		ds = append(ds, missing("user_id"))
	}
	var exp *mistral.Date
	if b.Expiration != nil {
		d, err := mistral.ParseDate(*b.Expiration)
		switch {
		case err != nil || len(*b.Expiration) != len("2006-01-02"):
			ds = append(ds, detail{Loc: []string{"body", "expiration"}, Msg: "Input should be a valid date in the format YYYY-MM-DD", Type: "date_from_datetime_parsing"})
		case d.Before(today):
			ds = append(ds, detail{Loc: []string{"body", "expiration"}, Msg: "Expiration date must not be in the past", Type: "value_error"})
		default:
			exp = &d
		}
	}
	return ds, exp
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request, _ *keyRec, pattern string) {
	var b createKeyBody
	if ds := decodeStrict(r, &b); ds != nil {
		writeValidation(w, ds...)
		return
	}
	ds, exp := b.check(s.today())
	if len(ds) > 0 {
		writeValidation(w, ds...)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ws *workspace
	for _, x := range s.workspaces {
		if x.UUID == *b.WorkspaceUUID {
			ws = x
		}
	}
	if ws == nil || ws.IsArchived {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Workspace not found"})
		return
	}
	if s.userByID(*b.UserID) == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "User not found"})
		return
	}
	if p := s.keyPolicy; p.MaxDays > 0 {
		if last := s.today().AddDays(p.MaxDays); exp == nil || exp.After(last) {
			exp = &last
		}
	}
	name := ""
	if b.Name != nil {
		name = *b.Name
	}
	rec := &keyRec{ws: ws, KeyState: KeyState{Name: name, WorkspaceID: ws.UUID, CreatedBy: *b.UserID, CreatedAt: s.Now().UTC(), Expiration: exp}}
	s.insertKey(rec)
	s.event(EventCreate, rec, pattern, "")
	s.auditKey(actorOf(r), "api_key.create", rec)
	writeJSON(w, http.StatusOK, rec.toJSON(true))
}

// userByID returns the member with this id, nil when none. Caller holds mu.
func (s *Server) userByID(id string) *User {
	for _, u := range s.users {
		if u.ID == id {
			return u
		}
	}
	return nil
}

func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request, _ *keyRec, pattern string) {
	id := r.PathValue("key_id")
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.keyByID[id]
	if !ok || rec.Deleted {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "API key not found"})
		return
	}
	rec.Deleted = true
	rec.DeletedAt = s.Now().UTC()
	s.event(EventDelete, rec, pattern, "")
	s.auditKey(actorOf(r), "api_key.delete", rec)
	writeJSON(w, http.StatusOK, map[string]string{"detail": "API key deleted successfully"})
}

// workspaceJSON is WorkspaceOUT.
type workspaceJSON struct {
	UUID         string  `json:"uuid"`
	Name         string  `json:"name"`
	Description  *string `json:"description"`
	Icon         *string `json:"icon"`
	MembersCount int     `json:"members_count"`
	SpendLimit   struct {
		Value          *float64 `json:"value"`
		Currency       string   `json:"currency"`
		NoMonthlyLimit bool     `json:"no_monthly_limit"`
	} `json:"spend_limit"`
	IsDefault bool `json:"is_default"`
}

// workspaceJSON renders ws. Caller holds mu.
func (s *Server) workspaceJSON(ws *workspace) workspaceJSON {
	j := workspaceJSON{UUID: ws.UUID, Name: ws.Name, MembersCount: len(s.users), IsDefault: ws.IsDefault}
	desc := ws.Description
	j.Description = &desc
	j.SpendLimit.Currency = "USD"
	if ws.SpendLimit != nil {
		v := *ws.SpendLimit
		j.SpendLimit.Value = &v
	} else {
		j.SpendLimit.NoMonthlyLimit = true
	}
	return j
}

// pageParams reads the page (1-based, default 1) and page_size (default
// 25) query parameters of the paged admin listings, the size capped at the
// server's maximum; it writes the validation error and returns false when
// one is invalid.
func (s *Server) pageParams(w http.ResponseWriter, r *http.Request) (page, size int, ok bool) {
	if page, ok = queryInt(w, r, "page", 1, 1, 1<<30); !ok {
		return 0, 0, false
	}
	if size, ok = queryInt(w, r, "page_size", 25, 1, 1<<30); !ok {
		return 0, 0, false
	}
	return page, min(size, s.maxPage), true
}

// pageOf returns the given page of match, never nil (it encodes as []).
func pageOf[T any](match []T, page, size int) []T {
	start := min((page-1)*size, len(match))
	end := min(start+size, len(match))
	if items := match[start:end]; items != nil {
		return items
	}
	return []T{}
}

func (s *Server) listWorkspaces(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	page, size, ok := s.pageParams(w, r)
	if !ok {
		return
	}
	search := strings.ToLower(r.URL.Query().Get("search"))
	includeArchived := false
	if v := r.URL.Query().Get("is_archived"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeValidation(w, detail{Loc: []string{"query", "is_archived"}, Msg: "Input should be a valid boolean", Type: "bool_parsing"})
			return
		}
		includeArchived = b
	}
	s.mu.RLock()
	var match []workspaceJSON
	for _, ws := range s.workspaces {
		if (ws.IsArchived && !includeArchived) || (search != "" && !strings.Contains(strings.ToLower(ws.Name), search)) {
			continue
		}
		match = append(match, s.workspaceJSON(ws))
	}
	s.mu.RUnlock()
	items := pageOf(match, page, size)
	writeJSON(w, http.StatusOK, map[string]any{"total": len(match), "items": items, "object": "list", "page": page, "page_size": size})
}

type createWorkspaceBody struct {
	Name             *string `json:"name"`
	Description      string  `json:"description"`
	Icon             string  `json:"icon"`
	AddAllOrgMembers bool    `json:"add_all_org_members"`
	AdminUserID      *string `json:"admin_user_id"`
}

func (b createWorkspaceBody) check() []detail {
	var ds []detail
	tooLong := func(field string, n int) detail {
		return detail{Loc: []string{"body", field}, Msg: "String should have at most " + strconv.Itoa(n) + " characters", Type: "string_too_long"}
	}
	switch {
	case b.Name == nil:
		ds = append(ds, missing("name"))
	case strings.TrimSpace(*b.Name) == "":
		ds = append(ds, detail{Loc: []string{"body", "name"}, Msg: "String should have at least 1 character", Type: "string_too_short"})
	case utf8.RuneCountInString(*b.Name) > 255:
		ds = append(ds, tooLong("name", 255))
	}
	if utf8.RuneCountInString(b.Description) > 255 {
		ds = append(ds, tooLong("description", 255))
	}
	if utf8.RuneCountInString(b.Icon) > 2 {
		ds = append(ds, tooLong("icon", 2))
	}
	if b.AdminUserID == nil {
		ds = append(ds, missing("admin_user_id"))
	}
	return ds
}

func (s *Server) createWorkspace(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	var b createWorkspaceBody
	if ds := decodeStrict(r, &b); ds != nil {
		writeValidation(w, ds...)
		return
	}
	if ds := b.check(); len(ds) > 0 {
		writeValidation(w, ds...)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.userByID(*b.AdminUserID) == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "User not found"})
		return
	}
	for _, x := range s.workspaces {
		if x.Name == *b.Name && !x.IsArchived {
			writeErrorObject(w, http.StatusConflict, "A workspace with this name already exists", "conflict", "")
			return
		}
	}
	ws := s.addWorkspace("", *b.Name, b.Description)
	s.record(actorOf(r), "workspace.create", "WORKSPACE", map[string]string{"workspace_uuid": ws.UUID, "name": ws.Name}, nil, ws.UUID)
	out := struct {
		workspaceJSON
		RawRoles []string `json:"raw_roles"`
		RawRole  string   `json:"raw_role"`
	}{s.workspaceJSON(ws), []string{"A"}, "A"}
	icon := b.Icon
	out.Icon = &icon
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) archiveWorkspace(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	id := r.PathValue("uuid")
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ws := range s.workspaces {
		if ws.UUID == id && !ws.IsArchived {
			ws.IsArchived = true
			s.record(actorOf(r), "workspace.delete", "WORKSPACE", map[string]string{"workspace_uuid": ws.UUID, "name": ws.Name}, nil, ws.UUID)
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Workspace not found"})
}

// memberJSON is AdminOrganizationMemberOUT.
type memberJSON struct {
	UUID          string   `json:"uuid"`
	OidID         *string  `json:"oid_id"`
	Name          string   `json:"name"`
	Email         string   `json:"email"`
	IsSSOOutsider bool     `json:"is_sso_outsider"`
	Workspaces    []any    `json:"workspaces"`
	Subscriptions []any    `json:"subscriptions"`
	RawRoles      []string `json:"raw_roles"`
	RawRole       string   `json:"raw_role"`
	CreatedAt     string   `json:"created_at"`
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	page, size, ok := s.pageParams(w, r)
	if !ok {
		return
	}
	email := strings.ToLower(r.URL.Query().Get("email"))
	s.mu.RLock()
	var match []memberJSON
	for _, u := range s.users {
		if email != "" && !strings.Contains(strings.ToLower(u.Email), email) {
			continue
		}
		match = append(match, memberJSON{UUID: u.ID, Name: u.Name, Email: u.Email, Workspaces: []any{}, Subscriptions: []any{},
			RawRoles: []string{u.Role}, RawRole: u.Role, CreatedAt: u.CreatedAt.UTC().Format("2006-01-02T15:04:05.000000Z07:00")})
	}
	s.mu.RUnlock()
	items := pageOf(match, page, size)
	writeJSON(w, http.StatusOK, map[string]any{"members": items, "invites": []any{}, "total": len(match), "page": page, "page_size": size})
}

func (s *Server) spendLimitJSON() map[string]any {
	month := s.Now().UTC().Format("2006-01")
	s.mu.RLock()
	defer s.mu.RUnlock()
	used := s.monthCost[month]
	var limit any = s.spendLimit
	if s.noLimit {
		limit = nil
	}
	return map[string]any{"limits": map[string]any{
		"completion": map[string]any{
			"monthly_limit_reached": !s.noLimit && used >= float64(s.spendLimit),
			"no_monthly_limit":      s.noLimit,
			"usage":                 used,
			"vibe_usage":            0,
			"total_usage":           used,
			"usage_limit":           limit,
		},
		"currency":                        "USD",
		"last_payment_failure":            false,
		"last_payment_failure_protection": nil,
	}}
}

func (s *Server) getSpendLimit(w http.ResponseWriter, _ *http.Request, _ *keyRec, _ string) {
	writeJSON(w, http.StatusOK, s.spendLimitJSON())
}

func (s *Server) setSpendLimit(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	var b struct {
		Amount         *int64 `json:"amount"`
		NoMonthlyLimit bool   `json:"no_monthly_limit"`
	}
	if ds := decodeStrict(r, &b); ds != nil {
		writeValidation(w, ds...)
		return
	}
	if b.Amount == nil {
		writeValidation(w, missing("amount"))
		return
	}
	if *b.Amount < 0 || *b.Amount > 100000 {
		writeValidation(w, detail{Loc: []string{"body", "amount"}, Msg: "Input should be between 0 and 100000", Type: "value_error"})
		return
	}
	s.mu.Lock()
	s.spendLimit, s.noLimit = *b.Amount, b.NoMonthlyLimit
	s.record(actorOf(r), "billing.monthly_limit.updated", "MONTHLY_LIMIT", map[string]string{"organization_uuid": s.orgUUID},
		map[string]string{"amount": strconv.FormatInt(*b.Amount, 10), "no_monthly_limit": strconv.FormatBool(b.NoMonthlyLimit)}, "")
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, s.spendLimitJSON())
}

func (s *Server) getRateLimit(w http.ResponseWriter, _ *http.Request, _ *keyRec, _ string) {
	limits := map[string]any{}
	for _, m := range models {
		limits[m.ID] = map[string]int64{"tokens_per_minute": 2_000_000, "tokens_per_month": 10_000_000_000}
	}
	writeJSON(w, http.StatusOK, map[string]any{"requests_per_second": 6, "tokens_limits_by_model": limits})
}
