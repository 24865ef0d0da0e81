package sandbox

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/mistral"
)

// keyJSON is the admin API's Key object.
type keyJSON struct {
	KeyID          string        `json:"key_id"`
	Key            *string       `json:"key"`
	Name           string        `json:"name"`
	HiddenKey      string        `json:"hidden_key"`
	CreatedAt      string        `json:"created_at"`
	ExpirationDate *mistral.Date `json:"expiration_date"`
	WorkspaceID    string        `json:"workspace_id"`
	WorkspaceName  string        `json:"workspace_name"`
	CreatedBy      string        `json:"created_by"`
	Product        string        `json:"product"`
	LastUsed       *mistral.Date `json:"last_used"`
	CanDelete      bool          `json:"can_delete"`
	Actions        keyActions    `json:"actions"`
}

type actionStatus struct {
	Status string  `json:"status"`
	Reason *string `json:"reason,omitempty"`
}

type keyActions struct {
	Rotate actionStatus `json:"rotate"`
	Delete struct {
		Status string  `json:"status"`
		Reason *string `json:"reason"`
	} `json:"delete"`
}

// toJSON renders rec. Caller holds mu.
func (r *keyRec) toJSON(withPlaintext bool) keyJSON {
	k := keyJSON{
		KeyID: r.ID, Name: r.Name, HiddenKey: r.HiddenKey,
		CreatedAt:      r.CreatedAt.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		ExpirationDate: r.Expiration, WorkspaceID: r.WorkspaceID, WorkspaceName: r.ws.Name,
		CreatedBy: r.CreatedBy, Product: r.Product, LastUsed: r.LastUsed, CanDelete: true,
	}
	if withPlaintext {
		p := r.Plaintext
		k.Key = &p
	}
	k.Actions.Rotate.Status = "unavailable"
	k.Actions.Delete.Status = "available"
	return k
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	limit, ok := queryInt(w, r, "limit", 100, 1, 1000)
	if !ok {
		return
	}
	offset, ok := queryInt(w, r, "offset", 0, 0, 1<<30)
	if !ok {
		return
	}
	name := strings.ToLower(r.URL.Query().Get("name"))
	s.mu.RLock()
	out := make([]keyJSON, 0, min(limit, len(s.keys)))
	skipped := 0
	for _, k := range s.keys {
		if k.Deleted || (name != "" && !strings.Contains(strings.ToLower(k.Name), name)) {
			continue
		}
		if skipped < offset {
			skipped++
			continue
		}
		if len(out) == limit {
			break
		}
		out = append(out, k.toJSON(false))
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

func (s *Server) createKey(w http.ResponseWriter, r *http.Request, _ *keyRec, pattern string) {
	var b createKeyBody
	if ds := decodeStrict(r, &b); ds != nil {
		writeValidation(w, ds...)
		return
	}
	var ds []detail
	if b.Name == nil {
		ds = append(ds, missing("name"))
	} else if strings.TrimSpace(*b.Name) == "" || len(*b.Name) > 256 {
		ds = append(ds, detail{Loc: []string{"body", "name"}, Msg: "String should have between 1 and 256 characters", Type: "string_length"})
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
		case d.Before(s.today()):
			ds = append(ds, detail{Loc: []string{"body", "expiration"}, Msg: "Expiration date must not be in the past", Type: "value_error"})
		default:
			exp = &d
		}
	}
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
	found := false
	for _, u := range s.users {
		found = found || u.ID == *b.UserID
	}
	if !found {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "User not found"})
		return
	}
	rec := &keyRec{ws: ws, KeyState: KeyState{Name: *b.Name, WorkspaceID: ws.UUID, CreatedBy: *b.UserID, CreatedAt: s.Now().UTC(), Expiration: exp}}
	s.insertKey(rec)
	s.event(EventCreate, rec, pattern, "")
	writeJSON(w, http.StatusOK, rec.toJSON(true))
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
	writeJSON(w, http.StatusOK, map[string]string{"detail": "API key deleted successfully"})
}

