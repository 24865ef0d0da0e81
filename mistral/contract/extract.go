package contract

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Endpoints are the operations mrbacd calls or the sandbox serves.
var Endpoints = []string{
	"GET /v1/admin/api-keys",
	"POST /v1/admin/api-keys",
	"DELETE /v1/admin/api-keys/{key_id}",
	"GET /v1/admin/workspaces",
	"POST /v1/admin/workspaces",
	"DELETE /v1/admin/workspaces/{workspace_uuid}",
	"GET /v1/admin/users",
	"GET /v1/admin/usage",
	"GET /v1/admin/spend-limit",
	"POST /v1/admin/spend-limit",
	"GET /v1/admin/rate-limit",
	"GET /v1/admin/audit-logs",
	"GET /v1/models",
	"POST /v1/chat/completions",
	"POST /v1/embeddings",
}

// Extract reads an OpenAPI 3 document (YAML or JSON) and returns the
// contract of the given endpoints ("METHOD /path") with every schema they
// reach. Prose (descriptions, titles, examples) is dropped.
func Extract(spec []byte, endpoints []string, src Source) (*Contract, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(spec, &doc); err != nil {
		return nil, fmt.Errorf("contract: read spec: %w", err)
	}
	x := &extractor{doc: doc, out: &Contract{Source: src, Endpoints: map[string]*Endpoint{}, Schemas: map[string]*Schema{}}}
	for _, ep := range endpoints {
		method, path, ok := strings.Cut(ep, " ")
		if !ok {
			return nil, fmt.Errorf("contract: endpoint %q: want \"METHOD /path\"", ep)
		}
		op, ok := obj(obj(doc["paths"])[path])[strings.ToLower(method)].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("contract: the spec has no %s", ep)
		}
		e, err := x.endpoint(op)
		if err != nil {
			return nil, fmt.Errorf("contract: %s: %w", ep, err)
		}
		x.out.Endpoints[ep] = e
	}
	for len(x.queue) > 0 {
		name := x.queue[0]
		x.queue = x.queue[1:]
		raw, ok := obj(obj(doc["components"])["schemas"])[name]
		if !ok {
			return nil, fmt.Errorf("contract: the spec has no schema %q", name)
		}
		s, err := x.schema(raw)
		if err != nil {
			return nil, fmt.Errorf("contract: schema %s: %w", name, err)
		}
		x.out.Schemas[name] = s
	}
	for _, w := range Waivers {
		s, ok := x.out.Schemas[w.Schema]
		if !ok {
			continue
		}
		if w.Property != "" {
			if s.Properties == nil {
				s.Properties = map[string]*Schema{}
			}
			s.Properties[w.Property] = w.Definition
		}
		for _, node := range append([]*Schema{s}, s.AllOf...) {
			if node != nil && w.Required != "" {
				node.Required = slices.DeleteFunc(node.Required, func(r string) bool { return r == w.Required })
			}
		}
		x.out.Waivers = append(x.out.Waivers, w)
	}
	return x.out, nil
}

type extractor struct {
	doc   map[string]any
	out   *Contract
	queue []string
	seen  map[string]bool
}

// obj returns v as a map with string keys (nil when it is not one).
func obj(v any) map[string]any {
	switch m := v.(type) {
	case map[string]any:
		return m
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, val := range m {
			out[fmt.Sprint(k)] = val
		}
		return out
	}
	return nil
}

func (x *extractor) endpoint(op map[string]any) (*Endpoint, error) {
	e := &Endpoint{Responses: map[string]*Response{}}
	params, _ := op["parameters"].([]any)
	for _, p := range params {
		pm := obj(p)
		if pm["in"] != "query" {
			continue
		}
		s, err := x.schema(pm["schema"])
		if err != nil {
			return nil, err
		}
		if e.Query == nil {
			e.Query = map[string]*Param{}
		}
		req, _ := pm["required"].(bool)
		e.Query[fmt.Sprint(pm["name"])] = &Param{Required: req, Schema: s}
	}
	if body := obj(obj(obj(op["requestBody"])["content"])["application/json"]); body != nil {
		s, err := x.schema(body["schema"])
		if err != nil {
			return nil, err
		}
		e.Request = s
	}
	for status, r := range obj(op["responses"]) {
		content := obj(obj(r)["content"])
		resp := &Response{}
		if j := obj(content["application/json"]); j != nil {
			s, err := x.schema(j["schema"])
			if err != nil {
				return nil, err
			}
			resp.JSON = s
		}
		if ev := obj(content["text/event-stream"]); ev != nil {
			s, err := x.schema(ev["schema"])
			if err != nil {
				return nil, err
			}
			resp.Stream = s
		}
		e.Responses[status] = resp
	}
	return e, nil
}

func (x *extractor) ref(r string) (string, error) {
	name, ok := strings.CutPrefix(r, "#/components/schemas/")
	if !ok {
		return "", fmt.Errorf("unsupported $ref %q", r)
	}
	if x.seen == nil {
		x.seen = map[string]bool{}
	}
	if !x.seen[name] {
		x.seen[name] = true
		x.queue = append(x.queue, name)
	}
	return "#/schemas/" + name, nil
}

// schema converts one JSON Schema node into the subset.
func (x *extractor) schema(v any) (*Schema, error) {
	m := obj(v)
	if m == nil {
		return nil, nil
	}
	s := &Schema{}
	var err error
	if r, ok := m["$ref"].(string); ok {
		if s.Ref, err = x.ref(r); err != nil {
			return nil, err
		}
	}
	switch t := m["type"].(type) {
	case string:
		s.Type = []string{t}
	case []any:
		for _, e := range t {
			s.Type = append(s.Type, fmt.Sprint(e))
		}
	}
	if props := obj(m["properties"]); props != nil {
		s.Properties = map[string]*Schema{}
		for k, pv := range props {
			if s.Properties[k], err = x.schema(pv); err != nil {
				return nil, err
			}
			if s.Properties[k] == nil {
				s.Properties[k] = &Schema{}
			}
		}
	}
	for _, r := range list(m["required"]) {
		s.Required = append(s.Required, fmt.Sprint(r))
	}
	sort.Strings(s.Required)
	switch ap := m["additionalProperties"].(type) {
	case bool:
		s.Closed = !ap
	default:
		if s.Additional, err = x.schema(ap); err != nil {
			return nil, err
		}
	}
	if s.Items, err = x.schema(m["items"]); err != nil {
		return nil, err
	}
	for key, dst := range map[string]*[]*Schema{"anyOf": &s.AnyOf, "oneOf": &s.OneOf, "allOf": &s.AllOf} {
		for _, alt := range list(m[key]) {
			a, err := x.schema(alt)
			if err != nil {
				return nil, err
			}
			*dst = append(*dst, a)
		}
	}
	s.Enum = list(m["enum"])
	s.Const = m["const"]
	s.Format, _ = m["format"].(string)
	s.MinLength, s.MaxLength, s.MinItems = intOf(m["minLength"]), intOf(m["maxLength"]), intOf(m["minItems"])
	s.Minimum, s.Maximum, s.ExclusiveMinimum = floatOf(m["minimum"]), floatOf(m["maximum"]), floatOf(m["exclusiveMinimum"])
	return s, nil
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func intOf(v any) *int {
	if n, ok := v.(int); ok {
		return &n
	}
	return nil
}

func floatOf(v any) *float64 {
	switch n := v.(type) {
	case int:
		f := float64(n)
		return &f
	case float64:
		return &n
	}
	return nil
}
