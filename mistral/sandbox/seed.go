package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mrbacd/mrbacd/mistral"
)

// Seed is the initial state of a sandbox, usually read from YAML:
//
//	admin_key: sk-admin-...            # else MISTRAL_ADMIN_KEY, else random
//	now: 2026-11-27T12:00:00Z          # optional frozen clock
//	workspaces: [{uuid: ..., name: dev-workspace, spend_limit: 250}]
//	users: [{id: ..., email: ops@example.com, role: A}]
//	keys: [{name: dev-team-key, key: PLAINTEXT, workspace: dev-workspace,
//	        created_at: 2026-08-01T00:00:00Z, last_used: 2026-11-20, expiration_date: 2027-01-01}]
//	usage: [{workspace: dev-workspace, month: "2026-11", model: mistral-small-latest,
//	         prompt_tokens: 1000, completion_tokens: 200}]  # category: completion (default),
//	                                # chat, ocr, ..., libraries_api.tokens, vibe_code.completion, ...
//	spend_limit: {amount: 500, no_monthly_limit: false}
//	key_policy: {max_days: 30}          # new keys expire within 30 days
//
// A workspace is named by uuid or by name. With no workspaces there is one
// default workspace; with no users, one user.
type Seed struct {
	AdminKey   string          `yaml:"admin_key"`
	Now        string          `yaml:"now"`
	Workspaces []SeedWorkspace `yaml:"workspaces"`
	Users      []SeedUser      `yaml:"users"`
	Keys       []SeedKey       `yaml:"keys"`
	Usage      []SeedUsage     `yaml:"usage"`
	SpendLimit *SeedSpendLimit `yaml:"spend_limit"`
	KeyPolicy  *KeyPolicy      `yaml:"key_policy"`
}

// SeedWorkspace declares a workspace (uuid generated when empty).
type SeedWorkspace struct {
	UUID        string `yaml:"uuid"`
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// SpendLimit is the workspace's monthly limit in USD (none when absent).
	SpendLimit *float64 `yaml:"spend_limit"`
}

// SeedUser declares a member (id generated when empty).
type SeedUser struct {
	ID    string `yaml:"id"`
	Email string `yaml:"email"`
	Name  string `yaml:"name"`
	// Role is "A" (admin) or "M" (member); the first user defaults to "A".
	Role string `yaml:"role"`
}

// SeedKey declares an existing key. Key (the plaintext) and KeyID are
// generated when empty; Workspace defaults to the first workspace.
type SeedKey struct {
	KeyID          string `yaml:"key_id"`
	Name           string `yaml:"name"`
	Key            string `yaml:"key"`
	Workspace      string `yaml:"workspace"`
	CreatedBy      string `yaml:"created_by"`
	CreatedAt      string `yaml:"created_at"`      // RFC 3339 or YYYY-MM-DD
	LastUsed       string `yaml:"last_used"`       // YYYY-MM-DD
	ExpirationDate string `yaml:"expiration_date"` // YYYY-MM-DD
	Product        string `yaml:"product"`         // default "API"
}

// SeedUsage adds tokens to a workspace's month.
type SeedUsage struct {
	Workspace        string `yaml:"workspace"`
	Month            string `yaml:"month"` // YYYY-MM
	Category         string `yaml:"category"`
	Model            string `yaml:"model"`
	PromptTokens     int64  `yaml:"prompt_tokens"`
	CompletionTokens int64  `yaml:"completion_tokens"`
}

// SeedSpendLimit sets the organization's spend limit.
type SeedSpendLimit struct {
	Amount         int64 `yaml:"amount"`
	NoMonthlyLimit bool  `yaml:"no_monthly_limit"`
}

