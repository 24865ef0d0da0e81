package testenv

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slack-go/slack/slacktest"
)

// SlackMessage is one chat.postMessage call the server accepted.
type SlackMessage struct {
	Channel     string
	Text        string
	Blocks      string // raw JSON of the blocks argument, "" if none
	Attachments string // raw JSON of the attachments argument, "" if none
	ThreadTS    string
	// Token is the bearer token (or form token) the client sent.
	Token string
	// TS is the timestamp the server answered with.
	TS string
	// Form holds every argument as received.
	Form url.Values
}

// SlackFault is one injected failure, consumed by one request.
type SlackFault struct {
	// Status is the HTTP status to answer (429, 500, 503...). With Status 0
	// and SlackError set the answer is 200 {"ok":false,"error":SlackError}.
	Status int
	// RetryAfter is the Retry-After header value ("3"); "" sends none.
	RetryAfter string
	// SlackError is the Slack error code of an {"ok":false} answer.
	SlackError string
	// Drop closes the connection without any answer.
	Drop bool
}

// SlackServer is a slacktest server on 127.0.0.1 whose chat.postMessage
// records messages and can fail on demand, plus an incoming-webhook endpoint.
type SlackServer struct {
	// APIURL is the Web API base URL to pass to slack.OptionAPIURL
	// ("http://127.0.0.1:PORT/"); method names are appended to it.
	APIURL string
	// WebhookURL is an incoming-webhook URL served by the same server.
	WebhookURL string
	// Server is the underlying slacktest server (auth.test, users.info... work).
	Server *slacktest.Server

	mu       sync.Mutex
	messages []SlackMessage
	webhooks []json.RawMessage
	attempts int
	faults   []SlackFault
	down     bool
	seq      int
	stopped  bool
	routes   map[string]http.HandlerFunc
}

// route serves path with h from now on (see dispatch).
func (s *SlackServer) route(path string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.routes == nil {
		s.routes = map[string]http.HandlerFunc{}
	}
	s.routes[path] = h
}

// dispatch serves path with the handler route set, or as Slack answers an
// app without that feature.
func (s *SlackServer) dispatch(path string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		h := s.routes[path]
		s.mu.Unlock()
		if h == nil {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "not_allowed_token_type"})
			return
		}
		h(w, r)
	}
}

// Slack starts a slacktest server on a free 127.0.0.1 port and stops it when
// the test ends.
func Slack(t testing.TB) *SlackServer {
	t.Helper()
	s := &SlackServer{}
	srv := slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", s.postMessage)
		c.Handle("/services/", s.webhook)
		// Routes SocketMode takes over; slacktest keeps the first handler
		// registered for a path, so they dispatch through s.routes.
		for _, p := range []string{"/apps.connections.open", "/socketmode/link", "/chat.update", "/chat.postEphemeral"} {
			c.Handle(p, s.dispatch(p))
		}
	})
	srv.Start()
	s.Server = srv
	s.APIURL = srv.GetAPIURL()
	s.WebhookURL = "http://" + srv.ServerAddr + "/services/T0000TEST/B0000TEST/testenvwebhooksecret"
	if !strings.HasPrefix(srv.ServerAddr, "127.0.0.1:") {
		srv.Stop()
		t.Fatalf("testenv: slacktest listens on %s, want 127.0.0.1", srv.ServerAddr)
	}
	t.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down (further requests get connection refused).
func (s *SlackServer) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.mu.Unlock()
	s.Server.Stop()
}

// InjectFaults queues failures; each following chat.postMessage or webhook
// request consumes one, in order, before requests succeed again.
func (s *SlackServer) InjectFaults(faults ...SlackFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, faults...)
}

// RateLimit makes the next n requests answer 429 with the given Retry-After
// header value ("" for none).
func (s *SlackServer) RateLimit(n int, retryAfter string) {
	for i := 0; i < n; i++ {
		s.InjectFaults(SlackFault{Status: http.StatusTooManyRequests, RetryAfter: retryAfter})
	}
}

// FailNext makes the next n requests answer with HTTP status code.
func (s *SlackServer) FailNext(n, status int) {
	for i := 0; i < n; i++ {
		s.InjectFaults(SlackFault{Status: status})
	}
}

// SetDown starts (true) or ends (false) an outage: while down, every request's
// connection is closed without an answer. Nothing is recorded.
func (s *SlackServer) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// Messages returns the chat.postMessage calls accepted so far.
func (s *SlackServer) Messages() []SlackMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SlackMessage(nil), s.messages...)
}

