package sandbox_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// benchServe measures the handler alone (no network): one request per op.
func benchServe(b *testing.B, sb *sandbox.Server, method, path, auth, body string) {
	b.Helper()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var req *http.Request
			if body != "" {
				req = httptest.NewRequest(method, path, strings.NewReader(body))
			} else {
				req = httptest.NewRequest(method, path, nil)
			}
			req.Header.Set("Authorization", "Bearer "+auth)
			w := httptest.NewRecorder()
			sb.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
	})
}

func benchSandbox(b *testing.B, keys int) (*sandbox.Server, string) {
	sb := sandbox.New(sandbox.Options{MaxEvents: 10000})
	var plain string
	for i := 0; i < keys; i++ {
		k, err := sb.AddKey(fmt.Sprintf("key-%05d", i), "", nil)
		if err != nil {
			b.Fatal(err)
		}
		plain = k.Plaintext
	}
	return sb, plain
}

func BenchmarkModels(b *testing.B) {
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			sb, k := benchSandbox(b, n)
			benchServe(b, sb, "GET", "/v1/models", k, "")
		})
	}
}

func BenchmarkChat(b *testing.B) {
	sb, k := benchSandbox(b, 100)
	benchServe(b, sb, "POST", "/v1/chat/completions", k, `{"model":"mistral-small-latest","messages":[{"role":"user","content":"Summarise the quarterly report in three bullet points."}],"max_tokens":64}`)
}

func BenchmarkChatStream(b *testing.B) {
	sb, k := benchSandbox(b, 100)
	benchServe(b, sb, "POST", "/v1/chat/completions", k, `{"model":"mistral-small-latest","messages":[{"role":"user","content":"Summarise the quarterly report in three bullet points."}],"max_tokens":64,"stream":true}`)
}

func BenchmarkEmbeddings(b *testing.B) {
	sb, k := benchSandbox(b, 100)
	benchServe(b, sb, "POST", "/v1/embeddings", k, `{"model":"mistral-embed","input":["one","two","three"]}`)
}

func BenchmarkListKeysPage(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			sb, _ := benchSandbox(b, n)
			benchServe(b, sb, "GET", "/v1/admin/api-keys?limit=100&offset=0", sb.AdminKey(), "")
		})
	}
}

func BenchmarkCreateKey(b *testing.B) {
	sb, _ := benchSandbox(b, 0)
	ws, user := sb.Workspaces()[0].UUID, sb.Users()[0].ID
	benchServe(b, sb, "POST", "/v1/admin/api-keys", sb.AdminKey(), fmt.Sprintf(`{"name":"bench","workspace_uuid":%q,"user_id":%q}`, ws, user))
}

// BenchmarkHTTPModels goes over real HTTP on 127.0.0.1 (keep-alive).
func BenchmarkHTTPModels(b *testing.B) {
	sb, k := benchSandbox(b, 100)
	ts := httptest.NewServer(sb)
	defer ts.Close()
	client := ts.Client()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", ts.URL+"/v1/models", nil)
			req.Header.Set("Authorization", "Bearer "+k)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 4096)
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					break
				}
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}
