package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/golden.txt from the current messages")

// TestBadConfigs parses every file of testdata/bad (one problem each) and
// compares the messages with testdata/bad/golden.txt.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs: %v", err)
	}
	var got strings.Builder
	for _, f := range files {
		name := filepath.Base(f)
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := Parse(name, data)
		if err == nil {
			t.Errorf("%s: parsed without problems: %+v", name, cfg)
			continue
		}
		ps, ok := err.(Problems)
		if !ok {
			t.Errorf("%s: error is %T, want Problems", name, err)
			continue
		}
		if len(ps) != 1 {
			t.Errorf("%s: %d problems, want exactly 1 (one file per problem):\n%v", name, len(ps), ps)
		}
		got.WriteString("== " + name + "\n")
		for _, p := range ps {
			if p.File != name || p.Line <= 0 || p.Col <= 0 || p.Message == "" {
				t.Errorf("%s: problem without a location or message: %#v", name, p)
			}
			if strings.Contains(p.String(), "not-a-real-key") || strings.Contains(p.String(), "s3cr3t") ||
				strings.Contains(p.String(), "xoxb-not-real") || strings.Contains(p.String(), "hvs.notreal") {
				t.Errorf("%s: a problem echoes the inline secret: %s", name, p)
			}
			got.WriteString(p.String() + "\n")
		}
	}
	golden := filepath.Join("testdata", "bad", "golden.txt")
	if *update {
		if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./config -run TestBadConfigs -update)", err)
	}
	if got.String() != string(want) {
		t.Errorf("messages differ from %s (rerun with -update after checking):\n%s", golden, diffLines(string(want), got.String()))
	}
}

// diffLines lists the lines only in want (-) or only in got (+).
func diffLines(want, got string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}