type workspaceJSON struct {
	UUID         string `json:"uuid"`
	Name         string `json:"name"`
	Description  string `json:"description"`
	MembersCount int    `json:"members_count"`
	IsDefault    bool   `json:"is_default"`
	IsArchived   bool   `json:"is_archived"`
	SpendLimit   struct {
		Value          *float64 `json:"value"`
		Currency       string   `json:"currency"`
		NoMonthlyLimit bool     `json:"no_monthly_limit"`
	} `json:"spend_limit"`
}

func (s *Server) workspaceJSON(ws *workspace) workspaceJSON {
	j := workspaceJSON{UUID: ws.UUID, Name: ws.Name, Description: ws.Description, MembersCount: len(s.users), IsDefault: ws.IsDefault, IsArchived: ws.IsArchived}
	j.SpendLimit.Currency = "USD"
	j.SpendLimit.NoMonthlyLimit = true
	return j
}

// pageParams reads the page (1-based, default 1) and page_size (1 to 100,
// default 25) query parameters of the paged admin listings; it writes the
// validation error and returns false when one is invalid.
func pageParams(w http.ResponseWriter, r *http.Request) (page, size int, ok bool) {
	if page, ok = queryInt(w, r, "page", 1, 1, 1<<30); !ok {
		return 0, 0, false
	}
	if size, ok = queryInt(w, r, "page_size", 25, 1, 100); !ok {
		return 0, 0, false
	}
	return page, size, true
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
	page, size, ok := pageParams(w, r)
	if !ok {
		return
	}
	search := strings.ToLower(r.URL.Query().Get("search"))
	archived := false
	if v := r.URL.Query().Get("is_archived"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeValidation(w, detail{Loc: []string{"query", "is_archived"}, Msg: "Input should be a valid boolean", Type: "bool_parsing"})
			return
		}
		archived = b
	}
	s.mu.RLock()
	var match []workspaceJSON
	for _, ws := range s.workspaces {
		if ws.IsArchived != archived || (search != "" && !strings.Contains(strings.ToLower(ws.Name), search)) {
			continue
		}
		match = append(match, s.workspaceJSON(ws))
	}
	s.mu.RUnlock()
	items := pageOf(match, page, size)
	writeJSON(w, http.StatusOK, map[string]any{"total": len(match), "items": items, "object": "list", "page": page, "page_size": size})
}

type createWorkspaceBody struct {
	Name        *string `json:"name"`
	AdminUserID string  `json:"admin_user_id"`
	Description string  `json:"description"`
}

