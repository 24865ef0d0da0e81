package sandbox

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"sort"
	"strings"

	"github.com/mrbacd/mrbacd/mistral"
)

// modelInfo describes one sandbox model.
type modelInfo struct {
	ID, Name, Type string
	Embed          bool
	Context        int
	Aliases        []string
}

// models served by GET /v1/models: those of the price list, each
// "-latest" alias beside the dated model it names (mistral-small-latest is
// mistral-small-2603, mistral-medium-latest mistral-medium-3-5). Retired
// models (retiredModels) are neither listed nor served.
var models = []modelInfo{
	{ID: "mistral-small-latest", Name: "Mistral Small", Type: "base", Context: 262144, Aliases: []string{"mistral-small-2603"}},
	{ID: "mistral-small-2603", Name: "Mistral Small", Type: "base", Context: 262144, Aliases: []string{"mistral-small-latest"}},
	{ID: "mistral-medium-latest", Name: "Mistral Medium 3.5", Type: "base", Context: 262144, Aliases: []string{"mistral-medium-3-5"}},
	{ID: "mistral-medium-3-5", Name: "Mistral Medium 3.5", Type: "base", Context: 262144, Aliases: []string{"mistral-medium-latest"}},
	{ID: "mistral-large-latest", Name: "Mistral Large", Type: "base", Context: 262144},
	{ID: "codestral-latest", Name: "Codestral", Type: "base", Context: 256000},
	{ID: "ministral-14b-latest", Name: "Ministral 14B", Type: "base", Context: 262144},
	{ID: "ministral-8b-latest", Name: "Ministral 8B", Type: "base", Context: 262144},
	{ID: "ministral-3b-latest", Name: "Ministral 3B", Type: "base", Context: 131072},
	{ID: "mistral-embed", Name: "Mistral Embed", Type: "base", Embed: true, Context: 8192},
	{ID: "codestral-embed", Name: "Codestral Embed", Type: "base", Embed: true, Context: 8192},
}

// retiredModels answer 400 with a message naming the replacement.
var retiredModels = map[string]string{"open-mistral-7b": "ministral-8b-latest"}

// modelByID indexes models.
var modelByID = func() map[string]modelInfo {
	m := map[string]modelInfo{}
	for _, x := range models {
		m[x.ID] = x
	}
	return m
}()

// modelsBody is the prebuilt answer of GET /v1/models.
var modelsBody = func() []byte {
	type caps struct {
		CompletionChat  bool `json:"completion_chat"`
		CompletionFIM   bool `json:"completion_fim"`
		FunctionCalling bool `json:"function_calling"`
		FineTuning      bool `json:"fine_tuning"`
		Vision          bool `json:"vision"`
		Classification  bool `json:"classification"`
	}
	type model struct {
		ID               string   `json:"id"`
		Object           string   `json:"object"`
		Created          int64    `json:"created"`
		OwnedBy          string   `json:"owned_by"`
		Capabilities     caps     `json:"capabilities"`
		Name             string   `json:"name"`
		Description      string   `json:"description"`
		MaxContextLength int      `json:"max_context_length"`
		Aliases          []string `json:"aliases"`
		Deprecation      *string  `json:"deprecation"`
		DefaultTemp      *float64 `json:"default_model_temperature"`
		Type             string   `json:"type"`
	}
	data := make([]model, 0, len(models))
	for _, m := range models {
		x := model{ID: m.ID, Object: "model", Created: 1754006400, OwnedBy: "mistralai", Name: m.Name,
			Description: m.Name + " (sandbox)", MaxContextLength: m.Context, Aliases: m.Aliases, Type: m.Type}
		if x.Aliases == nil {
			x.Aliases = []string{}
		}
		if m.Embed {
			x.Capabilities = caps{}
		} else {
			x.Capabilities = caps{CompletionChat: true, FunctionCalling: true, FineTuning: true, CompletionFIM: strings.HasPrefix(m.ID, "codestral")}
			t := 0.3
			x.DefaultTemp = &t
		}
		data = append(data, x)
	}
	b, _ := json.Marshal(map[string]any{"object": "list", "data": data})
	return b
}()

func (s *Server) listModels(w http.ResponseWriter, _ *http.Request, rec *keyRec, pattern string) {
	s.recordUse(rec, pattern, "", 0, 0)
	setRateHeaders(w)
	writeRaw(w, http.StatusOK, modelsBody)
}

func setRateHeaders(w http.ResponseWriter) {
	h := w.Header()
	h["X-Ratelimit-Limit-Req-Minute"] = []string{"360"}
	h["X-Ratelimit-Remaining-Req-Minute"] = []string{"359"}
	h["X-Ratelimit-Limit-Tokens-Minute"] = []string{"2000000"}
	h["X-Ratelimit-Remaining-Tokens-Minute"] = []string{"1999000"}
}

