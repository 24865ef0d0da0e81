package gateway

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkProxyPlain and BenchmarkProxyStream measure one whole proxied
// chat request closed loop, in process: the handler is called directly
// (no client-side HTTP hop), the upstream is the real sandbox over
// loopback HTTP. ns/op and allocs/op cover the whole process (handler,
// transport and the sandbox serving the request), so they are stable
// figures to compare gateway versions; the "bare" sub-benchmark runs the
// same request through a plain httputil.ReverseProxy with the gateway's
// transport (no checks, no accounting), so gateway minus bare is the cost
// of the gateway's rules, accounting and metrics.
func BenchmarkProxyPlain(b *testing.B) { benchProxy(b, false) }

// BenchmarkProxyStream is BenchmarkProxyPlain with "stream": true.
func BenchmarkProxyStream(b *testing.B) { benchProxy(b, true) }

func benchProxy(b *testing.B, stream bool) {
	be := newBenchEnv(b)
	be.gw.onOverhead = nil // the load benchmarks' hook; not part of a request's cost
	body := []byte(chatBody("mistral-small-latest", 16, stream, "How fast is this gateway?"))
	bare := be.bareHandler(b)
	for _, c := range []struct {
		name  string
		h     http.Handler
		token string
	}{{name: "gateway", h: be.gw, token: be.tokens["bench"]}, {name: "bare", h: bare, token: be.upKey}} {
		b.Run(c.name, func(b *testing.B) {
			auth := "Bearer " + c.token
			rd := bytes.NewReader(body)
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(body)
				req := httptest.NewRequest(http.MethodPost, pathChat, rd)
				req.Header.Set("Authorization", auth)
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				c.h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
				}
			}
		})
	}
}
