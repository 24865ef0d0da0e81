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

// Key is an API key as the admin API describes it (APIKeyExtendedOUT in
// listings, APIKeyOUT, without the workspace fields, when created).
type Key struct {
	KeyID string `json:"key_id"`
	// Key holds the plaintext, only in the answer to CreateKey.
	Key       Secret    `json:"key"`
	Name      string    `json:"name"`
	HiddenKey string    `json:"hidden_key"`
	CreatedAt time.Time `json:"created_at"`
	// ExpirationDate is the last day the key is valid (nil: no expiry). An
	// organization's key-expiration policy may set or shorten it, so the
	// answer to CreateKey, not the request, says when a new key expires.
	ExpirationDate *Date       `json:"expiration_date"`
	WorkspaceID    string      `json:"workspace_id"`
	WorkspaceName  string      `json:"workspace_name"`
	CreatedBy      string      `json:"created_by"`
	Product        string      `json:"product"`
	LastUsed       *Date       `json:"last_used"`
	CanDelete      *bool       `json:"can_delete"`
	Actions        *KeyActions `json:"actions"`
}

// KeyActions says whether the platform allows rotating or deleting a key;
// an absent action is unavailable.
type KeyActions struct {
	Rotate *ActionStatus `json:"rotate"`
	Delete *ActionStatus `json:"delete"`
}

// ActionStatus is one entry of KeyActions: status "available" or
// "unavailable" with an optional reason code.
type ActionStatus struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// UnmarshalJSON tolerates zone-less created_at, a non-string created_by and
// a null name.
func (k *Key) UnmarshalJSON(b []byte) error {
	type plain Key
	var aux struct {
		*plain
		Name      flexString `json:"name"`
		CreatedAt flexTime   `json:"created_at"`
		CreatedBy flexString `json:"created_by"`
	}
	aux.plain = (*plain)(k)
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	k.Name = string(aux.Name)
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
	// Name filters by name substring or the key's last 4 characters.
	Name string
	// Limit is the page size (server default when 0); Offset the first row.
	Limit, Offset int
}

type keyList struct {
	Keys []Key `json:"keys"`
}

// ListKeys returns one page of keys. The server may return fewer than
// Limit even when more follow.
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

// ListPageSize is the page size the List* helpers ask for.
const ListPageSize = 100

// maxPages bounds the List* helpers against a server that never ends.
const maxPages = 10000

// ListAllKeys returns every key, reading pages until one comes back empty
// (a server may serve fewer keys than asked per page). With a name, it
// returns only keys whose name is exactly name (the server's filter
// matches more). It is not a snapshot: a key created or deleted while
// paging can shift the offsets; keys seen twice are returned once.
func (c *Client) ListAllKeys(ctx context.Context, name string) ([]Key, error) {
	var all []Key
	seen := map[string]bool{}
	offset := 0
	for range maxPages {
		keys, err := c.ListKeys(ctx, ListKeysOptions{Name: name, Limit: ListPageSize, Offset: offset})
		if err != nil {
			return nil, err
		}
		if len(keys) == 0 {
			return all, nil
		}
		offset += len(keys)
		for _, k := range keys {
			if seen[k.KeyID] || (name != "" && k.Name != name) {
				continue
			}
			seen[k.KeyID] = true
			all = append(all, k)
		}
	}
	return nil, fmt.Errorf("mistral: list keys: more than %d pages", maxPages)
}

// MaxKeyNameLength is the longest key name the platform accepts.
const MaxKeyNameLength = 255

// CreateKeyRequest is the body of POST /v1/admin/api-keys.
type CreateKeyRequest struct {
	// Name is optional (at most MaxKeyNameLength characters).
	Name string `json:"name,omitempty"`
	// Expiration is the last day the key is valid; nil asks for none, but
	// the organization's policy may set or shorten it (see Key.ExpirationDate).
	Expiration    *Date  `json:"expiration"`
	WorkspaceUUID string `json:"workspace_uuid"`
	UserID        string `json:"user_id"`
}

// CreateKey creates a key; the returned Key.Key holds the plaintext, shown
// only this once, and Key.ExpirationDate the expiry the platform applied.
//
// Retries: like every call, CreateKey is retried on 429, 5xx, timeouts and
// dropped connections, although a request that timed out or got a 5xx may
// have created the key. That is deliberate: the rotation engine gives each
// new key a deterministic name and looks for it by name (ListAllKeys)
// before creating and after a failure, so a duplicate is found and
// deleted, while giving up on a transient error would stall the rotation.
// Callers that cannot tolerate a duplicate set Options.MaxRetries < 0.
func (c *Client) CreateKey(ctx context.Context, req CreateKeyRequest) (Key, error) {
	if req.WorkspaceUUID == "" || req.UserID == "" {
		return Key{}, errors.New("mistral: create key: workspace_uuid and user_id are required")
	}
	if len(req.Name) > MaxKeyNameLength {
		return Key{}, fmt.Errorf("mistral: create key: name longer than %d characters", MaxKeyNameLength)
	}
	var k Key
	if err := c.do(ctx, call{method: "POST", path: "/v1/admin/api-keys", admin: true, body: req}, &k); err != nil {
		return Key{}, err
	}
	if k.Key.IsZero() {
		// The key exists but its plaintext is lost: the caller deletes it by KeyID.
		return k, fmt.Errorf("mistral: create key %q: answer has no plaintext key (key_id %s)", req.Name, k.KeyID)
	}
	if k.WorkspaceID == "" {
		k.WorkspaceID = req.WorkspaceUUID // APIKeyOUT carries no workspace
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
