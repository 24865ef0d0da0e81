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
		{"one read", len(stream), stream, true, 10},
		{"byte by byte", 1, stream, true, 10},
		{"7-byte reads", 7, stream, true, 10},
		{"no usage", 5, "data: {\"a\":1}\n\ndata: [DONE]\n\n", false, 0},
		{"cut mid-line", 3, stream[:len(stream)-60], false, 0},
		{"comment and event lines", 4, ": ping\nevent: x\n" + stream, true, 10},
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
		{"absent", `{"model":"m","messages":[]}`, false, `{"max_tokens":500,"model":"m","messages":[]}`},
		{"leading space", ` {"model":"m"}`, false, ` {"max_tokens":500,"model":"m"}`},
		{"null", `{"model":"m","max_tokens":null}`, true, `{"max_tokens":500,"model":"m"}`},
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
		{"last key", `{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`, true, 7},
		{"spaces", `{"usage" :  {"prompt_tokens":1, "completion_tokens":1}}`, true, 2},
		{"first key", `{"usage":{"prompt_tokens":5,"completion_tokens":0,"total_tokens":5},"data":[{"embedding":[0.1]}]}`, true, 5},
		{"quoted word in content", `{"choices":[{"message":{"content":"the \"usage\": {\"total_tokens\": 999} trick"}}],"usage":{"total_tokens":9}}`, true, 9},
		{"string value usage", `{"usage":{"total_tokens":4},"content":"usage"}`, true, 4},
		{"nested details", `{"usage":{"prompt_tokens":2,"completion_tokens":2,"details":{"x":{"y":"}"}}}}`, true, 4},
		{"null usage", `{"usage":null}`, false, 0},
		{"none", `{"choices":[]}`, false, 0},
		{"not JSON", `usage`, false, 0},
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
