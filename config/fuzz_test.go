package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, and must
// return either a filled-in Config or Problems that each carry a position
// and a message. Seeds: testdata/fuzz/FuzzParse plus every good and bad
// config of testdata and the deploy example.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/good/*.yaml")
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	seeds = append(seeds, bad...)
	seeds = append(seeds, filepath.Join("..", "deploy", "mrbacd.example.yaml"))
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err == nil {
			if cfg == nil || cfg.Hash() == "" || cfg.Admin.Socket == "" || cfg.Jobs.Rotate.Concurrency < 1 || cfg.Secrets.File == nil {
				t.Fatalf("config without defaults: %+v", cfg)
			}
			return
		}
		if cfg != nil {
			t.Fatalf("both a config and an error: %v", err)
		}
		var ps Problems
		if !errors.As(err, &ps) || len(ps) == 0 {
			t.Fatalf("error is not Problems: %T %v", err, err)
		}
		for _, p := range ps {
			if p.File != "fuzz.yaml" || p.Line <= 0 || p.Col <= 0 || p.Message == "" {
				t.Fatalf("problem without a location or message: %#v", p)
			}
			if strings.HasPrefix(p.Message, internalError) {
				t.Fatalf("Parse recovered from a panic: %s", p.Message)
			}
		}
		_, err2 := Parse("fuzz.yaml", data)
		if err2 == nil || err2.Error() != err.Error() {
			t.Fatalf("not deterministic:\n%v\n---\n%v", err, err2)
		}
	})
}
