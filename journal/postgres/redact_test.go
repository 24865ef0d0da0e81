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
		{name: "secret quoted", secret: "hunter2-long", wantSame: false},
		{name: "secret absent", secret: "other-secret", wantSame: true},
		{name: "no secret", secret: "", wantSame: true},
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
