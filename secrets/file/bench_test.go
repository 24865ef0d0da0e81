package file

import (
	"context"
	"strconv"
	"testing"

	"github.com/mrbacd/mrbacd/secrets"
)

func benchStore(b *testing.B) (*Store, secrets.Target, secrets.Version) {
	b.Helper()
	s, err := New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	tg := secrets.Target{Path: "bench/key"}
	v, err := s.Write(context.Background(), secrets.WriteRequest{Target: tg, Record: secrets.Record{APIKey: "sk-bench", KeyID: "k0"}})
	if err != nil {
		b.Fatal(err)
	}
	return s, tg, v
}

// BenchmarkRead measures one Read (open, ownership check, JSON decode).
func BenchmarkRead(b *testing.B) {
	s, tg, _ := benchStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Read(ctx, tg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite measures one compare-and-set Write (flock, read, temp file,
// fsync, rename, directory fsync).
func BenchmarkWrite(b *testing.B) {
	s, tg, v := benchStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		var err error
		v, err = s.Write(ctx, secrets.WriteRequest{Target: tg, IfVersion: v,
			Record: secrets.Record{APIKey: "sk-bench", KeyID: "k" + strconv.Itoa(i)}})
		if err != nil {
			b.Fatal(err)
		}
	}
}
