package storetest_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/mrbacd/mrbacd/internal/testenv"
	"github.com/mrbacd/mrbacd/secrets"
	"github.com/mrbacd/mrbacd/secrets/awssm"
	"github.com/mrbacd/mrbacd/secrets/file"
	"github.com/mrbacd/mrbacd/secrets/vault"
)

// BenchmarkBackends compares one Read and one compare-and-set Write on each
// backend against its real server (Vault dev server, moto_server, a temp dir),
// in each value format.
//
//	go test -run '^$' -bench Backends -benchtime 200x ./secrets/storetest
func BenchmarkBackends(b *testing.B) {
	ctx := context.Background()
	backends := []struct {
		name string
		open func(b *testing.B) secrets.Store
	}{
		{name: "file", open: func(b *testing.B) secrets.Store {
			s, err := file.New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{name: "vault", open: func(b *testing.B) secrets.Store {
			v := testenv.Vault(b)
			s, err := vault.New(ctx, vault.Options{Address: v.Addr, Auth: vault.AuthOptions{Method: "token", Token: v.RootToken}})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(s.Close)
			return s
		}},
		{name: "aws", open: func(b *testing.B) secrets.Store {
			m := testenv.Moto(b)
			s, err := awssm.New(ctx, awssm.Options{Region: m.Region, Endpoint: m.Endpoint,
				Credentials: credentials.NewStaticCredentialsProvider(m.AccessKeyID, m.SecretAccessKey, "")})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	}
	formats := []struct {
		name string
		f    secrets.Format
	}{{name: "json", f: secrets.FormatJSON}, {name: "raw", f: secrets.FormatRaw}}
	for _, be := range backends {
		s := be.open(b)
		for _, f := range formats {
			tg := secrets.Target{Path: "bench/key-" + f.name, Format: f.f}
			v, err := s.Write(ctx, secrets.WriteRequest{Target: tg, Record: secrets.Record{APIKey: "sk-bench", KeyID: "k0", RotationID: "r0"}, Token: "r0"})
			if err != nil {
				b.Fatal(err)
			}
			b.Run(be.name+"/"+f.name+"/Read", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := s.Read(ctx, tg); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(be.name+"/"+f.name+"/Write", func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					i++
					id := be.name + strconv.Itoa(i) + "-" + strconv.Itoa(b.N)
					v, err = s.Write(ctx, secrets.WriteRequest{Target: tg, IfVersion: v, Token: id,
						Record: secrets.Record{APIKey: "sk-bench-" + id, KeyID: id, RotationID: id}})
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
