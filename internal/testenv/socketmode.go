package testenv

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// SocketModeServer adds Slack's Socket Mode to a SlackServer:
// apps.connections.open (app-level token required) answers a websocket URL
// on the same server, which greets with hello, pings, delivers envelopes
// (interactive block_actions, slash commands) and records the client's
// acks. It can redeliver an envelope, ask the client to reconnect, drop the
// connection, and refuse connections. chat.update and chat.postEphemeral are
// recorded; a message's blocks follow its updates, so a later click carries
// the message as Slack would show it.
type SocketModeServer struct {
	slack *SlackServer
	// AppToken is the token apps.connections.open accepts.
	AppToken string
	// PingEvery is how often the server pings (default 200ms).
	PingEvery time.Duration

	mu        sync.Mutex
	cond      *sync.Cond
	conn      *websocket.Conn
	conns     int // connections accepted so far
	opens     int // apps.connections.open calls
	refuse    int // next apps.connections.open calls to refuse
	envelopes map[string][]byte
	acks      map[string][]json.RawMessage
	updates   []SlackMessage
	ephemeral []SlackMessage
	blocks    map[string]string // message ts -> current blocks
	seq       int
	closed    bool
}

// SocketMode serves Socket Mode on s; the app token is xapp-testenv-....
func SocketMode(t testing.TB, s *SlackServer) *SocketModeServer {
	t.Helper()
	sm := &SocketModeServer{slack: s, AppToken: "xapp-1-A0TESTAPP-1-testenvapptokensecret", PingEvery: 200 * time.Millisecond,
		envelopes: map[string][]byte{}, acks: map[string][]json.RawMessage{}, blocks: map[string]string{}}
	sm.cond = sync.NewCond(&sm.mu)
	s.route("/apps.connections.open", sm.open)
	s.route("/socketmode/link", sm.link)
	s.route("/chat.update", sm.record(&sm.updates, true))
	s.route("/chat.postEphemeral", sm.record(&sm.ephemeral, false))
	t.Cleanup(sm.close)
	return sm
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (sm *SocketModeServer) open(w http.ResponseWriter, r *http.Request) {
	sm.mu.Lock()
	sm.opens++
	refuse := sm.refuse > 0
	if refuse {
		sm.refuse--
	}
	sm.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+sm.AppToken {
		writeJSON(w, map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	if refuse {
		writeJSON(w, map[string]any{"ok": false, "error": "internal_error"})
		return
	}
	writeJSON(w, map[string]any{"ok": true, "url": "ws://" + r.Host + "/socketmode/link?ticket=testenv"})
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (sm *SocketModeServer) link(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	sm.mu.Lock()
	if sm.closed {
		sm.mu.Unlock()
		c.Close()
		return
	}
	if sm.conn != nil {
		sm.conn.Close()
	}
	sm.conn = c
	sm.conns++
	n := sm.conns
	_ = c.WriteJSON(map[string]any{"type": "hello", "num_connections": 1,
		"connection_info": map[string]any{"app_id": "A0TESTAPP"}, "debug_info": map[string]any{"host": "testenv", "approximate_connection_time": 3600}})
	sm.cond.Broadcast()
	sm.mu.Unlock()
	done := make(chan struct{})
	go sm.pinger(c, done)
	defer close(done)
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			break
		}
		var ack struct {
			EnvelopeID string          `json:"envelope_id"`
			Payload    json.RawMessage `json:"payload"`
		}
		if json.Unmarshal(b, &ack) == nil && ack.EnvelopeID != "" {
			sm.mu.Lock()
			sm.acks[ack.EnvelopeID] = append(sm.acks[ack.EnvelopeID], ack.Payload)
			sm.cond.Broadcast()
			sm.mu.Unlock()
		}
	}
	sm.mu.Lock()
	if sm.conns == n {
		sm.conn = nil
	}
	sm.cond.Broadcast()
	sm.mu.Unlock()
}

func (sm *SocketModeServer) pinger(c *websocket.Conn, done chan struct{}) {
	t := time.NewTicker(sm.PingEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			sm.mu.Lock()
			err := c.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(time.Second))
			sm.mu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

func (sm *SocketModeServer) record(into *[]SlackMessage, update bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		form, err := readSlackArgs(r)
		if err != nil {
			writeJSON(w, map[string]any{"ok": false, "error": "invalid_arguments"})
			return
		}
		m := SlackMessage{Channel: form.Get("channel"), Text: form.Get("text"), Blocks: form.Get("blocks"), TS: form.Get("ts"),
			Token: strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), Form: form}
		sm.mu.Lock()
		*into = append(*into, m)
		if update && m.Blocks != "" {
			sm.blocks[m.TS] = m.Blocks
		}
		sm.cond.Broadcast()
		sm.mu.Unlock()
		if update {
			writeJSON(w, map[string]any{"ok": true, "channel": m.Channel, "ts": m.TS, "text": m.Text})
			return
		}
		writeJSON(w, map[string]any{"ok": true, "message_ts": fmt.Sprintf("%d.000001", time.Now().Unix())})
	}
}

func (sm *SocketModeServer) close() {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.closed = true
	if sm.conn != nil {
		sm.conn.Close()
	}
	sm.cond.Broadcast()
}

// waitFor waits (with sm.mu held) until cond holds, failing t after timeout.
func (sm *SocketModeServer) waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	timer := time.AfterFunc(timeout, func() { sm.mu.Lock(); sm.cond.Broadcast(); sm.mu.Unlock() })
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("testenv: socket mode: %s: not within %s", what, timeout)
		}
		sm.cond.Wait()
	}
}

