package postgres

import (
	"errors"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	inner := errors.New(`connect: user "app" password "hunter2-long" refused`)
	for _, tc := range []struct {
		name, secret string
		wantSame     bool
	}{
		{"secret quoted", "hunter2-long", false},
		{"secret absent", "other-secret", true},
		{"no secret", "", true},
	} {
		got := redact(inner, tc.secret)
		if tc.wantSame != (got == inner) {
			t.Errorf("%s: redact returned %v", tc.name, got)
		}
		if tc.secret != "" && strings.Contains(got.Error(), tc.secret) {
			t.Errorf("%s: %q still holds the secret", tc.name, got)
		}
		if !errors.Is(got, inner) {
			t.Errorf("%s: the cause is lost", tc.name)
		}
	}
}
