package mistral

import (
	"net/http"
	"testing"
	"time"
)

// FuzzParseErrorAndUsage checks that no server body makes the error or
// usage parsers panic. The seeds run as a normal test.
func FuzzParseErrorAndUsage(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `{"detail": "Unauthorized"}`, `{"message": {"detail": [{"loc": [1, "a"], "msg": "m"}]}}`,
		`{"detail": [null, 1, "x", {"loc": null}]}`, `{"message": {"message": {"message": {"message": {"detail": "deep"}}}}}`,
		`{"completion": {"models": {"m": {"input": [{"value": "12"}, 3, [4]], "output": {"tokens": 1}}}}}`,
		`{"prices": [{"model": 1}, {"model": "m", "input_price": "0.2"}], "chat": [{"model": "m", "prompt_tokens": 1e30}]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		e := parseAPIError(429, http.Header{"Retry-After": {body}}, []byte(body), "GET", "/v1/x", time.Now(), "k")
		if e.Error() == "" || e.Kind != KindRateLimited {
			t.Fatalf("bad error %#v", e)
		}
		_, _ = ParseUsage([]byte(body))
	})
}
