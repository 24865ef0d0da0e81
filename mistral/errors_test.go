package mistral

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseAPIErrorBodies(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		sentinel   error
		message    string
		requestID  string
		typ, code  string
		details    []string
		retryAfter time.Duration
		retryable  bool
	}{
		{name: "401 message and request_id", status: 401, body: `{"message": "Unauthorized", "request_id": "req-123"}`,
			sentinel: ErrUnauthorized, message: "Unauthorized", requestID: "req-123"},
		{name: "401 detail string", status: 401, body: `{"detail": "Unauthorized"}`, sentinel: ErrUnauthorized, message: "Unauthorized"},
		{name: "401 empty body", status: 401, body: ``, sentinel: ErrUnauthorized, message: "Unauthorized"},
		{name: "403 no body", status: 403, body: ``, sentinel: ErrForbidden, message: "Forbidden"},
		{name: "403 whitespace body", status: 403, body: " \n", sentinel: ErrForbidden, message: "Forbidden"},
		{name: "404 detail", status: 404, body: `{"detail": "API key not found"}`, sentinel: ErrNotFound, message: "API key not found"},
		{name: "422 detail list", status: 422,
			body:     `{"detail": [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}, {"loc": ["body", "messages", 0, "role"], "msg": "bad role", "type": "literal_error", "input": "secret-input"}]}`,
			sentinel: ErrValidation, details: []string{"body.name: Field required (missing)", "body.messages.0.role: bad role (literal_error)"}},
		{name: "422 wrapped", status: 422,
			body:     `{"object": "error", "message": {"detail": [{"loc": ["body", "foo"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]}, "type": "invalid_request_error", "param": null, "code": null}`,
			sentinel: ErrValidation, typ: "invalid_request_error", details: []string{"body.foo: Extra inputs are not permitted (extra_forbidden)"}},
		{name: "429 message", status: 429, body: `{"message": "Requests rate limit exceeded"}`, sentinel: ErrRateLimited,
			message: "Requests rate limit exceeded", retryable: true},
		{name: "429 error object with code", status: 429, body: `{"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "code": "1300"}`,
			sentinel: ErrRateLimited, message: "Rate limit exceeded", typ: "rate_limited", code: "1300", retryable: true},
		{name: "429 numeric code and retry-after seconds", status: 429, header: map[string]string{"Retry-After": "3"},
			body:     `{"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "code": 1300}`,
			sentinel: ErrRateLimited, message: "Rate limit exceeded", typ: "rate_limited", code: "1300", retryAfter: 3 * time.Second, retryable: true},
		{name: "429 retry-after http date", status: 429, header: map[string]string{"Retry-After": now.Add(7 * time.Second).Format(http.TimeFormat)},
			body: ``, sentinel: ErrRateLimited, message: "Too Many Requests", retryAfter: 7 * time.Second, retryable: true},
		{name: "429 retry-after garbage", status: 429, header: map[string]string{"Retry-After": "soon"},
			body: `{"message": "Requests rate limit exceeded"}`, sentinel: ErrRateLimited, message: "Requests rate limit exceeded", retryable: true},
		{name: "500 error object", status: 500, body: `{"object":"error","message":"Internal server error","type":"internal_server_error","param":null,"code":"500"}`,
			sentinel: ErrServer, message: "Internal server error", typ: "internal_server_error", code: "500", retryable: true},
		{name: "502 html", status: 502, body: "<html><body>\n<h1>502 Bad Gateway</h1>\n</body></html>", sentinel: ErrServer,
			message: "<html><body> <h1>502 Bad Gateway</h1> </body></html>", retryable: true},
		{name: "503 empty", status: 503, body: ``, sentinel: ErrServer, message: "Service Unavailable", retryable: true},
		{name: "400 invalid model", status: 400, body: `{"object":"error","message":"Invalid model: foo","type":"invalid_model","param":null,"code":"1500"}`,
			sentinel: ErrBadRequest, message: "Invalid model: foo", typ: "invalid_model", code: "1500"},
		{name: "400 truncated json", status: 400, body: `{"message": "oops`, sentinel: ErrBadRequest, message: "Bad Request"},
		{name: "request id header", status: 401, header: map[string]string{"x-request-id": "hdr-1"}, body: `{"detail":"Unauthorized"}`,
			sentinel: ErrUnauthorized, message: "Unauthorized", requestID: "hdr-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			e := parseAPIError(tt.status, h, []byte(tt.body), "GET", "/v1/x", now)
			if !errors.Is(e, tt.sentinel) {
				t.Errorf("errors.Is(%v, %v) = false", e, tt.sentinel)
			}
			for _, other := range []error{ErrBadRequest, ErrUnauthorized, ErrForbidden, ErrNotFound, ErrValidation, ErrRateLimited, ErrServer} {
				if other != tt.sentinel && errors.Is(e, other) {
					t.Errorf("error also matches %v", other)
				}
			}
			if e.StatusCode != tt.status || e.Method != "GET" || e.Path != "/v1/x" {
				t.Errorf("status/method/path = %d %s %s", e.StatusCode, e.Method, e.Path)
			}
			if e.Message != tt.message {
				t.Errorf("Message = %q, want %q", e.Message, tt.message)
			}
			if e.RequestID != tt.requestID || e.Type != tt.typ || e.Code != tt.code {
				t.Errorf("request_id/type/code = %q %q %q, want %q %q %q", e.RequestID, e.Type, e.Code, tt.requestID, tt.typ, tt.code)
			}
			var got []string
			for _, d := range e.Details {
				got = append(got, d.String())
			}
			if strings.Join(got, "|") != strings.Join(tt.details, "|") {
				t.Errorf("Details = %q, want %q", got, tt.details)
			}
			if e.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", e.RetryAfter, tt.retryAfter)
			}
			if Retryable(e) != tt.retryable {
				t.Errorf("Retryable = %v, want %v", Retryable(e), tt.retryable)
			}
			if strings.Contains(e.Error(), "secret-input") {
				t.Errorf("error echoes request input: %s", e)
			}
			if !strings.HasPrefix(e.Error(), "mistral: GET /v1/x: ") {
				t.Errorf("Error() = %q", e.Error())
			}
		})
	}
}

