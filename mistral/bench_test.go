package mistral_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

func benchClient(b *testing.B, keys int) (*mistral.Client, *sandbox.Server, mistral.Secret) {
	sb := sandbox.New(sandbox.Options{MaxEvents: 10000})
	var plain string
	for i := 0; i < keys; i++ {
		k, err := sb.AddKey(fmt.Sprintf("key-%05d", i), "", nil)
		if err != nil {
			b.Fatal(err)
		}
		plain = k.Plaintext
	}
	ts := httptest.NewServer(sb)
	b.Cleanup(ts.Close)
	c, err := mistral.New(mistral.Options{BaseURL: ts.URL, AdminKey: mistral.Secret(sb.AdminKey()), HTTPClient: ts.Client()})
	if err != nil {
		b.Fatal(err)
	}
	return c, sb, mistral.Secret(plain)
}

// BenchmarkClientListModels is the key-verification call over real HTTP.
func BenchmarkClientListModels(b *testing.B) {
	c, _, k := benchClient(b, 100)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.ListModels(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkClientChat is one chat completion over real HTTP.
func BenchmarkClientChat(b *testing.B) {
	c, _, k := benchClient(b, 100)
	ctx := context.Background()
	req := mistral.ChatRequest{Model: "mistral-small-latest", Messages: []mistral.Message{{Role: "user", Content: "Summarise the report."}}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.ChatCompletion(ctx, k, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkClientListAllKeys lists every key of an organization (pages of 100).
func BenchmarkClientListAllKeys(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			c, sb, _ := benchClient(b, n)
			ctx := context.Background()
			sb.ResetStats()
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				keys, err := c.ListAllKeys(ctx, "")
				if err != nil || len(keys) != n {
					b.Fatalf("%d keys, %v", len(keys), err)
				}
			}
			b.ReportMetric(float64(sb.Stats()["GET /v1/admin/api-keys"])/float64(b.N), "calls/op")
		})
	}
}
