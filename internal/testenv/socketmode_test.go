package testenv

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// A bare websocket client sees what a Socket Mode client sees: the open
// call needs the app token, hello first, envelopes, a redelivery with
// retry_attempt 1, and its acks are recorded.
func TestSocketModeServerWire(t *testing.T) {
	s := Slack(t)
	sm := SocketMode(t, s)
	open := func(token string) map[string]any {
		req, _ := http.NewRequest(http.MethodPost, s.APIURL+"apps.connections.open", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return out
	}
	if got := open("xoxb-a-bot-token"); got["ok"] != false || got["error"] != "invalid_auth" {
		t.Fatalf("open with a bot token = %v", got)
	}
	sm.RefuseOpens(1)
	if got := open(sm.AppToken); got["ok"] != false {
		t.Fatalf("refused open = %v", got)
	}
	got := open(sm.AppToken)
	url, _ := got["url"].(string)
	if got["ok"] != true || !strings.HasPrefix(url, "ws://127.0.0.1:") {
		t.Fatalf("open = %v", got)
	}
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	read := func() map[string]any {
		var m map[string]any
		if err := c.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := read(); m["type"] != "hello" {
		t.Fatalf("first message %v", m)
	}
	sm.WaitConnected(t, 1)
	id := sm.SlashCommand(t, "U0SOMEONE1", "C0ALERTS1", "/mrbacd", "status")
	if m := read(); m["envelope_id"] != id || m["type"] != "slash_commands" || m["retry_attempt"] != float64(0) {
		t.Fatalf("envelope %v", m)
	}
	sm.Redeliver(t, id)
	if m := read(); m["envelope_id"] != id || m["retry_attempt"] != float64(1) || m["retry_reason"] != "timeout" {
		t.Fatalf("redelivery %v", m)
	}
	c.WriteJSON(map[string]any{"envelope_id": id, "payload": map[string]string{"text": "hi"}})
	if p := sm.WaitAck(t, id, 1); !strings.Contains(string(p), `"hi"`) {
		t.Fatalf("ack payload %s", p)
	}
	if sm.Opens() != 3 {
		t.Errorf("%d opens, want 3", sm.Opens())
	}
}
