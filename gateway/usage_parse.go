package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
)

// findUsage returns the usage object of a JSON answer or chunk. It looks
// for the last "usage" key and decodes only its object (answers put usage
// last, after the possibly long content); when that fails it falls back
// to decoding the whole document.
func findUsage(doc []byte) (usage, bool) {
	if obj := usageObject(doc); obj != nil {
		if u, ok := scanUsage(obj); ok && json.Valid(obj) {
			return u, true
		}
		if u, ok := decodeUsage(obj); ok {
			return u, true
		}
	}
	var w struct {
		Usage json.RawMessage `json:"usage"`
	}
	if json.Unmarshal(doc, &w) == nil && len(w.Usage) > 0 && w.Usage[0] == '{' {
		return decodeUsage(w.Usage)
	}
	return usage{}, false
}

// tokenDetails is a usage's prompt_tokens_details.
type tokenDetails struct {
	CachedTokens *int64 `json:"cached_tokens"`
}

// wireUsage is a usage object as decoded by encoding/json: the three
// counts and where the cached prompt tokens may be (the spec shows
// prompt_tokens_details, a misspelled prompt_token_details and
// num_cached_tokens; the first one present wins).
type wireUsage struct {
	PromptTokens     int64         `json:"prompt_tokens"`
	CompletionTokens int64         `json:"completion_tokens"`
	TotalTokens      int64         `json:"total_tokens"`
	Details          *tokenDetails `json:"prompt_tokens_details"`
	DetailsAlt       *tokenDetails `json:"prompt_token_details"`
	NumCached        *int64        `json:"num_cached_tokens"`
}

// decodeUsage decodes a usage object with encoding/json.
func decodeUsage(obj []byte) (usage, bool) {
	var w wireUsage
	if json.Unmarshal(obj, &w) != nil {
		return usage{}, false
	}
	u := usage{PromptTokens: w.PromptTokens, CompletionTokens: w.CompletionTokens, TotalTokens: w.TotalTokens}
	switch {
	case w.Details != nil && w.Details.CachedTokens != nil:
		u.Cached = *w.Details.CachedTokens
	case w.DetailsAlt != nil && w.DetailsAlt.CachedTokens != nil:
		u.Cached = *w.DetailsAlt.CachedTokens
	case w.NumCached != nil:
		u.Cached = *w.NumCached
	}
	return u, true
}

// usageObject slices the object value of the last `"usage":` key, or nil.
// Inside a JSON string a quote is always escaped, so the raw bytes
// `"usage"` followed by a colon can only be a key.
func usageObject(doc []byte) []byte {
	i := bytes.LastIndex(doc, usageField)
	if i < 0 {
		return nil
	}
	rest := doc[i+len(usageField):]
	j := 0
	for j < len(rest) && isSpace(rest[j]) {
		j++
	}
	if j >= len(rest) || rest[j] != ':' {
		return nil
	}
	j++
	for j < len(rest) && isSpace(rest[j]) {
		j++
	}
	if j >= len(rest) || rest[j] != '{' {
		return nil
	}
	start, depth, inStr := j, 0, false
	for ; j < len(rest); j++ {
		c := rest[j]
		switch {
		case inStr:
			if c == '\\' {
				j++
			} else if c == '"' {
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '{':
			depth++
		case c == '}':
			depth--
			if depth == 0 {
				return rest[start : j+1]
			}
		}
	}
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// scanUsage reads a usage object (as sliced by usageObject) without
// encoding/json when it is the plain common case: keys without escapes,
// the three token counts as non-negative integers, any other member a
// number, string or literal. Anything else (nested values such as
// prompt_tokens_details, a num_cached_tokens, keys differing only in case
// from the three, floats, negative numbers) returns false and the caller
// decodes the object with encoding/json (decodeUsage).
func scanUsage(obj []byte) (usage, bool) {
	var u usage
	i := skipSpace(obj, 1)
	if i < len(obj) && obj[i] == '}' {
		return u, true
	}
	for i < len(obj) {
		if obj[i] != '"' {
			return usage{}, false
		}
		ke := skipString(obj, i) // obj ends with '}': the key is inside it
		key := obj[i+1 : ke-1]
		if indexByte(key, '\\') >= 0 {
			return usage{}, false
		}
		i = skipSpace(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return usage{}, false
		}
		vs := skipSpace(obj, i+1)
		if vs >= len(obj) || obj[vs] == '{' || obj[vs] == '[' {
			return usage{}, false
		}
		ve := skipValue(obj, vs)
		var dst *int64
		switch k := unsafeString(key); k {
		case "prompt_tokens":
			dst = &u.PromptTokens
		case "completion_tokens":
			dst = &u.CompletionTokens
		case "total_tokens":
			dst = &u.TotalTokens
		default:
			if strings.EqualFold(k, "prompt_tokens") || strings.EqualFold(k, "completion_tokens") || strings.EqualFold(k, "total_tokens") ||
				strings.EqualFold(k, "num_cached_tokens") {
				return usage{}, false
			}
		}
		if dst != nil {
			v, ok := parseUint(obj[vs:ve])
			if !ok {
				return usage{}, false
			}
			*dst = v
		}
		i = skipSpace(obj, ve)
		if i >= len(obj) {
			return usage{}, false
		}
		switch obj[i] {
		case '}':
			return u, true
		case ',':
			i = skipSpace(obj, i+1)
		default:
			return usage{}, false
		}
	}
	return usage{}, false
}
