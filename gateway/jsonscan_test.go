package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// refRequest is the gateway's former request decoding (encoding/json into
// a struct), the reference the scanner must agree with on every body it
// accepts.
type refRequest struct {
	Model     string          `json:"model"`
	MaxTokens json.RawMessage `json:"max_tokens"`
	Stream    bool            `json:"stream"`
}

// scanChat runs the whole request path of parseRequest without a writer.
func scanChat(body string) (chatRequest, string) {
	var req chatRequest
	if !json.Valid([]byte(body)) {
		return req, "request body is not valid JSON"
	}
	f, msg := scanRequest([]byte(body))
	if msg == "" {
		msg = decodeRequest(f, &req)
	}
	return req, string(msg)
}

// agree checks an accepted body against encoding/json's reading of it.
func agree(t *testing.T, body string, got chatRequest) {
	t.Helper()
	var ref refRequest
	if err := json.Unmarshal([]byte(body), &ref); err != nil {
		t.Fatalf("scanner accepted %q, encoding/json refused it: %v", body, err)
	}
	if got.Model != ref.Model || got.Stream != ref.Stream {
		t.Fatalf("%q: scanner model %q stream %v, encoding/json %q %v", body, got.Model, got.Stream, ref.Model, ref.Stream)
	}
	switch raw := string(ref.MaxTokens); {
	case raw == "" || raw == "null":
		if got.MaxTokens.v != 0 || (raw == "null") != got.MaxTokens.null {
			t.Fatalf("%q: scanner max_tokens %+v, encoding/json %q", body, got.MaxTokens, raw)
		}
	default:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || n != got.MaxTokens.v || !got.MaxTokens.set {
			t.Fatalf("%q: scanner max_tokens %+v, encoding/json %q", body, got.MaxTokens, raw)
		}
	}
}

func TestScanRequest(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		model     string
		maxTokens int64
		set, null bool
		stream    bool
		err       string // substring of the refusal; "" when accepted
	}{
		{name: "plain", body: `{"model":"m","max_tokens":16,"stream":true,"messages":[]}`, model: "m", maxTokens: 16, set: true, null: false, stream: true, err: ""},
		{name: "spaces", body: " \n{ \"model\" :\t\"m\" , \"max_tokens\" : 7 ,\"stream\":false } ", model: "m", maxTokens: 7, set: true, null: false, stream: false, err: ""},
		{name: "zero max_tokens", body: `{"model":"m","max_tokens":0}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "max_tokens must be at least 1"},
		{name: "empty object", body: `{}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: ""},
		{name: "null max_tokens", body: `{"model":"m","max_tokens":null}`, model: "m", maxTokens: 0, set: true, null: true, stream: false, err: ""},
		{name: "null model and stream", body: `{"model":null,"stream":null}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: ""},
		{name: "escaped key", body: `{"mod\u0065l":"m","max_\u0074okens":7}`, model: "m", maxTokens: 7, set: true, null: false, stream: false, err: ""},
		{name: "escaped model", body: `{"model":"m\"x\u00e9"}`, model: "m\"xé", maxTokens: 0, set: false, null: false, stream: false, err: ""},
		{name: "invalid UTF-8 model replaced", body: "{\"model\":\"m\xff\"}", model: "m\ufffd", maxTokens: 0, set: false, null: false, stream: false, err: ""},
		{name: "nested keys ignored", body: `{"messages":[{"model":"x","max_tokens":9,"stream":true}],"tool":{"model":{"stream":1}},"model":"m"}`, model: "m", maxTokens: 0, set: false, null: false, stream: false, err: ""},
		{name: "key text inside strings", body: `{"content":"\"model\":\"x\", \"max_tokens\": 99}","model":"m"}`, model: "m", maxTokens: 0, set: false, null: false, stream: false, err: ""},
		{name: "largest max_tokens", body: `{"model":"m","max_tokens":9223372036854775807}`, model: "m", maxTokens: 1<<63 - 1, set: true, null: false, stream: false, err: ""},
		{name: "other fields of any type", body: `{"a":[1,{"b":"}"}],"c":-1.5e3,"d":true,"e":null,"model":"m"}`, model: "m", maxTokens: 0, set: false, null: false, stream: false, err: ""},
		{name: "not JSON", body: `{"model":`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "not valid JSON"},
		{name: "array", body: `[{"model":"m"}]`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "must be a JSON object"},
		{name: "string", body: `"model"`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "must be a JSON object"},
		{name: "max_tokens string", body: `{"model":"m","max_tokens":"5"}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "max_tokens must be a non-negative integer"},
		{name: "max_tokens negative", body: `{"model":"m","max_tokens":-1}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "max_tokens must be a non-negative integer"},
		{name: "max_tokens float", body: `{"model":"m","max_tokens":5.0}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "max_tokens must be a non-negative integer"},
		{name: "max_tokens exponent", body: `{"model":"m","max_tokens":1e3}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "max_tokens must be a non-negative integer"},
		{name: "max_tokens overflow", body: `{"model":"m","max_tokens":9223372036854775808}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "max_tokens must be a non-negative integer"},
		{name: "max_tokens bool", body: `{"model":"m","max_tokens":true}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "max_tokens must be a non-negative integer"},
		{name: "model number", body: `{"model":5}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "field model has the wrong type (number)"},
		{name: "model object", body: `{"model":{"id":"m"}}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "field model has the wrong type (object)"},
		{name: "stream string", body: `{"model":"m","stream":"yes"}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "field stream has the wrong type (string)"},
		{name: "stream number", body: `{"model":"m","stream":1}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "field stream has the wrong type (number)"},
		{name: "model in upper case", body: `{"model":"m","MODEL":"x"}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: `key "MODEL" is ambiguous`},
		{name: "max_tokens in mixed case", body: `{"model":"m","Max_Tokens":900}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: `key "Max_Tokens" is ambiguous`},
		{name: "stream in another case, escaped", body: `{"model":"m","\u0053tream":true}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: `key "Stream" is ambiguous`},
		{name: "model twice", body: `{"model":"m","model":"x"}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "model appears more than once"},
		{name: "max_tokens twice", body: `{"model":"m","max_tokens":1,"max_tokens":900}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "max_tokens appears more than once"},
		{name: "stream twice", body: `{"model":"m","stream":false,"stream":true}`, model: "", maxTokens: 0, set: false, null: false, stream: false, err: "stream appears more than once"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, msg := scanChat(tc.body)
			if tc.err != "" {
				if !strings.Contains(msg, tc.err) {
					t.Fatalf("refusal %q, want it to say %q", msg, tc.err)
				}
				return
			}
			if msg != "" {
				t.Fatalf("refused: %s", msg)
			}
			want := chatRequest{Model: tc.model, MaxTokens: optInt{set: tc.set, null: tc.null, v: tc.maxTokens}, Stream: tc.stream}
			if got != want {
				t.Fatalf("got %+v, want %+v", got, want)
			}
			agree(t, tc.body, got)
		})
	}
}