// WaitConnected waits until the client has made its n-th connection and it
// is open; it returns the number of connections so far.
func (sm *SocketModeServer) WaitConnected(t testing.TB, n int) int {
	t.Helper()
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.waitFor(t, fmt.Sprintf("connection %d", n), 10*time.Second, func() bool { return sm.conns >= n && sm.conn != nil })
	return sm.conns
}

// Opens counts apps.connections.open calls.
func (sm *SocketModeServer) Opens() int {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.opens
}

// RefuseOpens makes the next n apps.connections.open calls fail.
func (sm *SocketModeServer) RefuseOpens(n int) {
	sm.mu.Lock()
	sm.refuse += n
	sm.mu.Unlock()
}

// Drop closes the connection without a close frame, as a network failure.
func (sm *SocketModeServer) Drop() {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.conn != nil {
		sm.conn.NetConn().Close()
	}
}

// Disconnect asks the client to reconnect, as Slack does before it
// recycles a connection.
func (sm *SocketModeServer) Disconnect(t testing.TB) {
	t.Helper()
	sm.write(t, map[string]any{"type": "disconnect", "reason": "refresh_requested",
		"debug_info": map[string]any{"host": "testenv"}})
}

func (sm *SocketModeServer) write(t testing.TB, v any) {
	t.Helper()
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.waitFor(t, "an open connection", 10*time.Second, func() bool { return sm.conn != nil })
	if err := sm.conn.WriteJSON(v); err != nil {
		t.Fatalf("testenv: socket mode: write: %v", err)
	}
}

// Send delivers an envelope of type typ ("interactive", "slash_commands")
// with payload and returns its envelope id.
func (sm *SocketModeServer) Send(t testing.TB, typ string, payload any) string {
	t.Helper()
	p, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	sm.mu.Lock()
	sm.seq++
	id := fmt.Sprintf("env-%04d-testenv", sm.seq)
	env, _ := json.Marshal(map[string]any{"envelope_id": id, "type": typ, "payload": json.RawMessage(p),
		"accepts_response_payload": typ != "events_api", "retry_attempt": 0, "retry_reason": ""})
	sm.envelopes[id] = env
	sm.mu.Unlock()
	sm.write(t, json.RawMessage(env))
	return id
}

// Redeliver sends envelope id again, as Slack does when an ack is late.
func (sm *SocketModeServer) Redeliver(t testing.TB, id string) {
	t.Helper()
	sm.mu.Lock()
	env, ok := sm.envelopes[id]
	sm.mu.Unlock()
	if !ok {
		t.Fatalf("testenv: socket mode: no envelope %s", id)
	}
	var m map[string]any
	_ = json.Unmarshal(env, &m)
	m["retry_attempt"], m["retry_reason"] = 1, "timeout"
	sm.write(t, m)
}

// WaitAck waits for the n-th ack of envelope id and returns its payload
// (null when the ack had none).
func (sm *SocketModeServer) WaitAck(t testing.TB, id string, n int) json.RawMessage {
	t.Helper()
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.waitFor(t, "ack of "+id, 10*time.Second, func() bool { return len(sm.acks[id]) >= n })
	return sm.acks[id][n-1]
}

// Updates returns the chat.update calls so far.
func (sm *SocketModeServer) Updates() []SlackMessage {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return append([]SlackMessage(nil), sm.updates...)
}