// CountTokens is the sandbox's deterministic token count of a text: one
// token per four bytes, rounded up, at least one for a non-empty text.
func CountTokens(text string) int {
	if text == "" {
		return 0
	}
	return (len(text) + 3) / 4
}

// DefaultCompletionTokens is the completion length without max_tokens:
// 16 plus half the prompt tokens, at most 1024.
func DefaultCompletionTokens(promptTokens int) int { return min(16+promptTokens/2, 1024) }

// ChatUsage predicts the usage the sandbox reports for a chat completion
// whose messages have these contents (maxTokens 0: no limit).
func ChatUsage(contents []string, maxTokens int) mistral.TokenUsage {
	p := 0
	for _, c := range contents {
		p += CountTokens(c) + 1
	}
	c := DefaultCompletionTokens(p)
	if maxTokens > 0 && maxTokens < c {
		c = maxTokens
	}
	return mistral.TokenUsage{PromptTokens: p, CompletionTokens: c, TotalTokens: p + c}
}

// chatMessage is the union of the spec's four message kinds; check
// refuses the fields a role does not have (a user message has no name).
type chatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       *string         `json:"name"`
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID *string         `json:"tool_call_id"`
	Prefix     *bool           `json:"prefix"`
}

// check returns the 422 details of message i.
func (m chatMessage) check(i int) []detail {
	loc := func(f string) []string { return []string{"body", "messages", fmt.Sprint(i), m.Role, f} }
	extra := func(f string) detail {
		return detail{Loc: loc(f), Msg: "Extra inputs are not permitted", Type: "extra_forbidden"}
	}
	var ds []detail
	switch m.Role {
	case "system", "user":
		for f, set := range map[string]bool{"name": m.Name != nil, "tool_calls": m.ToolCalls != nil, "tool_call_id": m.ToolCallID != nil, "prefix": m.Prefix != nil} {
			if set {
				ds = append(ds, extra(f))
			}
		}
	case "assistant":
		for f, set := range map[string]bool{"name": m.Name != nil, "tool_call_id": m.ToolCallID != nil} {
			if set {
				ds = append(ds, extra(f))
			}
		}
	case "tool":
		for f, set := range map[string]bool{"tool_calls": m.ToolCalls != nil, "prefix": m.Prefix != nil} {
			if set {
				ds = append(ds, extra(f))
			}
		}
	default:
		return []detail{{Loc: []string{"body", "messages", fmt.Sprint(i), "role"}, Msg: "Input should be 'system', 'user', 'assistant' or 'tool'", Type: "literal_error"}}
	}
	if m.Content == nil && m.Role != "assistant" {
		ds = append(ds, detail{Loc: loc("content"), Msg: "Field required", Type: "missing"})
	}
	sort.Slice(ds, func(a, b int) bool { return strings.Join(ds[a].Loc, ".") < strings.Join(ds[b].Loc, ".") })
	return ds
}