// FuzzScanRequest checks the scanner against encoding/json on arbitrary
// input: it never panics, and a body it accepts reads the same as
// encoding/json reads it. `go test -fuzz FuzzScanRequest ./gateway` runs it
// beyond the seeds.
func FuzzScanRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		`{"mod\u0065l":"m","x":[{"model":1}],"max_tokens":null}`,
		` { "a" : { "b" : [ "}" , "\\\"" ] } , "model" : "\u00e9" } `,
		`{"model":"m","Model":"x"}`, `[]`, `{}`, `{"stream":null}`, "{\"model\":\"\xff\"}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		got, msg := scanChat(body)
		if msg == "" {
			agree(t, body, got)
		}
	})
}

// refUsage is encoding/json's reading of a usage object.
func refUsage(obj []byte) (usage, bool) { return decodeUsage(obj) }

func TestScanUsage(t *testing.T) {
	tests := []struct {
		name string
		obj  string
		ok   bool // the fast path reads it (otherwise the caller falls back)
		want usage
	}{
		{name: "sandbox", obj: `{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28}`, ok: true, want: usage{12, 16, 28, 0}},
		{name: "spaces and extras", obj: `{ "prompt_tokens" : 1 , "prompt_audio_seconds" : null, "note":"}", "completion_tokens":2 }`, ok: true, want: usage{1, 2, 0, 0}},
		{name: "empty", obj: `{}`, ok: true, want: usage{}},
		{name: "duplicate keeps the last", obj: `{"total_tokens":1,"total_tokens":5}`, ok: true, want: usage{0, 0, 5, 0}},
		{name: "nested member", obj: `{"prompt_tokens":1,"details":{"cached":3}}`, ok: false, want: usage{}},
		{name: "other case", obj: `{"Total_Tokens":5}`, ok: false, want: usage{}},
		{name: "escaped key", obj: `{"total_\u0074okens":5}`, ok: false, want: usage{}},
		{name: "float", obj: `{"total_tokens":5.0}`, ok: false, want: usage{}},
		{name: "negative", obj: `{"total_tokens":-5}`, ok: false, want: usage{}},
		{name: "string count", obj: `{"total_tokens":"5"}`, ok: false, want: usage{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, ok := scanUsage([]byte(tc.obj))
			if ok != tc.ok || u != tc.want {
				t.Fatalf("got %+v %v, want %+v %v", u, ok, tc.want, tc.ok)
			}
			if ok {
				if ru, rok := refUsage([]byte(tc.obj)); !rok || ru != u {
					t.Fatalf("encoding/json reads %+v %v", ru, rok)
				}
			}
		})
	}
}

