package mistral

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// Redacted is what a Secret prints instead of its value.
const Redacted = "[REDACTED]"

// Secret is a plaintext API key. It redacts itself in fmt (every verb),
// slog and JSON encoding; only Reveal returns the value.
type Secret string

// Reveal returns the plaintext. Call it only where the key is sent or stored.
func (s Secret) Reveal() string { return string(s) }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s == "" }

// String returns Redacted, or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString redacts the value for %#v.
func (s Secret) GoString() string { return "mistral.Secret(" + strconv.Quote(s.String()) + ")" }

// Format redacts the value for every fmt verb.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		_, _ = io.WriteString(f, strconv.Quote(s.String()))
	case 'v':
		if f.Flag('#') {
			_, _ = io.WriteString(f, s.GoString())
			return
		}
		_, _ = io.WriteString(f, s.String())
	default:
		_, _ = io.WriteString(f, s.String())
	}
}

// LogValue redacts the value in slog records.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON writes Redacted (or null when empty), so a Secret marshalled
// by accident (a journal, a log) never carries the key.
func (s Secret) MarshalJSON() ([]byte, error) {
	if s == "" {
		return []byte("null"), nil
	}
	return []byte(strconv.Quote(Redacted)), nil
}

// UnmarshalJSON reads a JSON string or null (the "key" field of a Key).
func (s *Secret) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*s = ""
		return nil
	}
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("secret: want a JSON string or null")
	}
	*s = Secret(v)
	return nil
}