func TestParseAPIErrorScrubsKeys(t *testing.T) {
	const key = "Abcdefghijklmnopqrstuvwxyz012345"
	body := `{"message": "Key Abcdefghijklmnopqrstuvwxyz012345 is invalid", "request_id": "x", "detail": [{"loc": ["header"], "msg": "bad Abcdefghijklmnopqrstuvwxyz012345", "type": "t"}]}`
	e := parseAPIError(401, http.Header{}, []byte(body), "GET", "/v1/models", time.Now(), key)
	if strings.Contains(e.Error(), key) {
		t.Fatalf("error leaks the key: %s", e)
	}
	if !strings.Contains(e.Error(), Redacted) {
		t.Fatalf("error lost its message: %s", e)
	}
}

// A plain-text body is cut to an excerpt; a key sent that straddles the cut
// must not survive in part.
func TestParseAPIErrorScrubsKeyAtExcerptCut(t *testing.T) {
	const key = "sk-admin-a1b2c3d4e5f6g7h8i9j0k1l2m3n4"
	for pad := 170; pad <= 200; pad++ {
		body := strings.Repeat("x ", pad/2) + strings.Repeat("y", pad%2) + "rejected: Bearer " + key + " </html>"
		e := parseAPIError(502, http.Header{}, []byte(body), "GET", "/v1/admin/api-keys", time.Now(), "", key)
		for n := 8; n <= len(key); n++ {
			if strings.Contains(e.Error(), key[:n]) {
				t.Fatalf("pad %d: error keeps %d characters of the key: %s", pad, n, e)
			}
		}
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{err: nil, want: false},
		{err: &APIError{StatusCode: 429, Kind: KindRateLimited}, want: true},
		{err: &APIError{StatusCode: 503, Kind: KindServer}, want: true},
		{err: &APIError{StatusCode: 408, Kind: KindBadRequest}, want: true},
		{err: &APIError{StatusCode: 401, Kind: KindUnauthorized}, want: false},
		{err: &APIError{StatusCode: 422, Kind: KindValidation}, want: false},
		{err: &TransportError{Method: "GET", Path: "/", Err: errors.New("EOF")}, want: true},
		{err: errors.New("plain"), want: false},
	}
	for _, tt := range tests {
		if got := Retryable(tt.err); got != tt.want {
			t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestScrubKeyLike(t *testing.T) {
	tests := []struct{ in, want string }{
		{in: "bad key o0L6gD5akIpCn2YSiEJXGeK6fiZzjwNI here", want: "bad key [REDACTED] here"},
		{in: "Invalid model: mistral-medium-latest-2508", want: "Invalid model: mistral-medium-latest-2508"},
		{in: "abcdefghijklmnopqrstuvwxyzabcdef only letters", want: "abcdefghijklmnopqrstuvwxyzabcdef only letters"},
		{in: "short Ab12", want: "short Ab12"},
	}
	for _, tt := range tests {
		if got := scrubKeyLike(tt.in); got != tt.want {
			t.Errorf("scrubKeyLike(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestValidationShapesOnce: the three 422 bodies seen from the platform
// (the spec's detail list, the list wrapped in an error object, and the
// list sent as the JSON text of the message), and one carrying the list
// twice, each give every detail once, in the message too.
func TestValidationShapesOnce(t *testing.T) {
	const list = `[{"loc": ["body", "model"], "msg": "Field required", "type": "missing"}, {"loc": ["body", "messages", 0, "user", "name"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]`
	quoted := strings.ReplaceAll(list, `"`, `\"`)
	tests := []struct {
		name, body string
	}{
		{name: "detail list", body: `{"detail": ` + list + `}`},
		{name: "wrapped", body: `{"object": "error", "message": {"detail": ` + list + `}, "type": "invalid_request_error", "param": null, "code": null}`},
		{name: "message as JSON text", body: `{"object": "error", "message": "{\"detail\": ` + quoted + `}", "type": "invalid_request_error", "param": null, "code": null}`},
		{name: "list twice", body: `{"message": {"detail": ` + list + `}, "detail": ` + list + `}`},
	}
	want := []string{"body.model: Field required (missing)", "body.messages.0.user.name: Extra inputs are not permitted (extra_forbidden)"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := parseAPIError(422, http.Header{}, []byte(tt.body), "POST", "/v1/chat/completions", time.Now())
			var got []string
			for _, d := range e.Details {
				got = append(got, d.String())
			}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("Details = %q, want %q", got, want)
			}
			msg := e.Error()
			for _, w := range want {
				if n := strings.Count(msg, w); n != 1 {
					t.Errorf("%q appears %d times in %q", w, n, msg)
				}
			}
			if !errors.Is(e, ErrValidation) || strings.Contains(msg, "{") {
				t.Errorf("error = %q", msg)
			}
		})
	}
}