// FuzzFindUsage checks findUsage against encoding/json's reading of the
// object it finds: whenever the fast path answers, the answer is the same.
func FuzzFindUsage(f *testing.F) {
	for _, s := range []string{
		`{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`,
		`{"usage":{"prompt_tokens":1,"details":{"x":"}"}}}`, `{"usage":{"total_tokens":1,"total_tokens":2}}`,
		`{"usage":{"Total_Tokens":5}}`, `{"usage":{"total_tokens":tru}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		obj := usageObject([]byte(doc))
		if obj == nil {
			return
		}
		u, ok := scanUsage(obj)
		if !ok || !json.Valid(obj) {
			return
		}
		if ru, rok := refUsage(obj); !rok || ru != u {
			t.Fatalf("%s: scanner %+v, encoding/json %+v %v", obj, u, ru, rok)
		}
	})
}

// BenchmarkParseRequest compares the request scan (json.Valid, then the
// three top-level fields) with a decode by encoding/json into a struct of
// the same fields, the way the gateway read requests before.
func BenchmarkParseRequest(b *testing.B) {
	body := []byte(chatBody("mistral-small-latest", 16, true, strings.Repeat("How fast is this gateway? ", 8)))
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req chatRequest
			if !json.Valid(body) {
				b.Fatal("invalid")
			}
			f, msg := scanRequest(body)
			if msg == "" {
				msg = decodeRequest(f, &req)
			}
			if msg != "" || req.Model == "" {
				b.Fatal(msg)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req refRequest
			if err := json.Unmarshal(body, &req); err != nil || req.Model == "" {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkFindUsage compares findUsage's scan of a usage object with its
// decode by encoding/json.
func BenchmarkFindUsage(b *testing.B) {
	doc := []byte(`{"id":"cmpl-1","object":"chat.completion","created":1,"model":"mistral-small-latest","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("token ", 16) + `"},"finish_reason":"length"}],"usage":{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28}}`)
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if u, ok := findUsage(doc); !ok || u.total() != 28 {
				b.Fatal(u, ok)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if u, ok := refUsage(usageObject(doc)); !ok || u.total() != 28 {
				b.Fatal(u, ok)
			}
		}
	})
}

// TestRequestBodyLength covers both ways readBody reads a request: a
// declared Content-Length (read exactly) and a chunked body of unknown
// length (read through the body limit).
func TestRequestBodyLength(t *testing.T) {
	e := newEnv(t)
	small := chatBody("mistral-small-latest", 5, false, "hi")
	large := chatBody("mistral-small-latest", 5, false, strings.Repeat("x", 70<<10)) // limit is 64 KiB
	tests := []struct {
		name    string
		body    string
		chunked bool
		status  int
		msg     string
	}{
		{name: "declared length", body: small, chunked: false, status: 200, msg: ""},
		{name: "chunked", body: small, chunked: true, status: 200, msg: ""},
		{name: "chunked over the limit", body: large, chunked: true, status: 413, msg: "exceeds the limit"},
		{name: "declared over the limit", body: large, chunked: false, status: 413, msg: "exceeds the limit"},
		{name: "empty", body: "", chunked: false, status: 400, msg: "not valid JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rd io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				rd = io.MultiReader(rd) // hides the length: sent chunked
			}
			req, err := http.NewRequest(http.MethodPost, e.url+pathChat, rd)
			if err != nil {
				t.Fatal(err)
			}
			if tc.chunked != (req.ContentLength == 0 && tc.body != "") {
				t.Fatalf("content length %d for chunked=%v", req.ContentLength, tc.chunked)
			}
			req.Header.Set("Authorization", "Bearer "+e.tokens["analyst"])
			resp, err := testHTTP.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.msg) {
				t.Fatalf("status %d body %s; want %d saying %q", resp.StatusCode, b, tc.status, tc.msg)
			}
		})
	}
}
