package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// maxDepth bounds schema recursion (the spec's content chunks nest).
const maxDepth = 64

// ValidateJSON decodes data and checks it against s; it returns one line
// per problem, each starting with the JSON path ("$.keys[0].key_id: ...").
func (c *Contract) ValidateJSON(s *Schema, data []byte) []string {
	return c.validateJSON(s, data, false)
}

// ValidateStrictJSON is ValidateJSON refusing, besides, fields an object
// schema does not list (where it says nothing of other fields): a server
// answering exactly as the spec says sends no others.
func (c *Contract) ValidateStrictJSON(s *Schema, data []byte) []string {
	return c.validateJSON(s, data, true)
}

func (c *Contract) validateJSON(s *Schema, data []byte, strict bool) []string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return []string{"$: not JSON: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return []string{"$: data after the JSON value"}
	}
	var errs []string
	c.check(s, v, "$", 0, strict, &errs)
	return errs
}

// Validate checks a decoded value (numbers as json.Number, or float64)
// against s.
func (c *Contract) Validate(s *Schema, v any) []string {
	var errs []string
	c.check(s, v, "$", 0, false, &errs)
	return errs
}

func (c *Contract) resolve(s *Schema) (*Schema, error) {
	for i := 0; s != nil && s.Ref != ""; i++ {
		name := strings.TrimPrefix(s.Ref, "#/schemas/")
		next, ok := c.Schemas[name]
		if !ok || i > maxDepth {
			return nil, fmt.Errorf("unknown schema %q", s.Ref)
		}
		s = next
	}
	return s, nil
}

func (c *Contract) check(s *Schema, v any, path string, depth int, strict bool, errs *[]string) {
	c.checkNode(s, v, path, depth, strict, nil, errs)
}

// checkNode checks v against s; siblings are the properties the other
// allOf branches of the enclosing schema list, which a strict check
// accepts at this level.
func (c *Contract) checkNode(s *Schema, v any, path string, depth int, strict bool, siblings map[string]bool, errs *[]string) {
	bad := func(format string, a ...any) { *errs = append(*errs, path+": "+fmt.Sprintf(format, a...)) }
	s, err := c.resolve(s)
	if err != nil {
		bad("%v", err)
		return
	}
	if s == nil || depth > maxDepth {
		return
	}
	if len(s.AllOf) > 0 {
		all := c.allProperties(s, map[string]bool{})
		for k := range siblings {
			all[k] = true
		}
		for _, sub := range s.AllOf {
			c.checkNode(sub, v, path, depth+1, strict, all, errs)
		}
	}
	for _, alts := range [][]*Schema{s.AnyOf, s.OneOf} {
		if len(alts) > 0 && !c.anyMatches(alts, v, depth, strict) {
			bad("matches none of %d alternatives (%s)", len(alts), c.firstProblem(alts, v, depth, strict))
		}
	}
	if len(s.Type) > 0 && !typeMatches(s.Type, v) {
		bad("want %s, got %s", strings.Join(s.Type, " or "), typeName(v))
		return
	}
	if len(s.Enum) > 0 && !inEnum(s.Enum, v) {
		bad("%s is not one of %v", show(v), s.Enum)
	}
	if s.Const != nil && !sameValue(s.Const, v) {
		bad("want %v, got %s", s.Const, show(v))
	}
	switch x := v.(type) {
	case string:
		c.checkString(s, x, bad)
	case json.Number, float64:
		checkNumber(s, toFloat(x), bad)
	case []any:
		if s.MinItems != nil && len(x) < *s.MinItems {
			bad("%d items, want at least %d", len(x), *s.MinItems)
		}
		if s.Items != nil {
			for i, item := range x {
				c.check(s.Items, item, fmt.Sprintf("%s[%d]", path, i), depth+1, strict, errs)
			}
		}
	case map[string]any:
		c.checkObject(s, x, path, depth, strict, siblings, errs)
	}
}

func (c *Contract) anyMatches(alts []*Schema, v any, depth int, strict bool) bool {
	for _, a := range alts {
		var e []string
		c.check(a, v, "", depth+1, strict, &e)
		if len(e) == 0 {
			return true
		}
	}
	return false
}