// WebhookMessages returns the JSON payloads accepted on WebhookURL so far.
func (s *SlackServer) WebhookMessages() []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]json.RawMessage(nil), s.webhooks...)
}

// Attempts counts every chat.postMessage and webhook request, failed or not.
func (s *SlackServer) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// WaitForMessages waits until at least n messages (chat.postMessage plus
// webhook) were accepted, failing the test after timeout.
func (s *SlackServer) WaitForMessages(t testing.TB, n int, timeout time.Duration) []SlackMessage {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		got := len(s.messages) + len(s.webhooks)
		s.mu.Unlock()
		if got >= n {
			return s.Messages()
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: slack got %d messages after %s, want %d", got, timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ServeHistory makes the server answer conversations.list (the channels
// of names, which maps channel ids to names) and conversations.history
// (the messages it accepted in a channel, posted by id, name or #name,
// with their metadata when include_all_metadata is set), as Slack does for
// a bot with the history scopes. It returns the count of history calls.
func (s *SlackServer) ServeHistory(names map[string]string) *atomic.Int64 {
	var calls atomic.Int64
	s.Server.Handle("/conversations.list", func(w http.ResponseWriter, r *http.Request) {
		chs := []map[string]any{}
		for id, name := range names {
			chs = append(chs, map[string]any{"id": id, "name": name, "is_channel": true})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channels": chs, "response_metadata": map[string]any{"next_cursor": ""}})
	})
	s.Server.Handle("/conversations.history", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_ = r.ParseForm()
		id := r.Form.Get("channel")
		msgs := []map[string]any{}
		for _, m := range s.Messages() {
			if m.Channel != id && (names[id] == "" || (m.Channel != names[id] && m.Channel != "#"+names[id])) {
				continue
			}
			msg := map[string]any{"type": "message", "text": m.Text, "ts": m.TS}
			if md := m.Form.Get("metadata"); md != "" && r.Form.Get("include_all_metadata") == "1" {
				msg["metadata"] = json.RawMessage(md)
			}
			msgs = append(msgs, msg)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "messages": msgs, "has_more": false})
	})
	return &calls
}

// fault consumes the next injected fault; ok is false when none applies.
func (s *SlackServer) fault() (SlackFault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	if s.down {
		return SlackFault{Drop: true}, true
	}
	if len(s.faults) == 0 {
		return SlackFault{}, false
	}
	f := s.faults[0]
	s.faults = s.faults[1:]
	return f, true
}

// applyFault writes the fault's answer.
func applyFault(w http.ResponseWriter, f SlackFault) {
	if f.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.Status == 0 {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": f.SlackError})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.Status)
	code := f.SlackError
	if code == "" {
		code = strings.ReplaceAll(strings.ToLower(http.StatusText(f.Status)), " ", "_")
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": code})
}

func (s *SlackServer) postMessage(w http.ResponseWriter, r *http.Request) {
	if f, ok := s.fault(); ok {
		applyFault(w, f)
		return
	}
	form, err := readSlackArgs(r)
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "invalid_arguments"})
		return
	}
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if token == "" {
		token = form.Get("token")
	}
	if token == "" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "not_authed"})
		return
	}
	if form.Get("channel") == "" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "channel_not_found"})
		return
	}
	s.mu.Lock()
	s.seq++
	ts := fmt.Sprintf("%d.%06d", time.Now().Unix(), s.seq)
	m := SlackMessage{
		Channel: form.Get("channel"), Text: form.Get("text"), Blocks: form.Get("blocks"),
		Attachments: form.Get("attachments"), ThreadTS: form.Get("thread_ts"),
		Token: token, TS: ts, Form: form,
	}
	s.messages = append(s.messages, m)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"ok": true, "channel": m.Channel, "ts": ts,
		"message": map[string]any{"type": "message", "text": m.Text, "ts": ts},
	})
}

// readSlackArgs accepts form-encoded and JSON bodies, like Slack does.
func readSlackArgs(r *http.Request) (url.Values, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, err
		}
		v := url.Values{}
		for k, x := range m {
			if str, ok := x.(string); ok {
				v.Set(k, str)
				continue
			}
			raw, _ := json.Marshal(x)
			v.Set(k, string(raw))
		}
		return v, nil
	}
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	for k, x := range r.URL.Query() {
		if _, ok := v[k]; !ok {
			v[k] = x
		}
	}
	return v, nil
}

func (s *SlackServer) webhook(w http.ResponseWriter, r *http.Request) {
	if f, ok := s.fault(); ok {
		applyFault(w, f)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "invalid_method", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil || !json.Valid(body) {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.webhooks = append(s.webhooks, json.RawMessage(body))
	s.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}
