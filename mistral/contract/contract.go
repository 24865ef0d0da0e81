// Package contract holds the part of Mistral's published OpenAPI spec that
// mrbacd relies on, extracted into testdata/contract.json (see Extract and
// the extract command), and checks JSON values and HTTP exchanges against
// it: the sandbox's answers in tests, and the client's requests.
//
// The contract is a small schema language of its own, a subset of the
// spec's JSON Schema: type, properties, required, closed (additional
// properties refused), additionalProperties, items, enum, const, anyOf,
// oneOf (checked as anyOf), allOf, $ref into "schemas", format (date,
// date-time, uuid) and the length, size and bound keywords.
package contract

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Source names the spec a contract was extracted from.
type Source struct {
	Repository string `json:"repository"`
	Path       string `json:"path"`
	Commit     string `json:"commit"`
	Date       string `json:"date"`
}

// Contract is the extracted description of the endpoints mrbacd uses.
type Contract struct {
	Source Source `json:"source"`
	// Endpoints are keyed "METHOD /path/{param}".
	Endpoints map[string]*Endpoint `json:"endpoints"`
	Schemas   map[string]*Schema   `json:"schemas"`
	// Waivers are the spec's requirements the contract drops, each with
	// its reason (Extract applies them).
	Waivers []Waiver `json:"waivers,omitempty"`
}

// Waiver amends a schema where the spec contradicts itself: it drops a
// required field (of the schema or of its allOf branches), or admits a
// property the spec defines for the same object elsewhere.
type Waiver struct {
	Schema   string `json:"schema"`
	Required string `json:"required,omitempty"`
	// Property and Definition admit one more property.
	Property   string  `json:"property,omitempty"`
	Definition *Schema `json:"definition,omitempty"`
	Reason     string  `json:"reason"`
}

// Waivers are applied by Extract.
var Waivers = []Waiver{{
	Schema: "ChatCompletionResponse", Required: "data",
	Reason: "the spec lists data as required in a chat completion, but its own examples of answers " +
		"with this schema (POST /v1/agents/completions) have no data field, nor does the platform's answer",
}, {
	Schema: "UsageInfo", Property: "prompt_tokens_details",
	Definition: &Schema{
		Type: []string{"object", "null"},
		Properties: map[string]*Schema{
			"cached_tokens": {Type: []string{"integer"}},
			"audio_tokens":  {Type: []string{"integer"}},
		},
	},
	Reason: "the chat UsageInfo is closed and lacks prompt_tokens_details, yet chat requests take " +
		"prompt_cache_key and the spec's own speech-stream UsageInfo carries prompt_tokens_details " +
		"{cached_tokens, audio_tokens}: the platform reports cached prompt tokens there, billed at 10% of the input price",
}}

// Endpoint describes one operation.
type Endpoint struct {
	Query map[string]*Param `json:"query,omitempty"`
	// Request is the JSON body's schema (nil: no body).
	Request *Schema `json:"request,omitempty"`
	// Responses are keyed by status ("200", "204", "422").
	Responses map[string]*Response `json:"responses"`
}

// Param is a query parameter.
type Param struct {
	Required bool    `json:"required,omitempty"`
	Schema   *Schema `json:"schema"`
}

// Response is one documented answer: a JSON body, server-sent events each
// carrying a JSON value (Stream), or no body (both nil).
type Response struct {
	JSON   *Schema `json:"json,omitempty"`
	Stream *Schema `json:"stream,omitempty"`
}

// Schema is one node of the schema subset.
type Schema struct {
	Ref              string             `json:"$ref,omitempty"`
	Type             []string           `json:"type,omitempty"`
	Properties       map[string]*Schema `json:"properties,omitempty"`
	Required         []string           `json:"required,omitempty"`
	Closed           bool               `json:"closed,omitempty"`
	Additional       *Schema            `json:"additionalProperties,omitempty"`
	Items            *Schema            `json:"items,omitempty"`
	Enum             []any              `json:"enum,omitempty"`
	Const            any                `json:"const,omitempty"`
	AnyOf            []*Schema          `json:"anyOf,omitempty"`
	OneOf            []*Schema          `json:"oneOf,omitempty"`
	AllOf            []*Schema          `json:"allOf,omitempty"`
	Format           string             `json:"format,omitempty"`
	MinLength        *int               `json:"minLength,omitempty"`
	MaxLength        *int               `json:"maxLength,omitempty"`
	MinItems         *int               `json:"minItems,omitempty"`
	Minimum          *float64           `json:"minimum,omitempty"`
	Maximum          *float64           `json:"maximum,omitempty"`
	ExclusiveMinimum *float64           `json:"exclusiveMinimum,omitempty"`
}

//go:embed testdata/contract.json
var embedded []byte

// Load returns the committed contract.
func Load() (*Contract, error) {
	var c Contract
	if err := json.Unmarshal(embedded, &c); err != nil {
		return nil, fmt.Errorf("contract: testdata/contract.json: %w", err)
	}
	return &c, nil
}

// Endpoint returns the endpoint serving method and path ("/v1/admin/api-keys/abc"
// matches "DELETE /v1/admin/api-keys/{key_id}"), with its key.
func (c *Contract) Endpoint(method, path string) (string, *Endpoint) {
	keys := make([]string, 0, len(c.Endpoints))
	for k := range c.Endpoints {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m, tmpl, _ := strings.Cut(k, " ")
		if m == method && pathMatches(tmpl, path) {
			return k, c.Endpoints[k]
		}
	}
	return "", nil
}

func pathMatches(tmpl, path string) bool {
	ts := strings.Split(strings.Trim(tmpl, "/"), "/")
	ps := strings.Split(strings.Trim(path, "/"), "/")
	if len(ts) != len(ps) {
		return false
	}
	for i := range ts {
		if !(strings.HasPrefix(ts[i], "{") && ps[i] != "") && ts[i] != ps[i] {
			return false
		}
	}
	return true
}
