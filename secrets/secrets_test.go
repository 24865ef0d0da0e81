package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestEncodeDecode(t *testing.T) {
	rec := Record{APIKey: "sk-secret-value", KeyID: "kid", KeyName: "dev-team-key-20261127-ab12",
		CreatedAt: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), RotationID: "rot-1"}
	for _, f := range []Format{FormatJSON, FormatRaw} {
		t.Run(fmt.Sprint(f), func(t *testing.T) {
			b, err := Encode(f, rec)
			if err != nil {
				t.Fatal(err)
			}
			if f == FormatRaw && string(b) != rec.APIKey {
				t.Fatalf("raw value = %q, want the bare key", b)
			}
			got, err := Decode(f, b, rec.Metadata())
			if err != nil || got != rec {
				t.Fatalf("Decode = %v, %v; want %v", got, err, rec)
			}
		})
	}
}

func TestNoKeyInTextForms(t *testing.T) {
	rec := Record{APIKey: "sk-secret-value", KeyID: "kid", RotationID: "rot"}
	v := Versioned{Record: rec, Version: "3"}
	forms := []string{rec.String(), fmt.Sprint(rec), fmt.Sprintf("%v %+v %#v %s", rec, rec, rec, rec), fmt.Sprintf("%v", v)}
	for k, val := range rec.Metadata() {
		forms = append(forms, k+"="+val)
	}
	_, err := Decode(FormatJSON, []byte("sk-secret-value"), nil)
	if err == nil {
		t.Fatal("Decode of a non-JSON value succeeded")
	}
	forms = append(forms, err.Error())
	// slog: a JSON handler marshals structs unless they are LogValuers.
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&logs, nil), slog.NewTextHandler(&logs, nil)} {
		slog.New(h).Info("record", "record", rec, "versioned", v)
	}
	if !strings.Contains(logs.String(), "kid") {
		t.Fatalf("log lines lack the key id: %s", logs.String())
	}
	forms = append(forms, logs.String())
	for _, s := range forms {
		if strings.Contains(s, "sk-secret-value") {
			t.Errorf("key leaked in %q", s)
		}
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{err: fmt.Errorf("vault: read x: %w", ErrUnavailable), want: true},
		{err: fmt.Errorf("%w: %w", ErrUnavailable, errors.New("dial tcp: refused")), want: true},
		{err: ErrNotFound, want: false},
		{err: ErrConflict, want: false},
		{err: ErrPermissionDenied, want: false},
		{err: nil, want: false},
	}
	for _, tc := range tests {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
