package gateway

import (
	"strings"
	"testing"
)

func TestSSEUsage(t *testing.T) {
	stream := "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"the usage of\"}}]}\n\n" +
		"data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\r\n\r\n" +
		"data: [DONE]\n\n"
	tests := []struct {
		name  string
		chunk int
		in    string
		found bool
		total int64
	}{
		{name: "one read", chunk: len(stream), in: stream, found: true, total: 10},
		{name: "byte by byte", chunk: 1, in: stream, found: true, total: 10},
		{name: "7-byte reads", chunk: 7, in: stream, found: true, total: 10},
		{name: "no usage", chunk: 5, in: "data: {\"a\":1}\n\ndata: [DONE]\n\n", found: false, total: 0},
		{name: "cut mid-line", chunk: 3, in: stream[:len(stream)-60], found: false, total: 0},
		{name: "comment and event lines", chunk: 4, in: ": ping\nevent: x\n" + stream, found: true, total: 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s sseUsage
			for in := tc.in; in != ""; {
				n := min(tc.chunk, len(in))
				s.feed([]byte(in[:n]))
				in = in[n:]
			}
			if s.found != tc.found || s.u.total() != tc.total {
				t.Fatalf("found=%v total=%d, want %v %d", s.found, s.u.total(), tc.found, tc.total)
			}
		})
	}
}

func TestSSEUsageBoundsLongLines(t *testing.T) {
	var s sseUsage
	long := "data: " + strings.Repeat("x", maxSSELine+10)
	s.feed([]byte(long))
	if len(s.carry) != 0 || !s.skip {
		t.Fatalf("carry %d bytes, skip %v: a long line must not be buffered", len(s.carry), s.skip)
	}
	s.feed([]byte("\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n"))
	if !s.found || s.u.total() != 2 {
		t.Fatalf("usage after a long line: %+v", s)
	}
}

func TestInjectMaxTokens(t *testing.T) {
	tests := []struct {
		name, in string
		null     bool
		want     string
	}{
		{name: "absent", in: `{"model":"m","messages":[]}`, null: false, want: `{"max_tokens":500,"model":"m","messages":[]}`},
		{name: "leading space", in: ` {"model":"m"}`, null: false, want: ` {"max_tokens":500,"model":"m"}`},
		{name: "null", in: `{"model":"m","max_tokens":null}`, null: true, want: `{"max_tokens":500,"model":"m"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := injectMaxTokens([]byte(tc.in), 500, tc.null)
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestFindUsage(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		found bool
		total int64
	}{
		{name: "last key", doc: `{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`, found: true, total: 7},
		{name: "spaces", doc: `{"usage" :  {"prompt_tokens":1, "completion_tokens":1}}`, found: true, total: 2},
		{name: "first key", doc: `{"usage":{"prompt_tokens":5,"completion_tokens":0,"total_tokens":5},"data":[{"embedding":[0.1]}]}`, found: true, total: 5},
		{name: "quoted word in content", doc: `{"choices":[{"message":{"content":"the \"usage\": {\"total_tokens\": 999} trick"}}],"usage":{"total_tokens":9}}`, found: true, total: 9},
		{name: "string value usage", doc: `{"usage":{"total_tokens":4},"content":"usage"}`, found: true, total: 4},
		{name: "nested details", doc: `{"usage":{"prompt_tokens":2,"completion_tokens":2,"details":{"x":{"y":"}"}}}}`, found: true, total: 4},
		{name: "null usage", doc: `{"usage":null}`, found: false, total: 0},
		{name: "none", doc: `{"choices":[]}`, found: false, total: 0},
		{name: "not JSON", doc: `usage`, found: false, total: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, ok := findUsage([]byte(tc.doc))
			if ok != tc.found || u.total() != tc.total {
				t.Fatalf("found %v total %d, want %v %d", ok, u.total(), tc.found, tc.total)
			}
		})
	}
}