func (s *Server) createWorkspace(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	var b createWorkspaceBody
	if ds := decodeStrict(r, &b); ds != nil {
		writeValidation(w, ds...)
		return
	}
	if b.Name == nil || strings.TrimSpace(*b.Name) == "" {
		writeValidation(w, missing("name"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.workspaces {
		if x.Name == *b.Name && !x.IsArchived {
			writeErrorObject(w, http.StatusConflict, "A workspace with this name already exists", "conflict", "")
			return
		}
	}
	ws := s.addWorkspace("", *b.Name, b.Description)
	writeJSON(w, http.StatusOK, s.workspaceJSON(ws))
}

func (s *Server) archiveWorkspace(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	id := r.PathValue("uuid")
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ws := range s.workspaces {
		if ws.UUID == id && !ws.IsArchived {
			ws.IsArchived = true
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Workspace not found"})
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	page, size, ok := pageParams(w, r)
	if !ok {
		return
	}
	email := strings.ToLower(r.URL.Query().Get("email"))
	type member struct {
		ID    string `json:"id"`
		Email string `json:"email"`
		Name  string `json:"name"`
		Role  string `json:"role"`
	}
	s.mu.RLock()
	var match []member
	for i, u := range s.users {
		if email != "" && !strings.Contains(strings.ToLower(u.Email), email) {
			continue
		}
		role := "member"
		if i == 0 {
			role = "admin"
		}
		match = append(match, member{u.ID, u.Email, u.Name, role})
	}
	s.mu.RUnlock()
	items := pageOf(match, page, size)
	writeJSON(w, http.StatusOK, map[string]any{"members": items, "invites": []any{}, "total": len(match), "page": page, "page_size": size})
}

// usageCategories are always present in a usage answer, even when empty.
var usageCategories = []string{"completion", "chat", "ocr", "fine_tuning", "audio", "connectors", "libraries_api"}

type usageValue struct {
	UsageType string `json:"usage_type"`
	Value     int64  `json:"value"`
}

type modelUsageJSON struct {
	Input  []usageValue `json:"input"`
	Output []usageValue `json:"output"`
}

type priceJSON struct {
	Model       string  `json:"model"`
	InputPrice  float64 `json:"input_price"`
	OutputPrice float64 `json:"output_price"`
	Unit        string  `json:"unit"`
}

func (s *Server) getUsage(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	q := r.URL.Query()
	var ds []detail
	month, err := strconv.Atoi(q.Get("month"))
	if q.Get("month") == "" {
		ds = append(ds, detail{Loc: []string{"query", "month"}, Msg: "Field required", Type: "missing"})
	} else if err != nil || month < 1 || month > 12 {
		ds = append(ds, detail{Loc: []string{"query", "month"}, Msg: "Input should be an integer between 1 and 12", Type: "value_error"})
	}
	year, err := strconv.Atoi(q.Get("year"))
	if q.Get("year") == "" {
		ds = append(ds, detail{Loc: []string{"query", "year"}, Msg: "Field required", Type: "missing"})
	} else if err != nil || year < 2000 || year > 9999 {
		ds = append(ds, detail{Loc: []string{"query", "year"}, Msg: "Input should be a valid year", Type: "value_error"})
	}
	if len(ds) > 0 {
		writeValidation(w, ds...)
		return
	}
	wsID := q.Get("workspace_id")
	key := time.Date(year, time.Month(month), 1, 0, 0, 0, 0, time.UTC)
	monthKey := key.Format("2006-01")
	cats := map[string]map[string]*modelUsageJSON{}
	for _, c := range usageCategories {
		cats[c] = map[string]*modelUsageJSON{}
	}
	s.mu.RLock()
	if wsID != "" {
		found := false
		for _, ws := range s.workspaces {
			found = found || ws.UUID == wsID
		}
		if !found {
			s.mu.RUnlock()
			writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Workspace not found"})
			return
		}
	}
	for k, t := range s.usage {
		if k.month != monthKey || (wsID != "" && k.ws != wsID) {
			continue
		}
		c := cats[k.category]
		if c == nil {
			c = map[string]*modelUsageJSON{}
			cats[k.category] = c
		}
		m := c[k.model]
		if m == nil {
			m = &modelUsageJSON{Input: []usageValue{{"prompt_tokens", 0}}, Output: []usageValue{{"completion_tokens", 0}}}
			c[k.model] = m
		}
		m.Input[0].Value += t.prompt
		m.Output[0].Value += t.completion
	}
	prices := make([]priceJSON, 0, len(s.prices))
	for _, p := range s.prices {
		prices = append(prices, priceJSON{p.Model, p.InputPerMillion, p.OutputPerMillion, "per_million_tokens"})
	}
	s.mu.RUnlock()
	sort.Slice(prices, func(i, j int) bool { return prices[i].Model < prices[j].Model })
	out := map[string]any{
		"start_date":      key.Format(time.DateOnly),
		"end_date":        key.AddDate(0, 1, -1).Format(time.DateOnly),
		"currency":        "USD",
		"currency_symbol": "$",
		"prices":          prices,
	}
	for c, models := range cats {
		out[c] = map[string]any{"models": models}
	}
	writeJSON(w, http.StatusOK, out)
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
	return map[string]any{
		"limits": map[string]any{"completion": map[string]any{
			"monthly_limit_reached": !s.noLimit && used >= s.spendLimit,
			"no_monthly_limit":      s.noLimit,
			"usage":                 used,
			"usage_limit":           limit,
			"max_usage_limit":       100000,
		}},
		"currency": "USD",
	}
}

func (s *Server) getSpendLimit(w http.ResponseWriter, _ *http.Request, _ *keyRec, _ string) {
	writeJSON(w, http.StatusOK, s.spendLimitJSON())
}

func (s *Server) setSpendLimit(w http.ResponseWriter, r *http.Request, _ *keyRec, _ string) {
	var b struct {
		Amount         *float64 `json:"amount"`
		NoMonthlyLimit bool     `json:"no_monthly_limit"`
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
