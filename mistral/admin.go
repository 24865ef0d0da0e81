package mistral

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// Key is an API key as the admin API describes it.
type Key struct {
	KeyID string `json:"key_id"`
	// Key holds the plaintext, only in the answer to CreateKey.
	Key            Secret     `json:"key"`
	Name           string     `json:"name"`
	HiddenKey      string     `json:"hidden_key"`
	CreatedAt      time.Time  `json:"created_at"`
	ExpirationDate *Date      `json:"expiration_date"`
	WorkspaceID    string     `json:"workspace_id"`
	WorkspaceName  string     `json:"workspace_name"`
	CreatedBy      string     `json:"created_by"`
	Product        string     `json:"product"`
	LastUsed       *Date      `json:"last_used"`
	CanDelete      bool       `json:"can_delete"`
	Actions        KeyActions `json:"actions"`
}

// KeyActions says whether the platform allows rotating or deleting a key.
type KeyActions struct {
	Rotate *ActionStatus `json:"rotate,omitempty"`
	Delete *ActionStatus `json:"delete,omitempty"`
}

// ActionStatus is one entry of KeyActions.
type ActionStatus struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// UnmarshalJSON tolerates zone-less created_at and a non-string created_by.
func (k *Key) UnmarshalJSON(b []byte) error {
	type plain Key
	var aux struct {
		*plain
		CreatedAt flexTime   `json:"created_at"`
		CreatedBy flexString `json:"created_by"`
	}
	aux.plain = (*plain)(k)
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	k.CreatedAt = time.Time(aux.CreatedAt)
	k.CreatedBy = string(aux.CreatedBy)
	return nil
}

// Expired reports whether the key is past its expiration date on day
// today. A key is valid through the end of its expiration date.
func (k Key) Expired(today Date) bool {
	return k.ExpirationDate != nil && today.After(*k.ExpirationDate)
}

// ListKeysOptions select a page of keys.
type ListKeysOptions struct {
	// Name filters by name (the server may match substrings).
	Name string
	// Limit is the page size (server default when 0); Offset the first row.
	Limit, Offset int
}

type keyList struct {
	Keys []Key `json:"keys"`
}

// ListKeys returns one page of keys.
func (c *Client) ListKeys(ctx context.Context, opts ListKeysOptions) ([]Key, error) {
	q := url.Values{}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Offset > 0 {
		q.Set("offset", strconv.Itoa(opts.Offset))
	}
	if opts.Name != "" {
		q.Set("name", opts.Name)
	}
	var out keyList
	if err := c.do(ctx, call{method: "GET", path: "/v1/admin/api-keys", query: q, admin: true}, &out); err != nil {
		return nil, err
	}
	return out.Keys, nil
}

// ListPageSize is the page size of the ListAll* helpers.
const ListPageSize = 100

// maxPages bounds the ListAll* helpers against a server that never ends.
const maxPages = 10000

// ListAllKeys returns every key, page by page. With a name, it returns only
// keys whose name is exactly name (the server's filter may match more).
// It is not a snapshot: a key created or deleted while paging can shift
// the offsets; keys seen twice are returned once.
func (c *Client) ListAllKeys(ctx context.Context, name string) ([]Key, error) {
	var all []Key
	seen := map[string]bool{}
	for page := 0; page < maxPages; page++ {
		keys, err := c.ListKeys(ctx, ListKeysOptions{Name: name, Limit: ListPageSize, Offset: page * ListPageSize})
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if seen[k.KeyID] || (name != "" && k.Name != name) {
				continue
			}
			seen[k.KeyID] = true
			all = append(all, k)
		}
		if len(keys) < ListPageSize {
			return all, nil
		}
	}
	return nil, fmt.Errorf("mistral: list keys: more than %d pages", maxPages)
}

// CreateKeyRequest is the body of POST /v1/admin/api-keys.
type CreateKeyRequest struct {
	Name string `json:"name"`
	// Expiration is the last day the key is valid; nil for none.
	Expiration    *Date  `json:"expiration"`
	WorkspaceUUID string `json:"workspace_uuid"`
	UserID        string `json:"user_id"`
}

