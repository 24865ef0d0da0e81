package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// maxNodes bounds the work of one decode, aliases included, so a small
// document that expands aliases exponentially cannot exhaust the process.
const maxNodes = 50000

// position is where a node starts.
type position struct{ line, col int }

// decoder walks a yaml.Node tree onto Go values by reflection, strictly:
// every unknown key, wrong kind and bad scalar becomes a Problem with the
// node's position, and decoding goes on to find the rest.
type decoder struct {
	file     string
	probs    Problems
	pos      map[string]position // field path -> position of its value
	nodes    int
	overflow bool
	// failed holds paths whose value could not be decoded; validation
	// stays quiet about them so one mistake gives one problem.
	failed map[string]bool
	// inline holds paths of inline secret fields reported.
	inline map[string]bool
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, pos: map[string]position{}, failed: map[string]bool{}, inline: map[string]bool{}}
}

func (d *decoder) addAt(n *yaml.Node, field, format string, args ...any) {
	p := Problem{File: d.file, Field: field, Message: fmt.Sprintf(format, args...)}
	if n != nil {
		p.Line, p.Col = n.Line, n.Column
	}
	d.failed[field] = true
	d.probs = append(d.probs, p)
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// resolve follows aliases (bounded) and reports nil for a cycle.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > 100 {
			return nil
		}
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return "a string"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		}
		return "a scalar"
	case yaml.DocumentNode:
		return "a document"
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// decode sets v (addressable) from n; path names v for problems.
func (d *decoder) decode(path string, n *yaml.Node, v reflect.Value) {
	if d.overflow {
		return
	}
	d.nodes++
	if d.nodes > maxNodes {
		d.overflow = true
		d.addAt(n, path, "document too large (more than %d nodes after expanding aliases)", maxNodes)
		return
	}
	orig := n
	n = resolve(n)
	if n == nil {
		d.addAt(orig, path, "alias chain too long or circular")
		return
	}
	if _, seen := d.pos[path]; !seen {
		d.pos[path] = position{orig.Line, orig.Column}
	}
	if isNull(n) {
		return // not set: leave the zero value for applyDefaults
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		u := v.Addr().Interface().(yaml.Unmarshaler)
		if err := u.UnmarshalYAML(n); err != nil {
			d.addAt(n, path, "%s", err.Error())
			return
		}
		if dur, ok := v.Interface().(Duration); ok && dur <= 0 {
			d.addAt(n, path, "must be a positive duration")
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(path, n, v.Elem())
	case reflect.Struct:
		d.decodeStruct(path, n, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.addAt(n, path, "expected a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(fmt.Sprintf("%s[%d]", path, i), item, s.Index(i))
		}
		v.Set(s)
	case reflect.Map:
		d.decodeMap(path, n, v)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.addAt(n, path, "expected a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.addAt(n, path, "expected true or false, got %s", kindName(n))
			return
		}
		b, err := strconv.ParseBool(strings.ToLower(n.Value))
		if err != nil {
			d.addAt(n, path, "expected true or false")
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		if n.Kind != yaml.ScalarNode {
			d.addAt(n, path, "expected an integer, got %s", kindName(n))
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if errors.Is(err, strconv.ErrRange) {
			d.addAt(n, path, "integer out of range")
			return
		}
		if err != nil {
			if f, ferr := strconv.ParseFloat(n.Value, 64); ferr == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
				i, err = int64(f), nil
			}
		}
		if err != nil {
			d.addAt(n, path, "expected an integer, got %s", kindName(n))
			return
		}
		if v.OverflowInt(i) {
			d.addAt(n, path, "integer out of range")
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode {
			d.addAt(n, path, "expected a number, got %s", kindName(n))
			return
		}
		f, err := strconv.ParseFloat(n.Value, 64)
		switch strings.ToLower(n.Value) {
		case ".inf", "+.inf", "-.inf", ".nan":
			d.addAt(n, path, "must be a finite number")
			return
		}
		if err != nil || strings.ContainsAny(n.Value, "xX_") {
			d.addAt(n, path, "expected a number, got %s", kindName(n))
			return
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			d.addAt(n, path, "must be a finite number")
			return
		}
		v.SetFloat(f)
	default:
		d.addAt(n, path, "cannot decode into %s", v.Type())
	}
}

// pair is one key/value of a mapping, after merges.
type pair struct{ key, val *yaml.Node }

// pairs lists a mapping's entries, expanding "<<" merge keys first so the
// mapping's own keys win. Duplicate own keys are reported.
func (d *decoder) pairs(path string, n *yaml.Node, depth int) []pair {
	var merged, own []pair
	firstAt := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if d.overflow {
			return nil
		}
		k, val := n.Content[i], n.Content[i+1]
		rk := resolve(k)
		if rk == nil || rk.Kind != yaml.ScalarNode {
			d.addAt(k, path, "a mapping key must be a string")
			continue
		}
		if rk.ShortTag() == "!!merge" {
			if depth > 10 {
				d.addAt(k, path, "merge keys nested too deeply")
				continue
			}
			mv := resolve(val)
			var srcs []*yaml.Node
			switch {
			case mv != nil && mv.Kind == yaml.MappingNode:
				srcs = []*yaml.Node{mv}
			case mv != nil && mv.Kind == yaml.SequenceNode:
				for _, s := range mv.Content {
					srcs = append(srcs, resolve(s))
				}
			default:
				d.addAt(val, path, "a merge key (<<) needs a mapping or a list of mappings")
			}
			for _, s := range srcs {
				if d.overflow {
					return nil
				}
				if s == nil || s.Kind != yaml.MappingNode {
					d.addAt(val, path, "a merge key (<<) needs a mapping or a list of mappings")
					continue
				}
				d.nodes += len(s.Content)
				if d.nodes > maxNodes {
					d.overflow = true
					d.addAt(val, path, "document too large (more than %d nodes after expanding aliases)", maxNodes)
					return nil
				}
				merged = append(merged, d.pairs(path, s, depth+1)...)
			}
			continue
		}
		if first, dup := firstAt[rk.Value]; dup {
			d.addAt(k, join(path, rk.Value), "duplicate key (first set at line %d)", first.Line)
			continue
		}
		firstAt[rk.Value] = k
		own = append(own, pair{rk, val})
	}
	if len(merged) == 0 {
		return own
	}
	out := make([]pair, 0, len(merged)+len(own))
	for _, p := range merged {
		if _, over := firstAt[p.key.Value]; !over {
			out = append(out, p)
		}
	}
	return append(out, own...)
}

func (d *decoder) decodeMap(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.addAt(n, path, "expected a mapping, got %s", kindName(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		d.addAt(n, path, "cannot decode into %s", v.Type())
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for _, p := range d.pairs(path, n, 0) {
		if d.overflow {
			return
		}
		sub := join(path, p.key.Value)
		if p.key.Value == "" {
			d.addAt(p.key, sub, "empty name")
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		if old := v.MapIndex(reflect.ValueOf(p.key.Value).Convert(v.Type().Key())); old.IsValid() {
			elem.Set(old)
		}
		d.decode(sub, p.val, elem)
		v.SetMapIndex(reflect.ValueOf(p.key.Value).Convert(v.Type().Key()), elem)
	}
}

// fieldInfo maps a struct's YAML keys to field indexes.
type fieldInfo struct {
	index map[string]int
	names []string
}

var fieldCache sync.Map // reflect.Type -> *fieldInfo

func fieldsOf(t reflect.Type) *fieldInfo {
	if fi, ok := fieldCache.Load(t); ok {
		return fi.(*fieldInfo)
	}
	fi := &fieldInfo{index: map[string]int{}}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fi.index[name] = i
		fi.names = append(fi.names, name)
	}
	sort.Strings(fi.names)
	fieldCache.Store(t, fi)
	return fi
}

func (d *decoder) decodeStruct(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.addAt(n, path, "expected a mapping, got %s", kindName(n))
		return
	}
	fi := fieldsOf(v.Type())
	for _, p := range d.pairs(path, n, 0) {
		if d.overflow {
			return
		}
		name := p.key.Value
		i, ok := fi.index[name]
		if !ok {
			msg, secret := unknownKeyMessage(name, fi)
			if secret {
				d.inline[join(path, name)] = true
			}
			d.addAt(p.key, join(path, name), "%s", msg)
			continue
		}
		if strings.HasSuffix(name, "_file") || strings.HasSuffix(name, "_env") {
			if val := resolve(p.val); val != nil && val.Kind == yaml.ScalarNode && looksLikeSecret(val.Value, strings.HasSuffix(name, "_file")) {
				// Reported once, here; the field stays unset and its
				// "required" check is silenced like an inline secret's.
				d.inline[join(path, strings.TrimSuffix(strings.TrimSuffix(name, "_file"), "_env"))] = true
				d.addAt(p.val, join(path, name), "%s", secretNameMessage(name))
				continue
			}
		}
		d.decode(join(path, name), p.val, v.Field(i))
	}
}

// secretWords are keys that hold a secret wherever they appear.
var secretWords = map[string]bool{
	"api_key": true, "apikey": true, "password": true, "passwd": true, "secret": true,
	"token": true, "bot_token": true, "access_key_id": true, "secret_access_key": true,
	"session_token": true, "private_key": true, "jwt": true, "webhook_url": true,
	"admin_key": true, "external_id": true, "secret_id": true, "role_id": true,
}

// unknownKeyMessage explains an unknown key: an inline secret says which
// *_env / *_file field to use; a near miss says "did you mean".
func unknownKeyMessage(name string, fi *fieldInfo) (msg string, secret bool) {
	_, hasEnv := fi.index[name+"_env"]
	_, hasFile := fi.index[name+"_file"]
	_, hasSHA := fi.index[name+"_sha256"]
	switch {
	case hasSHA && hasFile && hasEnv:
		return fmt.Sprintf("inline secrets are not allowed: use %s_sha256 (the SHA-256 of the token, in hex), %s_file or %s_env", name, name, name), true
	case hasEnv && hasFile:
		return fmt.Sprintf("inline secrets are not allowed: use %s_env or %s_file", name, name), true
	case hasFile:
		return fmt.Sprintf("inline secrets are not allowed: use %s_file", name), true
	case hasEnv:
		return fmt.Sprintf("inline secrets are not allowed: use %s_env", name), true
	case name == "api_key" || name == "apikey":
		return "inline API keys are not allowed: the admin key is read through mistral.admin_key_env or admin_key_file, and managed keys live in their store", true
	case secretWords[name]:
		return "inline secrets are not allowed: read it from a file or an environment variable (a *_file or *_env field)", true
	}
	msg = fmt.Sprintf("unknown key %q", name)
	if s := closest(name, fi.names); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return msg, false
}

// closest returns the candidate nearest to s by edit distance, if close.
func closest(s string, candidates []string) string {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		if dd := editDistance(s, c); dd < bestD {
			best, bestD = c, dd
		}
	}
	limit := 2
	if l := len([]rune(s)) / 3; l > limit {
		limit = l
	}
	if bestD <= limit && bestD < len([]rune(s)) {
		return best
	}
	return ""
}

func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return 1 << 20
	}
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
