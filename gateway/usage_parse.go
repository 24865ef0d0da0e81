package gateway

import (
	"bytes"
	"encoding/json"
)

// findUsage returns the usage object of a JSON answer or chunk. It looks
// for the last "usage" key and decodes only its object (answers put usage
// last, after the possibly long content); when that fails it falls back
// to decoding the whole document.
func findUsage(doc []byte) (usage, bool) {
	if obj := usageObject(doc); obj != nil {
		var u usage
		if json.Unmarshal(obj, &u) == nil {
			return u, true
		}
	}
	var w struct {
		Usage *usage `json:"usage"`
	}
	if json.Unmarshal(doc, &w) == nil && w.Usage != nil {
		return *w.Usage, true
	}
	return usage{}, false
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
