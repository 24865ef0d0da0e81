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

// Workspace is a workspace of the organization (WorkspaceOUT). The API has
// no archived flag on a workspace: ListWorkspacesOptions.IncludeArchived
// asks for archived ones too.
type Workspace struct {
	UUID         string `json:"uuid"`
	Name         string `json:"name"`
	Description  string `json:"description"`
	Icon         string `json:"icon"`
	MembersCount *int   `json:"members_count"`
	IsDefault    bool   `json:"is_default"`
	// SpendLimit is the workspace's monthly spend limit (nil when the
	// platform sends none).
	SpendLimit *WorkspaceSpendLimit `json:"spend_limit"`
}

// UnmarshalJSON reads a null description or icon as "".
func (w *Workspace) UnmarshalJSON(b []byte) error {
	type plain Workspace
	var aux struct {
		*plain
		Description flexString `json:"description"`
		Icon        flexString `json:"icon"`
	}
	aux.plain = (*plain)(w)
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	w.Description, w.Icon = string(aux.Description), string(aux.Icon)
	return nil
}

// WorkspaceSpendLimit is a workspace's monthly spend limit
// (WorkspaceSpendLimitOUT); every field may be null.
type WorkspaceSpendLimit struct {
	// Value is the limit in Currency; nil when none is set.
	Value    *float64 `json:"value"`
	Currency string   `json:"currency"`
	// NoMonthlyLimit is true when the workspace is explicitly unlimited.
	NoMonthlyLimit bool `json:"no_monthly_limit"`
}

// Limited reports whether the workspace has a monthly limit in force.
func (l *WorkspaceSpendLimit) Limited() bool {
	return l != nil && !l.NoMonthlyLimit && l.Value != nil
}

// WorkspacePage is one page of workspaces (WorkspacesOut). PageSize is
// the size the server applied, which may be smaller than asked.
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
	// IncludeArchived lists archived workspaces beside the others (the
	// is_archived query parameter).
	IncludeArchived bool
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
	if opts.IncludeArchived {
		q.Set("is_archived", "true")
	}
	var out WorkspacePage
	err := c.do(ctx, call{method: "GET", path: "/v1/admin/workspaces", query: q, admin: true}, &out)
	return out, err
}

// readPages calls page(n) for n = 1, 2, ... until a page comes back empty,
// so a listing served fewer items per page than asked is read whole.
func readPages(what string, page func(n int) (int, error)) error {
	for n := 1; n <= maxPages; n++ {
		got, err := page(n)
		if err != nil {
			return err
		}
		if got == 0 {
			return nil
		}
	}
	return fmt.Errorf("mistral: list %s: more than %d pages", what, maxPages)
}

// ListAllWorkspaces returns every workspace that is not archived.
func (c *Client) ListAllWorkspaces(ctx context.Context) ([]Workspace, error) {
	var all []Workspace
	seen := map[string]bool{}
	err := readPages("workspaces", func(n int) (int, error) {
		p, err := c.ListWorkspaces(ctx, ListWorkspacesOptions{Page: n, PageSize: ListPageSize})
		for _, w := range p.Items {
			if !seen[w.UUID] {
				seen[w.UUID] = true
				all = append(all, w)
			}
		}
		return len(p.Items), err
	})
	if err != nil {
		return nil, err
	}
	return all, nil
}

// CreateWorkspaceRequest is the body of POST /v1/admin/workspaces
// (AdminWorkspaceIn); Name and AdminUserID are required.
type CreateWorkspaceRequest struct {
	Name             string `json:"name"`
	AdminUserID      string `json:"admin_user_id"`
	Description      string `json:"description,omitempty"`
	Icon             string `json:"icon,omitempty"`
	AddAllOrgMembers bool   `json:"add_all_org_members,omitempty"`
}

// CreatedWorkspace is the answer to CreateWorkspace (WorkspaceEnrichedOUT):
// the workspace and the caller's roles in it.
type CreatedWorkspace struct {
	Workspace
	RawRoles []string `json:"raw_roles"`
	RawRole  string   `json:"raw_role"`
}

// UnmarshalJSON decodes the embedded Workspace and the role fields.
func (w *CreatedWorkspace) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &w.Workspace); err != nil {
		return err
	}
	var roles struct {
		RawRoles []string `json:"raw_roles"`
		RawRole  string   `json:"raw_role"`
	}
	if err := json.Unmarshal(b, &roles); err != nil {
		return err
	}
	w.RawRoles, w.RawRole = roles.RawRoles, roles.RawRole
	return nil
}