// LoadSeed reads and validates a seed file.
func LoadSeed(path string) (*Seed, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	s, err := ParseSeed(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseSeed decodes YAML strictly (unknown fields are errors) and validates it.
func ParseSeed(data []byte) (*Seed, error) {
	var s Seed
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil && !errors.Is(err, io.EOF) {
		return nil, seedDecodeError(err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Validate checks the seed's values and cross-references and returns every
// problem found, one per line.
func (s *Seed) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("seed: "+format, a...)) }
	if s.Now != "" {
		if _, err := time.Parse(time.RFC3339, s.Now); err != nil {
			bad("now: %q is not an RFC 3339 time", s.Now)
		}
	}
	wsNames := map[string]bool{}
	for i, w := range s.Workspaces {
		if strings.TrimSpace(w.Name) == "" {
			bad("workspaces[%d].name: required", i)
		}
		if wsNames[w.Name] {
			bad("workspaces[%d].name: duplicate %q", i, w.Name)
		}
		wsNames[w.Name] = true
		if w.UUID != "" {
			if wsNames["uuid:"+w.UUID] {
				bad("workspaces[%d].uuid: duplicate %q", i, w.UUID)
			}
			wsNames["uuid:"+w.UUID] = true
		}
	}
	resolves := func(ref string) bool {
		if ref == "" {
			return true // the first (or default) workspace
		}
		return wsNames[ref] || wsNames["uuid:"+ref] || (len(s.Workspaces) == 0 && ref == DefaultWorkspaceName)
	}
	users := map[string]bool{}
	for i, u := range s.Users {
		if u.ID != "" && users[u.ID] {
			bad("users[%d].id: duplicate %q", i, u.ID)
		}
		users[u.ID] = true
		if !strings.Contains(u.Email, "@") {
			bad("users[%d].email: %q is not an email address", i, u.Email)
		}
		if u.Role != "" && u.Role != "A" && u.Role != "M" && u.Role != "B" {
			bad("users[%d].role: %q: want A, M or B", i, u.Role)
		}
	}
	plain := map[string]bool{}
	ids := map[string]bool{}
	for i, k := range s.Keys {
		if strings.TrimSpace(k.Name) == "" {
			bad("keys[%d].name: required", i)
		}
		if k.Key != "" {
			if plain[k.Key] {
				bad("keys[%d].key: the same plaintext is declared twice", i)
			}
			plain[k.Key] = true
			if len(k.Key) < 8 {
				bad("keys[%d].key: too short (at least 8 characters)", i)
			}
		}
		if k.KeyID != "" {
			if ids[k.KeyID] {
				bad("keys[%d].key_id: duplicate %q", i, k.KeyID)
			}
			ids[k.KeyID] = true
		}
		if !resolves(k.Workspace) {
			bad("keys[%d].workspace: unknown workspace %q (name or uuid of a declared workspace)", i, k.Workspace)
		}
		if k.CreatedBy != "" && !users[k.CreatedBy] {
			bad("keys[%d].created_by: unknown user id %q", i, k.CreatedBy)
		}
		if k.CreatedAt != "" {
			if _, err := parseSeedTime(k.CreatedAt); err != nil {
				bad("keys[%d].created_at: %q: want RFC 3339 or YYYY-MM-DD", i, k.CreatedAt)
			}
		}
		if k.LastUsed != "" {
			if _, err := time.Parse(time.DateOnly, k.LastUsed); err != nil {
				bad("keys[%d].last_used: %q: want YYYY-MM-DD", i, k.LastUsed)
			}
		}
		if k.ExpirationDate != "" {
			if _, err := time.Parse(time.DateOnly, k.ExpirationDate); err != nil {
				bad("keys[%d].expiration_date: %q: want YYYY-MM-DD", i, k.ExpirationDate)
			}
		}
	}
	for i, u := range s.Usage {
		if !resolves(u.Workspace) {
			bad("usage[%d].workspace: unknown workspace %q", i, u.Workspace)
		}
		if _, err := time.Parse("2006-01", u.Month); err != nil {
			bad("usage[%d].month: %q: want YYYY-MM", i, u.Month)
		}
		if u.Model == "" {
			bad("usage[%d].model: required", i)
		}
		if u.Category != "" && !knownCategory(u.Category) {
			bad("usage[%d].category: %q: want one of %s", i, u.Category, strings.Join(usageCategoryNames(), ", "))
		}
		if u.PromptTokens < 0 || u.CompletionTokens < 0 {
			bad("usage[%d]: token counts must not be negative", i)
		}
	}
	if s.SpendLimit != nil && s.SpendLimit.Amount < 0 {
		bad("spend_limit.amount: must not be negative")
	}
	for i, w := range s.Workspaces {
		if w.SpendLimit != nil && *w.SpendLimit < 0 {
			bad("workspaces[%d].spend_limit: must not be negative", i)
		}
	}
	if s.KeyPolicy != nil && s.KeyPolicy.MaxDays < 0 {
		bad("key_policy.max_days: must not be negative")
	}
	return errors.Join(errs...)
}

func parseSeedTime(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	d, err := mistral.ParseDate(v)
	if err != nil {
		return time.Time{}, err
	}
	return d.In(time.UTC), nil
}

// seedDecodeError words a YAML error for people: yaml.v3's type errors
// name Go types and quote the start of the value (which may be a key), so
// each becomes "line N: unknown field F" or "line N: expected X, got Y".
func seedDecodeError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("seed: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	errs := make([]error, 0, len(te.Errors))
	for _, m := range te.Errors {
		errs = append(errs, fmt.Errorf("seed: %s", seedTypeMessage(m)))
	}
	return errors.Join(errs...)
}

// seedTypeMessage rewrites one of yaml.v3's TypeError lines:
// "line 3: field colour not found in type sandbox.SeedKey" or
// "line 3: cannot unmarshal !!str `sk-abcd...` into int64".
func seedTypeMessage(m string) string {
	line, rest, ok := strings.Cut(m, ": ")
	if !ok || !strings.HasPrefix(line, "line ") {
		line, rest = "", m
	} else {
		line += ": "
	}
	if f, ok := strings.CutPrefix(rest, "field "); ok {
		if name, _, ok := strings.Cut(f, " not found in type "); ok {
			return line + "unknown field " + strconv.Quote(name)
		}
	}
	if r, ok := strings.CutPrefix(rest, "cannot unmarshal "); ok {
		tag, _, _ := strings.Cut(r, " ")
		if i := strings.LastIndex(r, " into "); i >= 0 {
			return line + "expected " + seedGoKind(r[i+len(" into "):]) + ", got " + seedTagKind(tag)
		}
	}
	return line + "malformed value"
}

// seedTagKind names a YAML tag such as !!str.
func seedTagKind(tag string) string {
	switch tag {
	case "!!str":
		return "a string"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	case "!!null":
		return "null"
	case "!!timestamp":
		return "a timestamp"
	}
	return "a value of type " + strings.TrimPrefix(tag, "!!")
}

// seedGoKind names the Go type a seed field decodes into.
func seedGoKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "an integer"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "true or false"
	}
	return "a mapping"
}
