package gateway

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// The request and answer bodies are scanned, not decoded: the gateway needs
// three top-level fields of a request (model, max_tokens, stream) and the
// usage object of an answer, and a full encoding/json decode of either was
// the largest part of the gateway's own CPU per request. The scanners work
// on documents json.Valid accepted (requests) or fall back to encoding/json
// whenever the input is anything but the plain common case, so their
// results are those of a decode.

// reqField is the raw value of one top-level field of a request.
type reqField struct {
	present bool
	val     []byte // the raw JSON value
}

// reqFields are the top-level fields the gateway reads of a request.
type reqFields struct {
	model, maxTokens, stream, n reqField
}

// scanErr is why a request body was refused (the 400 message).
type scanErr string

// scanRequest finds the top-level model, max_tokens and stream values of a
// JSON object. The body must be valid JSON (json.Valid). Keys are matched
// exactly, after unescaping; a key that differs from one of the three only
// in case, or one of the three given twice, is refused: parsers disagree on
// those (encoding/json matches keys case-insensitively and keeps the last
// duplicate, others keep the first or match exactly), and the gateway must
// check the same model and max_tokens the upstream will use.
func scanRequest(body []byte) (reqFields, scanErr) {
	var f reqFields
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return f, "request body must be a JSON object"
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return f, ""
	}
	for i < len(body) {
		// key
		ks := i
		ke := skipString(body, ks)
		k, ok := jsonString(body[ks:ke])
		if !ok {
			return f, "request body is not valid JSON"
		}
		i = skipSpace(body, ke)
		i = skipSpace(body, i+1) // ':'
		vs := i
		ve := skipValue(body, vs)
		var dst *reqField
		switch k {
		case "model":
			dst = &f.model
		case "max_tokens":
			dst = &f.maxTokens
		case "stream":
			dst = &f.stream
		case "n":
			dst = &f.n
		default:
			if strings.EqualFold(k, "model") || strings.EqualFold(k, "max_tokens") || strings.EqualFold(k, "stream") || k == "N" {
				return f, scanErr("key " + quoteKey(k) + " is ambiguous: write it in lower case")
			}
		}
		if dst != nil {
			if dst.present {
				return f, scanErr("key " + k + " appears more than once")
			}
			*dst = reqField{present: true, val: body[vs:ve]}
		}
		i = skipSpace(body, ve)
		if i >= len(body) || body[i] == '}' {
			break
		}
		i = skipSpace(body, i+1) // ','
	}
	return f, ""
}

// jsonString is the value of the JSON string literal v (quotes included).
// Without escapes or invalid UTF-8 it views v's bytes, without copying;
// otherwise it is decoded by encoding/json (which replaces invalid UTF-8).
func jsonString(v []byte) (string, bool) {
	s := v[1 : len(v)-1]
	if indexByte(s, '\\') < 0 && utf8.Valid(s) {
		return unsafeString(s), true
	}
	return decodeString(v)
}

// decodeString decodes a JSON string literal with encoding/json.
func decodeString(v []byte) (string, bool) {
	var s string
	err := json.Unmarshal(v, &s)
	return s, err == nil
}

// quoteKey quotes a key for an error message, bounded.
func quoteKey(k string) string {
	b, _ := json.Marshal(truncate(k, 40))
	return string(b)
}

// skipSpace returns the index of the first non-space byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipString returns the index just past the JSON string starting at b[i]
// (a quote).
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the JSON value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && !isSpace(b[j]) {
			j++
		}
		return j
	}
}

// unsafeString views b as a string without copying; b must not change
// while the string is in use.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// parseUint parses a JSON number that is a plain non-negative integer
// (digits only, no sign, fraction or exponent) fitting an int64.
func parseUint(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if v > (1<<63-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// jsonKind names a raw JSON value's type as encoding/json's
// UnmarshalTypeError does.
func jsonKind(v []byte) string {
	if len(v) == 0 {
		return "value"
	}
	switch v[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// decodeRequest fills req from the scanned fields with encoding/json's
// meaning of each value, or says why the body is refused.
func decodeRequest(f reqFields, req *chatRequest) scanErr {
	if f.model.present {
		v := f.model.val
		switch {
		case v[0] == '"':
			m, ok := jsonString(v)
			if !ok {
				return "request body is not valid JSON"
			}
			req.Model = strings.Clone(m)
		case v[0] == 'n': // null leaves the field unset, as in encoding/json
		default:
			return scanErr("field model has the wrong type (" + jsonKind(v) + ")")
		}
	}
	if f.maxTokens.present {
		v := f.maxTokens.val
		req.MaxTokens.set = true
		if v[0] == 'n' {
			req.MaxTokens.null = true
		} else {
			n, ok := parseUint(v)
			if !ok {
				return "max_tokens must be a non-negative integer"
			}
			if n == 0 {
				// The platform's meaning of 0 is undocumented; if it meant
				// "no limit" the gateway could not bound the answer.
				return "max_tokens must be at least 1"
			}
			req.MaxTokens.v = n
		}
	}
	if f.n.present {
		v := f.n.val
		req.N.set = true
		if v[0] == 'n' {
			req.N.null = true
		} else {
			n, ok := parseUint(v)
			if !ok || n < 1 {
				return "n must be an integer of at least 1"
			}
			req.N.v = n
		}
	}
	if f.stream.present {
		switch v := f.stream.val; v[0] {
		case 't':
			req.Stream = true
		case 'f', 'n':
			req.Stream = false
		default:
			return scanErr("field stream has the wrong type (" + jsonKind(v) + ")")
		}
	}
	return ""
}
