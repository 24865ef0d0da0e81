package audit

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/config"
	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/mistral"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/file"
)

// bigOrg seeds nKeys keys across nWS workspaces, all declared: every
// workspace has one managed key (its record in the store) and the rest are
// undeclared, recently used keys.
func bigOrg(tb testing.TB, nKeys, nWS int) (*sandbox.Server, *Job) {
	tb.Helper()
	seed := &sandbox.Seed{Now: "2026-11-27T02:30:00Z"}
	cfg := &config.Config{}
	for w := range nWS {
		name := fmt.Sprintf("ws-%02d", w)
		seed.Workspaces = append(seed.Workspaces, sandbox.SeedWorkspace{UUID: fmt.Sprintf("b0000000-0000-4000-8000-%012d", w), Name: name})
		cfg.Workspaces = append(cfg.Workspaces, config.Workspace{Name: name})
		cfg.Keys = append(cfg.Keys, config.Key{Name: fmt.Sprintf("app-%02d", w), Workspace: name,
			Store: config.KeyStore{Backend: "file", Path: fmt.Sprintf("mistral/app-%02d", w)}})
	}
	for i := range nKeys {
		w := i % nWS
		k := sandbox.SeedKey{KeyID: fmt.Sprintf("a0000000-0000-4000-8000-%012d", i), Name: fmt.Sprintf("script-%05d", i),
			Workspace: fmt.Sprintf("ws-%02d", w), CreatedAt: "2026-10-01T00:00:00Z", LastUsed: "2026-11-26"}
		if i < nWS {
			k.Name = fmt.Sprintf("app-%02d-20261101-%08x", w, i)
		}
		seed.Keys = append(seed.Keys, k)
	}
	if err := seed.Validate(); err != nil {
		tb.Fatal(err)
	}
	sb, client, _ := platform(tb, seed)
	st, err := file.New(filepath.Join(tb.TempDir(), "secrets"))
	if err != nil {
		tb.Fatal(err)
	}
	for w := range nWS {
		_, err := st.Write(context.Background(), secrets.WriteRequest{Target: secrets.Target{Path: fmt.Sprintf("mistral/app-%02d", w)},
			Record: secrets.Record{APIKey: "unused-in-this-test", KeyID: fmt.Sprintf("a0000000-0000-4000-8000-%012d", w), KeyName: fmt.Sprintf("app-%02d", w)}})
		if err != nil {
			tb.Fatal(err)
		}
	}
	now := time.Date(2026, 11, 27, 2, 30, 0, 0, time.UTC)
	return sb, &Job{Config: cfg, Platform: client, Records: StoreRecords{Stores: map[string]secrets.Store{"file": st}},
		Now: func() time.Time { return now }}
}

// adminCalls counts the admin API calls in a sandbox's stats.
func adminCalls(sb *sandbox.Server) (total, keyPages, wsPages int64) {
	for route, n := range sb.Stats() {
		switch route {
		case "GET /v1/admin/api-keys":
			keyPages = n
		case "GET /v1/admin/workspaces":
			wsPages = n
		}
		total += n
	}
	return total, keyPages, wsPages
}

func TestAuditPagingMinimalCalls(t *testing.T) {
	cases := []struct {
		keys, workspaces int
	}{
		{keys: 2500, workspaces: 30},
		{keys: 99, workspaces: 3},
		{keys: 100, workspaces: 1},
		{keys: 1, workspaces: 1},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%d keys in %d workspaces", c.keys, c.workspaces), func(t *testing.T) {
			sb, j := bigOrg(t, c.keys, c.workspaces)
			sb.ResetStats()
			res, err := j.Run(context.Background(), jobs.Request{RunID: 1})
			if err != nil {
				t.Fatal(err)
			}
			rep := res.Details.(*Report)
			if rep.Keys != c.keys {
				t.Fatalf("audited %d keys, want %d", rep.Keys, c.keys)
			}
			undeclared := max(c.keys-c.workspaces, 0)
			if rep.Counts[KindUndeclared] != undeclared || len(rep.Findings) != undeclared {
				t.Fatalf("findings = %v, want %d undeclared only", rep.Counts, undeclared)
			}
			// One unfiltered listing covers every workspace: pages of 100 until an
			// empty page (a server may serve short pages before the end), plus
			// one workspace page (31 workspaces fit in 100) and its empty one.
			total, keyPages, wsPages := adminCalls(sb)
			wantKeyPages := int64((c.keys+mistral.ListPageSize-1)/mistral.ListPageSize + 1)
			if keyPages != wantKeyPages || wsPages != 2 || total != wantKeyPages+2 {
				t.Fatalf("API calls: %d total, %d key pages, %d workspace pages; want %d, %d, 2 (stats %v)",
					total, keyPages, wsPages, wantKeyPages+2, wantKeyPages, sb.Stats())
			}
		})
	}
}

// BenchmarkAudit2500 audits 2,500 keys across 30 workspaces against the
// sandbox over real HTTP, reporting the admin API calls per audit.
func BenchmarkAudit2500(b *testing.B) { benchAudit(b, 2500, 30) }

// BenchmarkAudit250 is the same audit at a tenth of the size, for the
// scaling ratio.
func BenchmarkAudit250(b *testing.B) { benchAudit(b, 250, 30) }

func benchAudit(b *testing.B, keys, workspaces int) {
	sb, j := bigOrg(b, keys, workspaces)
	sb.ResetStats()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := j.Run(ctx, jobs.Request{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	total, keyPages, _ := adminCalls(sb)
	b.ReportMetric(float64(total)/float64(b.N), "api-calls/op")
	b.ReportMetric(float64(keyPages)/float64(b.N), "key-pages/op")
}
