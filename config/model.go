package config

import "strings"

// ValidModelPattern reports whether p is a model name, "*", or a prefix
// followed by one trailing "*" (e.g. "mistral-*"). Names use letters,
// digits and . _ - : / only.
func ValidModelPattern(p string) bool {
	if p == "*" {
		return true
	}
	name := strings.TrimSuffix(p, "*")
	if name == "" || len(name) > 128 {
		return false
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '.', r == '_', r == '-', r == ':', r == '/':
		default:
			return false
		}
	}
	return true
}

// MatchModel reports whether model matches pattern: "*" matches every
// model, "prefix*" every model starting with prefix, anything else itself.
func MatchModel(pattern, model string) bool {
	if pattern == "*" {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(model, prefix)
	}
	return pattern == model
}