// firstProblem describes why v fails the alternative closest to its type.
func (c *Contract) firstProblem(alts []*Schema, v any, depth int, strict bool) string {
	best := ""
	for _, a := range alts {
		var e []string
		c.check(a, v, "", depth+1, strict, &e)
		if len(e) > 0 && (best == "" || !strings.Contains(e[0], "want ")) {
			best = strings.TrimPrefix(e[0], ": ")
		}
	}
	return best
}

func (c *Contract) checkObject(s *Schema, m map[string]any, path string, depth int, strict bool, siblings map[string]bool, errs *[]string) {
	for _, r := range s.Required {
		if _, ok := m[r]; !ok {
			*errs = append(*errs, path+": missing required field "+r)
		}
	}
	for k, val := range m {
		p := path + "." + k
		if ps, ok := s.Properties[k]; ok {
			c.check(ps, val, p, depth+1, strict, errs)
			continue
		}
		switch {
		case s.Closed, strict && s.Additional == nil && len(s.Properties) > 0 && !siblings[k] && !c.allProperties(s, map[string]bool{})[k]:
			*errs = append(*errs, p+": field not in the spec")
		case s.Additional != nil:
			c.check(s.Additional, val, p, depth+1, strict, errs)
		}
	}
}

var (
	uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	dateRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)
)

func (c *Contract) checkString(s *Schema, x string, bad func(string, ...any)) {
	n := utf8.RuneCountInString(x)
	if s.MinLength != nil && n < *s.MinLength {
		bad("%d characters, want at least %d", n, *s.MinLength)
	}
	if s.MaxLength != nil && n > *s.MaxLength {
		bad("%d characters, want at most %d", n, *s.MaxLength)
	}
	switch s.Format {
	case "uuid":
		if !uuidRE.MatchString(x) {
			bad("%q is not a uuid", x)
		}
	case "date":
		if _, err := time.Parse(time.DateOnly, x); err != nil || !dateRE.MatchString(x) {
			bad("%q is not a date (YYYY-MM-DD)", x)
		}
	case "date-time":
		if _, err := time.Parse(time.RFC3339Nano, x); err != nil {
			bad("%q is not an RFC 3339 date-time", x)
		}
	}
}

func checkNumber(s *Schema, f float64, bad func(string, ...any)) {
	if s.Minimum != nil && f < *s.Minimum {
		bad("%v is below the minimum %v", f, *s.Minimum)
	}
	if s.Maximum != nil && f > *s.Maximum {
		bad("%v is above the maximum %v", f, *s.Maximum)
	}
	if s.ExclusiveMinimum != nil && f <= *s.ExclusiveMinimum {
		bad("%v is not above %v", f, *s.ExclusiveMinimum)
	}
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case float64:
		return x
	}
	return 0
}

func typeMatches(types []string, v any) bool {
	for _, t := range types {
		switch x := v.(type) {
		case nil:
			if t == "null" {
				return true
			}
		case bool:
			if t == "boolean" {
				return true
			}
		case string:
			if t == "string" {
				return true
			}
		case json.Number:
			_, err := x.Int64()
			if t == "number" || (t == "integer" && err == nil && !strings.ContainsAny(x.String(), ".eE")) {
				return true
			}
		case float64:
			if t == "number" || (t == "integer" && x == float64(int64(x))) {
				return true
			}
		case []any:
			if t == "array" {
				return true
			}
		case map[string]any:
			if t == "object" {
				return true
			}
		}
	}
	return false
}

func typeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		if _, err := x.Int64(); err == nil && !strings.ContainsAny(x.String(), ".eE") {
			return "integer"
		}
		return "number"
	case float64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func inEnum(enum []any, v any) bool {
	for _, e := range enum {
		if sameValue(e, v) {
			return true
		}
	}
	return false
}

// sameValue compares a contract value (from encoding/json: float64) with
// a checked one (json.Number or float64).
func sameValue(want, got any) bool {
	if n, ok := got.(json.Number); ok {
		f, _ := n.Float64()
		got = f
	}
	return reflect.DeepEqual(want, got)
}

func show(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 60 {
		b = append(b[:60], "..."...)
	}
	return string(b)
}

// allProperties adds to into the properties s and its allOf branches list.
func (c *Contract) allProperties(s *Schema, into map[string]bool) map[string]bool {
	for k := range s.Properties {
		into[k] = true
	}
	for _, b := range s.AllOf {
		if r, err := c.resolve(b); err == nil && r != nil && len(into) < 1000 {
			c.allProperties(r, into)
		}
	}
	return into
}