// CreateKey creates a key; the returned Key.Key holds the plaintext, shown
// only this once.
//
// Retries: like every call, CreateKey is retried on 429, 5xx, timeouts and
// dropped connections, although a request that timed out or got a 5xx may
// have created the key. That is deliberate: the rotation engine gives each
// new key a deterministic name and looks for it by name (ListAllKeys)
// before creating and after a failure, so a duplicate is found and
// deleted, while giving up on a transient error would stall the rotation.
// Callers that cannot tolerate a duplicate set Options.MaxRetries < 0.
func (c *Client) CreateKey(ctx context.Context, req CreateKeyRequest) (Key, error) {
	if req.Name == "" || req.WorkspaceUUID == "" || req.UserID == "" {
		return Key{}, errors.New("mistral: create key: name, workspace_uuid and user_id are required")
	}
	var k Key
	if err := c.do(ctx, call{method: "POST", path: "/v1/admin/api-keys", admin: true, body: req}, &k); err != nil {
		return Key{}, err
	}
	if k.Key.IsZero() {
		// The key exists but its plaintext is lost: the caller deletes it by KeyID.
		return k, fmt.Errorf("mistral: create key %q: answer has no plaintext key (key_id %s)", req.Name, k.KeyID)
	}
	return k, nil
}

// DeleteKey deletes a key. A key that does not exist gives an error
// matching ErrNotFound, which callers deleting a key treat as done (a
// retried delete whose first attempt succeeded ends that way).
func (c *Client) DeleteKey(ctx context.Context, keyID string) error {
	if keyID == "" {
		return errors.New("mistral: delete key: empty key id")
	}
	return c.do(ctx, call{method: "DELETE", path: "/v1/admin/api-keys/" + url.PathEscape(keyID), admin: true}, nil)
}

// Workspace is a workspace of the organization.
type Workspace struct {
	UUID         string               `json:"uuid"`
	Name         string               `json:"name"`
	Description  string               `json:"description"`
	MembersCount int                  `json:"members_count"`
	IsDefault    bool                 `json:"is_default"`
	IsArchived   bool                 `json:"is_archived"`
	SpendLimit   *WorkspaceSpendLimit `json:"spend_limit"`
}

// WorkspaceSpendLimit is a workspace's informational spend limit.
type WorkspaceSpendLimit struct {
	Value          *float64 `json:"value"`
	Currency       string   `json:"currency"`
	NoMonthlyLimit bool     `json:"no_monthly_limit"`
}

// WorkspacePage is one page of workspaces.
type WorkspacePage struct {
	Total    int         `json:"total"`
	Items    []Workspace `json:"items"`
	Object   string      `json:"object"`
	Page     int         `json:"page"`
	PageSize int         `json:"page_size"`
}

// ListWorkspacesOptions select a page of workspaces.
type ListWorkspacesOptions struct {
	Page, PageSize int // 1-based page; server defaults when 0
	Search         string
	IsArchived     *bool
}

// pageQuery is the query of a paged admin listing: page (1-based) and
// page_size, each left to the server's default when 0.
func pageQuery(page, size int) url.Values {
	q := url.Values{}
	if page > 0 {
		q.Set("page", strconv.Itoa(page))
	}
	if size > 0 {
		q.Set("page_size", strconv.Itoa(size))
	}
	return q
}

// ListWorkspaces returns one page of workspaces.
func (c *Client) ListWorkspaces(ctx context.Context, opts ListWorkspacesOptions) (WorkspacePage, error) {
	q := pageQuery(opts.Page, opts.PageSize)
	if opts.Search != "" {
		q.Set("search", opts.Search)
	}
	if opts.IsArchived != nil {
		q.Set("is_archived", strconv.FormatBool(*opts.IsArchived))
	}
	var out WorkspacePage
	err := c.do(ctx, call{method: "GET", path: "/v1/admin/workspaces", query: q, admin: true}, &out)
	return out, err
}

// ListAllWorkspaces returns every workspace that is not archived.
func (c *Client) ListAllWorkspaces(ctx context.Context) ([]Workspace, error) {
	var all []Workspace
	for page := 1; page <= maxPages; page++ {
		p, err := c.ListWorkspaces(ctx, ListWorkspacesOptions{Page: page, PageSize: ListPageSize})
		if err != nil {
			return nil, err
		}
		all = append(all, p.Items...)
		if len(p.Items) < ListPageSize || (p.Total > 0 && len(all) >= p.Total) {
			return all, nil
		}
	}
	return nil, fmt.Errorf("mistral: list workspaces: more than %d pages", maxPages)
}

