package mistral

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Model is one entry of GET /v1/models.
type Model struct {
	ID               string         `json:"id"`
	Object           string         `json:"object"`
	Created          int64          `json:"created"`
	OwnedBy          string         `json:"owned_by"`
	Capabilities     map[string]any `json:"capabilities"`
	Name             string         `json:"name"`
	Description      string         `json:"description,omitempty"`
	MaxContextLength int            `json:"max_context_length"`
	Aliases          []string       `json:"aliases"`
	Deprecation      *string        `json:"deprecation"`
	// DeprecationReplacementModel names the model to move to, if any.
	DeprecationReplacementModel *string  `json:"deprecation_replacement_model"`
	DefaultModelTemperature     *float64 `json:"default_model_temperature"`
	Type                        string   `json:"type"`
}

// ListModels lists the models key may use. It is the cheap call that
// proves a key works (ErrUnauthorized when it does not).
func (c *Client) ListModels(ctx context.Context, key Secret) ([]Model, error) {
	if key.IsZero() {
		return nil, errors.New("mistral: list models: empty key")
	}
	var out struct {
		Data []Model `json:"data"`
	}
	if err := c.do(ctx, call{method: "GET", path: "/v1/models", key: key}, &out); err != nil {
		return nil, err
	}
	return out.Data, nil
}