// CreateWorkspace creates a workspace administered by req.AdminUserID.
func (c *Client) CreateWorkspace(ctx context.Context, req CreateWorkspaceRequest) (CreatedWorkspace, error) {
	if req.Name == "" || req.AdminUserID == "" {
		return CreatedWorkspace{}, errors.New("mistral: create workspace: name and admin_user_id are required")
	}
	var w CreatedWorkspace
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

// User is a member of the organization (AdminOrganizationMemberOUT).
type User struct {
	UUID  string `json:"uuid"`
	Email string `json:"email"`
	Name  string `json:"name"`
	// RawRoles are the member's organization roles ("A" admin, "M" member,
	// "B" billing, or a role uuid); RawRole is the deprecated single role.
	RawRoles  []string  `json:"raw_roles"`
	RawRole   string    `json:"raw_role"`
	CreatedAt time.Time `json:"created_at"`
}

// UnmarshalJSON tolerates null name and email and a zone-less created_at.
func (u *User) UnmarshalJSON(b []byte) error {
	type plain User
	var aux struct {
		*plain
		Name      flexString `json:"name"`
		Email     flexString `json:"email"`
		CreatedAt flexTime   `json:"created_at"`
	}
	aux.plain = (*plain)(u)
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	u.Name, u.Email, u.CreatedAt = string(aux.Name), string(aux.Email), time.Time(aux.CreatedAt)
	return nil
}

// Invite is a pending invitation (OrganizationInviteOUT).
type Invite struct {
	UUID           string    `json:"uuid"`
	Email          string    `json:"email"`
	RawRoles       []string  `json:"raw_roles"`
	RawRole        string    `json:"raw_role"`
	Expired        bool      `json:"expired"`
	CreatedAt      time.Time `json:"created_at"`
	WorkspaceUUIDs []string  `json:"workspace_uuids"`
}

// UserPage is one page of members and invites (OrganizationAdminUsersOUT).
type UserPage struct {
	Members []User   `json:"members"`
	Invites []Invite `json:"invites"`
	// Total, Page and PageSize may be null (read as 0).
	Total    int `json:"total"`
	Page     int `json:"page"`
	PageSize int `json:"page_size"`
}

// ListUsersOptions select a page of users.
type ListUsersOptions struct {
	Page, PageSize int
	Email          string
}

// ListUsers returns one page of members and invites.
func (c *Client) ListUsers(ctx context.Context, opts ListUsersOptions) (UserPage, error) {
	q := pageQuery(opts.Page, opts.PageSize)
	if opts.Email != "" {
		q.Set("email", opts.Email)
	}
	var out UserPage
	err := c.do(ctx, call{method: "GET", path: "/v1/admin/users", query: q, admin: true}, &out)
	return out, err
}

// ListAllUsers returns every member, reading pages until one holds no
// member and no invite.
func (c *Client) ListAllUsers(ctx context.Context) ([]User, error) {
	var all []User
	seen := map[string]bool{}
	err := readPages("users", func(n int) (int, error) {
		p, err := c.ListUsers(ctx, ListUsersOptions{Page: n, PageSize: ListPageSize})
		for _, u := range p.Members {
			if !seen[u.UUID] {
				seen[u.UUID] = true
				all = append(all, u)
			}
		}
		return len(p.Members) + len(p.Invites), err
	})
	if err != nil {
		return nil, err
	}
	return all, nil
}

// SpendLimit is the organization's limits (LimitsOUT).
type SpendLimit struct {
	Limits SpendLimits `json:"limits"`
}

// SpendLimits is LimitsOUT's "limits" object (LimitsContext).
type SpendLimits struct {
	Completion         SpendLimitEntry `json:"completion"`
	Currency           string          `json:"currency"`
	LastPaymentFailure bool            `json:"last_payment_failure"`
	// LastPaymentFailureProtection is nil when the platform sends null.
	LastPaymentFailureProtection *bool `json:"last_payment_failure_protection"`
}

// SpendLimitEntry is the limit of one category (UsageLimits); usage fields
// the platform sends as null read as zero, a null UsageLimit as nil.
type SpendLimitEntry struct {
	MonthlyLimitReached bool     `json:"monthly_limit_reached"`
	NoMonthlyLimit      bool     `json:"no_monthly_limit"`
	Usage               float64  `json:"usage"`
	VibeUsage           float64  `json:"vibe_usage"`
	TotalUsage          float64  `json:"total_usage"`
	UsageLimit          *float64 `json:"usage_limit"`
}

// Categories returns the limits by category ("completion", the only one
// the API defines).
func (s SpendLimit) Categories() map[string]SpendLimitEntry {
	return map[string]SpendLimitEntry{"completion": s.Limits.Completion}
}

// SpendLimit reads the organization's spend limit.
func (c *Client) SpendLimit(ctx context.Context) (SpendLimit, error) {
	var out SpendLimit
	err := c.do(ctx, call{method: "GET", path: "/v1/admin/spend-limit", admin: true}, &out)
	return out, err
}

// SetSpendLimit sets the organization's monthly spend limit, a whole
// amount in the organization's currency (NewUsageLimitIN).
func (c *Client) SetSpendLimit(ctx context.Context, amount int64, noMonthlyLimit bool) error {
	if amount < 0 {
		return errors.New("mistral: set spend limit: negative amount")
	}
	body := struct {
		Amount         int64 `json:"amount"`
		NoMonthlyLimit bool  `json:"no_monthly_limit"`
	}{amount, noMonthlyLimit}
	return c.do(ctx, call{method: "POST", path: "/v1/admin/spend-limit", admin: true, body: body}, nil)
}

// RateLimit is the organization's rate limits (RateLimitsOUT).
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
