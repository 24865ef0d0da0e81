package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildMrbacd builds the mrbacd command into dir and returns the binary's
// path, for tests that run the real binary (build it once, in TestMain).
// The compiler's output goes to stderr.
func BuildMrbacd(dir string) (string, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is needed to build mrbacd: %w", err)
	}
	bin := filepath.Join(dir, "mrbacd")
	build := exec.Command(gobin, "build", "-o", bin, "github.com/mrbacd/mrbacd/cmd/mrbacd")
	if root, err := repoRoot(); err == nil {
		build.Dir = root
	}
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building mrbacd: %w", err)
	}
	return bin, nil
}

// MainWithMrbacd is a TestMain for tests of the real binary: it builds
// mrbacd once into a temporary directory readable by every uid (a test may
// run ctl as nobody), sets *bin to its path, runs the tests, removes the
// directory and exits with the tests' code.
func MainWithMrbacd(m interface{ Run() int }, bin *string) {
	dir, err := os.MkdirTemp("", "mrbacd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "building mrbacd:", err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	if *bin, err = BuildMrbacd(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
