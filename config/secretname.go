package config

import "strings"

// secretPrefixes start values that are secrets, not names or paths: Slack
// tokens, Vault tokens, common API key prefixes, JWTs, AWS access key ids.
var secretPrefixes = []string{"xoxb-", "xoxp-", "xoxa-", "xoxe-", "xapp-", "hvs.", "hvb.", "hvr.", "sk-", "ghp_", "github_pat_", "eyJ", "AKIA", "ASIA"}

// looksLikeSecret reports whether the value of a *_file or *_env field
// (file says which) is more likely a secret pasted by mistake than a file
// path or a variable name: a URL, a known secret prefix, or a run of 20 or
// more letters and digits mixing both (a Mistral key is 32 of them) — in a
// variable name anywhere, in a path only when it has no directory part.
// Callers must not echo the value.
func looksLikeSecret(v string, file bool) bool {
	v = strings.TrimSpace(v)
	if v == "" {
		return false
	}
	if strings.Contains(v, "://") || strings.ContainsAny(v, " \t\r\n") && !file {
		return true
	}
	for _, p := range secretPrefixes {
		if strings.HasPrefix(v, p) && len(v) >= len(p)+16 {
			return true
		}
	}
	if file && strings.Contains(v, "/") {
		return false
	}
	return hasKeyRun(v)
}

// hasKeyRun reports whether s holds 20 or more consecutive ASCII letters
// and digits with at least one of each and, for an all-upper-case run (a
// variable name style), at least as many digits as a random key would
// have (a quarter).
func hasKeyRun(s string) bool {
	run, letters, digits, lower := 0, 0, 0, 0
	check := func() bool {
		if run < 20 || letters == 0 || digits == 0 {
			return false
		}
		return lower > 0 || digits*4 >= run
	}
	for i := 0; i <= len(s); i++ {
		var c byte
		if i < len(s) {
			c = s[i]
		}
		switch {
		case c >= '0' && c <= '9':
			run++
			digits++
		case c >= 'a' && c <= 'z':
			run++
			letters++
			lower++
		case c >= 'A' && c <= 'Z':
			run++
			letters++
		default:
			if check() {
				return true
			}
			run, letters, digits, lower = 0, 0, 0, 0
		}
	}
	return false
}

// secretNameMessage is the problem for a *_file / *_env value that looks
// like a secret; it never quotes the value.
func secretNameMessage(field string) string {
	if strings.HasSuffix(field, "_env") {
		return "this looks like a secret, not the name of an environment variable: put the secret in the environment and give the variable's name here (the value is not shown)"
	}
	return "this looks like a secret, not a file path: put the secret in a file and give its path here (the value is not shown)"
}
