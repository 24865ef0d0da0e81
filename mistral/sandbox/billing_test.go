package sandbox_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestNCompletionsAndPromptCache: n completions are returned and billed
// (the prompt once), and a repeated prompt_cache_key reports the shared
// leading messages as cached prompt tokens.
func TestNCompletionsAndPromptCache(t *testing.T) {
	h := start(t, nil)
	k, err := h.sb.AddKey("billing", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	auth := "Authorization: Bearer " + k.Plaintext
	type answer struct {
		Choices []struct {
			Index int `json:"index"`
		} `json:"choices"`
		Usage struct {
			PromptTokens        int `json:"prompt_tokens"`
			CompletionTokens    int `json:"completion_tokens"`
			TotalTokens         int `json:"total_tokens"`
			PromptTokensDetails *struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	chat := func(body string) answer {
		t.Helper()
		st, _, b := h.do("POST", "/v1/chat/completions", auth, body)
		var a answer
		if st != 200 || json.Unmarshal(b, &a) != nil {
			t.Fatalf("%d %s", st, b)
		}
		return a
	}
	month := testNow.Format("2006-01")
	one := chat(`{"model":"mistral-small-latest","max_tokens":10,"messages":[{"role":"user","content":"count"}]}`)
	three := chat(`{"model":"mistral-small-latest","max_tokens":10,"n":3,"messages":[{"role":"user","content":"count"}]}`)
	if len(three.Choices) != 3 || three.Choices[2].Index != 2 || three.Usage.CompletionTokens != 3*one.Usage.CompletionTokens ||
		three.Usage.PromptTokens != one.Usage.PromptTokens || three.Usage.TotalTokens != three.Usage.PromptTokens+three.Usage.CompletionTokens {
		t.Fatalf("n=3: %+v, n=1: %+v", three, one)
	}
	billed := h.sb.WorkspaceUsage("", month)["mistral-small-latest"]
	if billed.CompletionTokens != int64(4*one.Usage.CompletionTokens) || billed.PromptTokens != int64(2*one.Usage.PromptTokens) {
		t.Fatalf("billed %+v for one and three completions of %+v", billed, one.Usage)
	}
	if st, _, b := h.do("POST", "/v1/chat/completions", auth, `{"model":"mistral-small-latest","n":0,"messages":[{"role":"user","content":"x"}]}`); st != 422 {
		t.Fatalf("n=0: %d %s", st, b)
	}
	system := `{"role":"system","content":"` + strings.Repeat("shared context ", 50) + `"}`
	first := chat(`{"model":"mistral-small-latest","max_tokens":5,"prompt_cache_key":"k1","messages":[` + system + `,{"role":"user","content":"a"}]}`)
	second := chat(`{"model":"mistral-small-latest","max_tokens":5,"prompt_cache_key":"k1","messages":[` + system + `,{"role":"user","content":"b"}]}`)
	other := chat(`{"model":"mistral-small-latest","max_tokens":5,"prompt_cache_key":"k2","messages":[` + system + `,{"role":"user","content":"b"}]}`)
	if first.Usage.PromptTokensDetails != nil || other.Usage.PromptTokensDetails != nil {
		t.Fatalf("cached tokens on a first use of a key: %+v %+v", first.Usage, other.Usage)
	}
	if d := second.Usage.PromptTokensDetails; d == nil || d.CachedTokens <= 0 || d.CachedTokens >= second.Usage.PromptTokens {
		t.Fatalf("second use of k1: %+v", second.Usage)
	}
}
