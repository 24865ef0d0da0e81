package sandbox_test

import (
	"testing"

	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// FuzzParseSeed checks that no seed file panics the parser or, once
// accepted, sandbox.New. The seeds run as a normal test.
func FuzzParseSeed(f *testing.F) {
	for _, s := range []string{
		"", "workspaces: [{name: a}]\nkeys: [{name: k, workspace: a}]",
		"keys: [{name: k, workspace: Default Workspace, created_at: 2026-01-01, expiration_date: 2026-02-01}]",
		"usage: [{month: \"2026-11\", model: m, prompt_tokens: 1}]", "users: [{email: a@b}]\nkeys: [{name: x}]",
		"keys: [{name: k, key: abcdefgh}]\nspend_limit: {amount: 1}", "now: 2026-11-27T12:00:00Z", "- a\n- b", "{",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		seed, err := sandbox.ParseSeed([]byte(data))
		if err != nil {
			return
		}
		_ = sandbox.New(sandbox.Options{Seed: seed})
	})
}