// Message is a chat message. Content arriving as a list of parts is joined
// into text on decode.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// UnmarshalJSON accepts content as a string, null, or a list of parts.
func (m *Message) UnmarshalJSON(b []byte) error {
	var aux struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	m.Role = aux.Role
	m.Content = ""
	if len(aux.Content) == 0 || string(aux.Content) == "null" {
		return nil
	}
	if err := json.Unmarshal(aux.Content, &m.Content); err == nil {
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(aux.Content, &parts); err != nil {
		return fmt.Errorf("message content: want a string or a list of parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		sb.WriteString(p.Text)
	}
	m.Content = sb.String()
	return nil
}

// ChatRequest is the body of POST /v1/chat/completions. Stream is set by
// the method called.
type ChatRequest struct {
	Model          string          `json:"model"`
	Messages       []Message       `json:"messages"`
	MaxTokens      *int            `json:"max_tokens,omitempty"`
	Temperature    *float64        `json:"temperature,omitempty"`
	TopP           *float64        `json:"top_p,omitempty"`
	Stop           []string        `json:"stop,omitempty"`
	RandomSeed     *int64          `json:"random_seed,omitempty"`
	ResponseFormat json.RawMessage `json:"response_format,omitempty"`
	Tools          json.RawMessage `json:"tools,omitempty"`
	ToolChoice     json.RawMessage `json:"tool_choice,omitempty"`
	SafePrompt     *bool           `json:"safe_prompt,omitempty"`
	Stream         bool            `json:"stream"`
	// The fields below are those of the spec's ChatCompletionRequest that
	// mrbacd passes through; the platform refuses any other.
	PresencePenalty   *float64        `json:"presence_penalty,omitempty"`
	FrequencyPenalty  *float64        `json:"frequency_penalty,omitempty"`
	N                 *int            `json:"n,omitempty"`
	Prediction        json.RawMessage `json:"prediction,omitempty"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls,omitempty"`
	PromptMode        *string         `json:"prompt_mode,omitempty"`
	Metadata          json.RawMessage `json:"metadata,omitempty"`
	ReasoningEffort   *string         `json:"reasoning_effort,omitempty"`
	Guardrails        json.RawMessage `json:"guardrails,omitempty"`
	PromptCacheKey    *string         `json:"prompt_cache_key,omitempty"`
	ServiceTier       *string         `json:"service_tier,omitempty"`
}

// TokenUsage counts the tokens of one call.
type TokenUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// ChatChoice is one choice of a ChatResponse.
type ChatChoice struct {
	Index        int     `json:"index"`
	Message      Message `json:"message"`
	FinishReason string  `json:"finish_reason"`
}

// ChatResponse is the answer of a non-streaming chat completion.
type ChatResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []ChatChoice `json:"choices"`
	Usage   TokenUsage   `json:"usage"`
}

// ChatChunk is one server-sent event of a streaming chat completion.
type ChatChunk struct {
	ID      string            `json:"id"`
	Object  string            `json:"object"`
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []ChatChunkChoice `json:"choices"`
	Usage   *TokenUsage       `json:"usage,omitempty"`
}

// ChatChunkChoice is one choice of a ChatChunk.
type ChatChunkChoice struct {
	Index        int     `json:"index"`
	Delta        Message `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

func checkChat(key Secret, req ChatRequest) error {
	switch {
	case key.IsZero():
		return errors.New("mistral: chat completion: empty key")
	case req.Model == "":
		return errors.New("mistral: chat completion: empty model")
	case len(req.Messages) == 0:
		return errors.New("mistral: chat completion: no messages")
	}
	return nil
}

// ChatCompletion runs a chat completion with key.
func (c *Client) ChatCompletion(ctx context.Context, key Secret, req ChatRequest) (ChatResponse, error) {
	if err := checkChat(key, req); err != nil {
		return ChatResponse{}, err
	}
	req.Stream = false
	var out ChatResponse
	err := c.do(ctx, call{method: "POST", path: "/v1/chat/completions", key: key, body: req}, &out)
	return out, err
}

// maxSSELine bounds one server-sent event line.
const maxSSELine = 4 << 20

// ChatCompletionStream runs a streaming chat completion, calling onChunk
// for each chunk in order, and returns the usage carried by the last chunk
// that had one (nil if none did). An error from onChunk stops the stream
// and is returned wrapped. Only the request is retried, never a stream
// that has begun.
func (c *Client) ChatCompletionStream(ctx context.Context, key Secret, req ChatRequest, onChunk func(ChatChunk) error) (*TokenUsage, error) {
	if err := checkChat(key, req); err != nil {
		return nil, err
	}
	req.Stream = true
	const path = "/v1/chat/completions"
	resp, err := c.roundTrip(ctx, call{method: "POST", path: path, key: key, body: req, stream: true})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxSSELine)
	var usage *TokenUsage
	var data bytes.Buffer
	flush := func() (done bool, err error) {
		if data.Len() == 0 {
			return false, nil
		}
		defer data.Reset()
		payload := bytes.TrimSpace(data.Bytes())
		if string(payload) == "[DONE]" {
			return true, nil
		}
		var ch ChatChunk
		if err := json.Unmarshal(payload, &ch); err != nil {
			return false, fmt.Errorf("mistral: POST %s: decode stream chunk: %w", path, err)
		}
		if ch.Usage != nil {
			u := *ch.Usage
			usage = &u
		}
		if onChunk != nil {
			if err := onChunk(ch); err != nil {
				return false, fmt.Errorf("mistral: POST %s: stream consumer: %w", path, err)
			}
		}
		return false, nil
	}
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			if done, err := flush(); err != nil || done {
				return usage, err
			}
			continue
		}
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.Write(bytes.TrimPrefix(v, []byte(" ")))
		}
		// Other fields (event:, id:, retry:, comments) are ignored.
	}
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil {
			return usage, fmt.Errorf("mistral: POST %s: stream: %w", path, ctx.Err())
		}
		return usage, &TransportError{Method: "POST", Path: path, Err: fmt.Errorf("stream: %w", err)}
	}
	if done, err := flush(); err != nil || done {
		return usage, err
	}
	return usage, &TransportError{Method: "POST", Path: path, Err: errors.New("stream ended without [DONE]")}
}

// EmbeddingsRequest is the body of POST /v1/embeddings.
type EmbeddingsRequest struct {
	Model string   `json:"model"`
	Input []string `json:"input"`
}

// Embedding is one vector of an EmbeddingsResponse.
type Embedding struct {
	Object    string    `json:"object"`
	Embedding []float64 `json:"embedding"`
	Index     int       `json:"index"`
}

// EmbeddingsResponse is the answer of POST /v1/embeddings.
type EmbeddingsResponse struct {
	ID     string      `json:"id"`
	Object string      `json:"object"`
	Model  string      `json:"model"`
	Data   []Embedding `json:"data"`
	Usage  TokenUsage  `json:"usage"`
}

// Embeddings computes embeddings with key.
func (c *Client) Embeddings(ctx context.Context, key Secret, req EmbeddingsRequest) (EmbeddingsResponse, error) {
	switch {
	case key.IsZero():
		return EmbeddingsResponse{}, errors.New("mistral: embeddings: empty key")
	case req.Model == "":
		return EmbeddingsResponse{}, errors.New("mistral: embeddings: empty model")
	case len(req.Input) == 0:
		return EmbeddingsResponse{}, errors.New("mistral: embeddings: no input")
	}
	var out EmbeddingsResponse
	err := c.do(ctx, call{method: "POST", path: "/v1/embeddings", key: key, body: req}, &out)
	return out, err
}