// chatBody lists every field of the spec's ChatCompletionRequest; others
// are rejected.
type chatBody struct {
	Model             *string         `json:"model"`
	Messages          []chatMessage   `json:"messages"`
	MaxTokens         *int            `json:"max_tokens"`
	Stream            bool            `json:"stream"`
	Temperature       *float64        `json:"temperature"`
	TopP              *float64        `json:"top_p"`
	Stop              json.RawMessage `json:"stop"`
	RandomSeed        *int64          `json:"random_seed"`
	ResponseFormat    json.RawMessage `json:"response_format"`
	Tools             json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	SafePrompt        *bool           `json:"safe_prompt"`
	PresencePenalty   *float64        `json:"presence_penalty"`
	FrequencyPenalty  *float64        `json:"frequency_penalty"`
	N                 *int            `json:"n"`
	Prediction        json.RawMessage `json:"prediction"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	PromptMode        *string         `json:"prompt_mode"`
	Metadata          json.RawMessage `json:"metadata"`
	ReasoningEffort   *string         `json:"reasoning_effort"`
	Guardrails        json.RawMessage `json:"guardrails"`
	PromptCacheKey    *string         `json:"prompt_cache_key"`
	ServiceTier       *string         `json:"service_tier"`
}

// chatUsage is a chat answer's usage: the token counts and, when part of
// the prompt came from the prompt cache, prompt_tokens_details.
type chatUsage struct {
	mistral.TokenUsage
	PromptTokensDetails *promptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

type promptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// CachedInputFactor is the share of the input price billed for a cached
// prompt token.
const CachedInputFactor = 0.1

// cachedTokens is the sandbox's prompt cache: a request giving a
// prompt_cache_key reuses the longest run of leading messages equal to
// those of the last request with the same key; their tokens are cached.
func (s *Server) cachedTokens(key *string, contents []string) int {
	if key == nil || *key == "" {
		return 0
	}
	prev, _ := s.promptCache.Swap(*key, contents)
	old, _ := prev.([]string)
	cached := 0
	for i := 0; i < len(old) && i < len(contents) && old[i] == contents[i]; i++ {
		cached += CountTokens(contents[i]) + 1
	}
	return cached
}

// discountCached takes the cached prompt tokens' rebate off the month's
// cost: they bill at CachedInputFactor of the input price.
func (s *Server) discountCached(model string, cached int) {
	month := s.Now().UTC().Format("2006-01")
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.prices[model]; ok {
		s.monthCost[month] -= float64(cached) * p.InputPerMillion * (1 - CachedInputFactor) / 1e6
	}
}

// contentText returns a message content's text (a string or a parts list).
func contentText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// checkModel answers 400 for an unknown model or one of the wrong kind.
func checkModel(w http.ResponseWriter, id string, embed bool) bool {
	if next, ok := retiredModels[id]; ok {
		writeErrorObject(w, http.StatusBadRequest, "Model "+id+" has been retired; use "+next, "invalid_model", "1500")
		return false
	}
	m, ok := modelByID[id]
	if !ok || m.Embed != embed {
		writeErrorObject(w, http.StatusBadRequest, "Invalid model: "+id, "invalid_model", "1500")
		return false
	}
	return true
}

func (s *Server) limitReached(w http.ResponseWriter) bool {
	if s.spendLimitReached() {
		writeErrorObject(w, http.StatusTooManyRequests, "Rate limit exceeded", "rate_limited", "1300")
		return true
	}
	return false
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, rec *keyRec, pattern string) {
	var b chatBody
	if ds := decodeStrict(r, &b); ds != nil {
		writeValidation(w, ds...)
		return
	}
	var ds []detail
	if b.Model == nil {
		ds = append(ds, missing("model"))
	}
	if b.Messages == nil {
		ds = append(ds, missing("messages"))
	} else if len(b.Messages) == 0 {
		ds = append(ds, detail{Loc: []string{"body", "messages"}, Msg: "List should have at least 1 item after validation, not 0", Type: "too_short"})
	}
	if b.MaxTokens != nil && *b.MaxTokens < 0 {
		ds = append(ds, detail{Loc: []string{"body", "max_tokens"}, Msg: "Input should be greater than or equal to 0", Type: "greater_than_equal"})
	}
	if b.N != nil && *b.N < 1 {
		ds = append(ds, detail{Loc: []string{"body", "n"}, Msg: "Input should be greater than or equal to 1", Type: "greater_than_equal"})
	}
	for i, m := range b.Messages {
		ds = append(ds, m.check(i)...)
	}
	if b.ServiceTier != nil && *b.ServiceTier != "auto" && *b.ServiceTier != "standard_only" {
		ds = append(ds, detail{Loc: []string{"body", "service_tier"}, Msg: "Input should be 'auto' or 'standard_only'", Type: "enum"})
	}
	switch e := b.ReasoningEffort; {
	case e == nil, *e == "none", *e == "minimal", *e == "low", *e == "medium", *e == "high", *e == "xhigh":
	default:
		ds = append(ds, detail{Loc: []string{"body", "reasoning_effort"}, Msg: "Input should be 'none', 'minimal', 'low', 'medium', 'high' or 'xhigh'", Type: "enum"})
	}
	if len(ds) > 0 {
		writeValidation(w, ds...)
		return
	}
	if !checkModel(w, *b.Model, false) || s.limitReached(w) {
		return
	}
	contents := make([]string, len(b.Messages))
	for i, m := range b.Messages {
		contents[i] = contentText(m.Content)
	}
	maxTokens := 0
	if b.MaxTokens != nil {
		maxTokens = *b.MaxTokens
	}
	u := ChatUsage(contents, maxTokens)
	n := 1
	if b.N != nil {
		n = *b.N
	}
	finish := "stop"
	if maxTokens > 0 && u.CompletionTokens == maxTokens && maxTokens < DefaultCompletionTokens(u.PromptTokens) {
		finish = "length"
	}
	text := completionText(u.CompletionTokens)
	// n completions: each as long as one, all billed; the prompt once.
	u.CompletionTokens *= n
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	cu := chatUsage{TokenUsage: u}
	if c := s.cachedTokens(b.PromptCacheKey, contents); c > 0 {
		cu.PromptTokensDetails = &promptTokensDetails{CachedTokens: c}
	}
	id := "cmpl-" + s.requestID()
	created := s.Now().Unix()
	// Billed now, as the platform does: whether the client stays or not.
	s.recordUse(rec, pattern, *b.Model, int64(u.PromptTokens), int64(u.CompletionTokens))
	if cu.PromptTokensDetails != nil {
		s.discountCached(*b.Model, cu.PromptTokensDetails.CachedTokens)
	}
	setRateHeaders(w)
	if b.Stream {
		s.streamChat(w, id, created, *b.Model, text, finish, n, cu)
		return
	}
	choices := make([]any, n)
	for i := range choices {
		choices[i] = map[string]any{"index": i, "message": map[string]any{"role": "assistant", "content": text, "tool_calls": nil}, "finish_reason": finish}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id": id, "object": "chat.completion", "created": created, "model": *b.Model,
		"choices": choices,
		"usage":   cu,
	})
}

// completionText is n tokens of text (four bytes each).
func completionText(n int) string {
	const word = "lore"
	var sb strings.Builder
	sb.Grow(n * 4)
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteByte(' ')
			sb.WriteString(word[1:])
		} else {
			sb.WriteString(word)
		}
	}
	return sb.String()
}

// streamChat writes the completion as server-sent events: a role chunk,
// content chunks, a last chunk with finish_reason and usage, then [DONE].
// Chunks carry an extra field ("p") clients must ignore.
func (s *Server) streamChat(w http.ResponseWriter, id string, created int64, model, text, finish string, n int, u chatUsage) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	send := func(delta map[string]any, fin *string, usage *chatUsage) {
		choices := make([]any, n) // the n completions advance together
		for i := range choices {
			choices[i] = map[string]any{"index": i, "delta": delta, "finish_reason": fin}
		}
		chunk := map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
			"choices": choices,
			"p":       "abcdefghijklmnopqrstuvwxyz0123456789",
		}
		if usage != nil {
			chunk["usage"] = usage
		}
		b, _ := json.Marshal(chunk)
		_, _ = w.Write([]byte("data: "))
		_, _ = w.Write(b)
		_, _ = w.Write([]byte("\n\n"))
		if fl != nil {
			fl.Flush()
		}
	}
	send(map[string]any{"role": "assistant", "content": ""}, nil, nil)
	parts := 4
	step := max(1, (len(text)+parts-1)/parts)
	for i := 0; i < len(text); i += step {
		send(map[string]any{"content": text[i:min(len(text), i+step)]}, nil, nil)
	}
	send(map[string]any{"content": ""}, &finish, &u)
	_, _ = w.Write([]byte("data: [DONE]\n\n"))
	if fl != nil {
		fl.Flush()
	}
}

// EmbeddingDims is the length of sandbox embedding vectors.
const EmbeddingDims = 16

func (s *Server) embeddings(w http.ResponseWriter, r *http.Request, rec *keyRec, pattern string) {
	var b struct {
		Model          *string         `json:"model"`
		Input          json.RawMessage `json:"input"`
		EncodingFormat *string         `json:"encoding_format"`
		OutputDtype    *string         `json:"output_dtype"`
		OutputDim      *int            `json:"output_dimension"`
		Metadata       json.RawMessage `json:"metadata"`
	}
	if ds := decodeStrict(r, &b); ds != nil {
		writeValidation(w, ds...)
		return
	}
	var ds []detail
	if b.Model == nil {
		ds = append(ds, missing("model"))
	}
	var inputs []string
	if len(b.Input) == 0 {
		ds = append(ds, missing("input"))
	} else {
		var one string
		if json.Unmarshal(b.Input, &one) == nil {
			inputs = []string{one}
		} else if json.Unmarshal(b.Input, &inputs) != nil || len(inputs) == 0 {
			ds = append(ds, detail{Loc: []string{"body", "input"}, Msg: "Input should be a string or a non-empty list of strings", Type: "value_error"})
		}
	}
	if len(ds) > 0 {
		writeValidation(w, ds...)
		return
	}
	if !checkModel(w, *b.Model, true) || s.limitReached(w) {
		return
	}
	prompt := 0
	data := make([]map[string]any, len(inputs))
	for i, in := range inputs {
		prompt += CountTokens(in)
		data[i] = map[string]any{"object": "embedding", "embedding": embed(in), "index": i}
	}
	s.recordUse(rec, pattern, *b.Model, int64(prompt), 0)
	setRateHeaders(w)
	writeJSON(w, http.StatusOK, map[string]any{
		"id": "emb-" + s.requestID(), "object": "list", "model": *b.Model, "data": data,
		"usage": map[string]int{"prompt_tokens": prompt, "completion_tokens": 0, "total_tokens": prompt},
	})
}

// embed is a deterministic unit vector derived from the text.
func embed(text string) []float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(text))
	x := h.Sum64()
	v := make([]float64, EmbeddingDims)
	var norm float64
	for i := range v {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		v[i] = float64(int64(x%2001)-1000) / 1000
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	if norm == 0 {
		norm = 1
	}
	for i := range v {
		v[i] = math.Round(v[i]/norm*1e6) / 1e6
	}
	return v
}