// CreateWorkspaceRequest is the body of POST /v1/admin/workspaces.
type CreateWorkspaceRequest struct {
	Name        string `json:"name"`
	AdminUserID string `json:"admin_user_id,omitempty"`
	Description string `json:"description,omitempty"`
}

// CreateWorkspace creates a workspace.
func (c *Client) CreateWorkspace(ctx context.Context, req CreateWorkspaceRequest) (Workspace, error) {
	var w Workspace
	err := c.do(ctx, call{method: "POST", path: "/v1/admin/workspaces", admin: true, body: req}, &w)
	return w, err
}

// ArchiveWorkspace archives a workspace (DELETE answers 204).
func (c *Client) ArchiveWorkspace(ctx context.Context, uuid string) error {
	if uuid == "" {
		return errors.New("mistral: archive workspace: empty uuid")
	}
	return c.do(ctx, call{method: "DELETE", path: "/v1/admin/workspaces/" + url.PathEscape(uuid), admin: true}, nil)
}

// User is a member of the organization.
type User struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
	Role  string `json:"role,omitempty"`
}

// Invite is a pending invitation.
type Invite struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Role  string `json:"role,omitempty"`
}

// UserPage is one page of members and invites.
type UserPage struct {
	Members  []User   `json:"members"`
	Invites  []Invite `json:"invites"`
	Total    int      `json:"total"`
	Page     int      `json:"page"`
	PageSize int      `json:"page_size"`
}

// ListUsersOptions select a page of users.
type ListUsersOptions struct {
	Page, PageSize int
	Email          string
}

// ListUsers returns one page of members.
func (c *Client) ListUsers(ctx context.Context, opts ListUsersOptions) (UserPage, error) {
	q := pageQuery(opts.Page, opts.PageSize)
	if opts.Email != "" {
		q.Set("email", opts.Email)
	}
	var out UserPage
	err := c.do(ctx, call{method: "GET", path: "/v1/admin/users", query: q, admin: true}, &out)
	return out, err
}

// SpendLimit is the organization's spend limit per category.
type SpendLimit struct {
	Limits   map[string]SpendLimitEntry `json:"limits"`
	Currency string                     `json:"currency"`
}

// SpendLimitEntry is the limit of one category ("completion").
type SpendLimitEntry struct {
	MonthlyLimitReached bool     `json:"monthly_limit_reached"`
	NoMonthlyLimit      bool     `json:"no_monthly_limit"`
	Usage               float64  `json:"usage"`
	UsageLimit          *float64 `json:"usage_limit"`
}

// SpendLimit reads the organization's spend limit.
func (c *Client) SpendLimit(ctx context.Context) (SpendLimit, error) {
	var out SpendLimit
	err := c.do(ctx, call{method: "GET", path: "/v1/admin/spend-limit", admin: true}, &out)
	return out, err
}

// SetSpendLimit sets the organization's monthly spend limit.
func (c *Client) SetSpendLimit(ctx context.Context, amount float64, noMonthlyLimit bool) error {
	if amount < 0 {
		return errors.New("mistral: set spend limit: negative amount")
	}
	body := struct {
		Amount         float64 `json:"amount"`
		NoMonthlyLimit bool    `json:"no_monthly_limit"`
	}{amount, noMonthlyLimit}
	return c.do(ctx, call{method: "POST", path: "/v1/admin/spend-limit", admin: true, body: body}, nil)
}

// RateLimit is the organization's rate limits.
type RateLimit struct {
	RequestsPerSecond   float64                     `json:"requests_per_second"`
	TokensLimitsByModel map[string]ModelTokenLimits `json:"tokens_limits_by_model"`
}

// ModelTokenLimits are the token limits of one model.
type ModelTokenLimits struct {
	TokensPerMinute int64 `json:"tokens_per_minute"`
	TokensPerMonth  int64 `json:"tokens_per_month"`
}

// RateLimit reads the organization's rate limits.
func (c *Client) RateLimit(ctx context.Context) (RateLimit, error) {
	var out RateLimit
	err := c.do(ctx, call{method: "GET", path: "/v1/admin/rate-limit", admin: true}, &out)
	return out, err
}