// Ephemerals returns the chat.postEphemeral calls so far.
func (sm *SocketModeServer) Ephemerals() []SlackMessage {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return append([]SlackMessage(nil), sm.ephemeral...)
}

// WaitEphemerals waits until n ephemeral messages were posted.
func (sm *SocketModeServer) WaitEphemerals(t testing.TB, n int) []SlackMessage {
	t.Helper()
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.waitFor(t, fmt.Sprintf("%d ephemeral messages", n), 10*time.Second, func() bool { return len(sm.ephemeral) >= n })
	return append([]SlackMessage(nil), sm.ephemeral...)
}

// WaitUpdates waits until n chat.update calls were made.
func (sm *SocketModeServer) WaitUpdates(t testing.TB, n int) []SlackMessage {
	t.Helper()
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.waitFor(t, fmt.Sprintf("%d message updates", n), 10*time.Second, func() bool { return len(sm.updates) >= n })
	return append([]SlackMessage(nil), sm.updates...)
}

// Click is a user pressing a button of a posted message.
type Click struct {
	User     string // Slack user id
	ActionID string // the button's action_id
	// Block is the index, among the message's actions blocks, of the one
	// holding the button.
	Block int
	// Confirmed: the user confirmed the button's confirm dialog. Clicking
	// a button that has one without Confirmed fails the test: Slack would
	// not deliver it.
	Confirmed bool
	// Stale: the user's client still shows msg as posted (a double click
	// before the update arrived), not as last updated.
	Stale bool
}

// Click delivers a block_actions envelope for c on msg, built from the
// message's current blocks as Slack would, and returns its envelope id.
func (sm *SocketModeServer) Click(t testing.TB, msg SlackMessage, c Click) string {
	t.Helper()
	sm.mu.Lock()
	raw := msg.Blocks
	if b, ok := sm.blocks[msg.TS]; ok && !c.Stale {
		raw = b
	}
	sm.mu.Unlock()
	var blocks []map[string]any
	if err := json.Unmarshal([]byte(raw), &blocks); err != nil {
		t.Fatalf("testenv: click: message blocks: %v", err)
	}
	var found map[string]any
	blockID, seen := "", 0
	for _, b := range blocks {
		if b["type"] != "actions" {
			continue
		}
		if seen == c.Block {
			els, _ := b["elements"].([]any)
			for _, e := range els {
				if em, _ := e.(map[string]any); em["action_id"] == c.ActionID {
					found, blockID = em, fmt.Sprint(b["block_id"])
				}
			}
		}
		seen++
	}
	if found == nil {
		t.Fatalf("testenv: click: no button %s in actions block %d of message %s", c.ActionID, c.Block, msg.TS)
	}
	if found["confirm"] != nil && !c.Confirmed {
		t.Fatalf("testenv: click: button %s asks for confirmation; set Confirmed", c.ActionID)
	}
	now := fmt.Sprintf("%d.%06d", time.Now().Unix(), time.Now().Nanosecond()/1000)
	payload := map[string]any{
		"type": "block_actions", "api_app_id": "A0TESTAPP", "trigger_id": "trigger-" + now,
		"team":      map[string]any{"id": "T0TESTTEAM", "domain": "testenv"},
		"user":      map[string]any{"id": c.User, "username": "name-of-" + strings.ToLower(c.User), "team_id": "T0TESTTEAM"},
		"channel":   map[string]any{"id": msg.Channel, "name": "alerts"},
		"container": map[string]any{"type": "message", "message_ts": msg.TS, "channel_id": msg.Channel, "is_ephemeral": false},
		"message":   map[string]any{"type": "message", "ts": msg.TS, "text": msg.Text, "blocks": json.RawMessage(raw)},
		"actions": []any{map[string]any{"type": "button", "action_id": c.ActionID, "block_id": blockID,
			"value": found["value"], "text": found["text"], "action_ts": now}},
	}
	return sm.Send(t, "interactive", payload)
}

// SlashCommand delivers a slash command envelope and returns its id.
func (sm *SocketModeServer) SlashCommand(t testing.TB, user, channel, command, text string) string {
	t.Helper()
	return sm.Send(t, "slash_commands", map[string]any{"token": "legacy-verification", "team_id": "T0TESTTEAM",
		"channel_id": channel, "user_id": user, "user_name": "name-of-" + strings.ToLower(user), "command": command, "text": text,
		"api_app_id": "A0TESTAPP", "trigger_id": "trigger-slash"})
}
