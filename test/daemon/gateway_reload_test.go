package daemon_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/ctlsock"
	"github.com/mrbacd/mrbacd/internal/testenv"
)

// gatewayExtra is the roles and gateway config serving clients, each a
// "name=token" pair ("name=env:VAR" reads the token from $VAR).
func gatewayExtra(clients ...string) string {
	var b strings.Builder
	b.WriteString(`roles:
  analyst: {models: [mistral-small-latest], max_tokens_per_request: 500, daily_tokens: 100000}
gateway:
  listen: "127.0.0.1:0"
  clients:
`)
	for _, c := range clients {
		name, tok, _ := strings.Cut(c, "=")
		if env, ok := strings.CutPrefix(tok, "env:"); ok {
			fmt.Fprintf(&b, "    - {name: %s, role: analyst, workspace: dev-workspace, token_env: %s}\n", name, env)
			continue
		}
		sum := sha256.Sum256([]byte(tok))
		fmt.Fprintf(&b, "    - {name: %s, role: analyst, workspace: dev-workspace, token_sha256: %s}\n", name, hex.EncodeToString(sum[:]))
	}
	return b.String()
}

// TestGatewayTakesReloads: `ctl reload` and SIGHUP reach the gateway the
// daemon serves: an added client's token works at once, a removed one's is
// refused, and a gateway config that cannot be built is a reload note while
// the gateway keeps serving its previous clients.
func TestGatewayTakesReloads(t *testing.T) {
	e := newEnv(t, startSandbox(t))
	const (
		tokA = "gw-reload-token-client-a-0123456789"
		tokB = "gw-reload-token-client-b-0123456789"
	)
	e.writeConfig(cfgOpts{extra: gatewayExtra("app-a=" + tokA)})
	p := e.start()
	if r := e.ctl("run", "rotate", "--wait"); r.code != 0 {
		t.Fatalf("bootstrap: %+v", r)
	}
	url := "http://" + p.gatewayAddr(t) + "/v1/models"
	status := func(token string) int {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("gateway: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The gateway picks up the bootstrapped key within its poll interval.
	testenv.WaitFor(t, 10*time.Second, "client a to be served", func() bool { return status(tokA) == 200 })

	lastReload := func() *ctlsock.Reload {
		var st ctlsock.Status
		if r := e.ctlJSON(&st, "status"); r.code != 0 || st.LastReload == nil {
			t.Fatalf("status: %+v %+v", r, st.LastReload)
		}
		return st.LastReload
	}
	steps := []struct {
		name    string
		clients []string
		sighup  bool
		want    map[string]int // token → status right after the reload
		note    string         // a reload note expected ("" none about the gateway)
	}{
		{name: "ctl reload adds client b", clients: []string{"app-a=" + tokA, "app-b=" + tokB}, sighup: false,
			want: map[string]int{tokA: 200, tokB: 200}, note: ""},
		{name: "SIGHUP removes client a", clients: []string{"app-b=" + tokB}, sighup: true,
			want: map[string]int{tokA: 401, tokB: 200}, note: ""},
		{name: "unbuildable gateway config: a note, the previous clients kept",
			clients: []string{"app-a=" + tokA, "app-c=env:GW_RELOAD_TOKEN_NOT_SET"}, sighup: false,
			want: map[string]int{tokA: 401, tokB: 200}, note: "gateway not reloaded"},
	}
	for _, s := range steps {
		e.writeConfig(cfgOpts{extra: gatewayExtra(s.clients...)})
		if s.sighup {
			before := time.Now().UTC()
			p.cmd.Process.Signal(syscall.SIGHUP)
			testenv.WaitFor(t, 10*time.Second, "the SIGHUP reload", func() bool {
				var st ctlsock.Status
				r := e.ctlJSON(&st, "status")
				return r.code == 0 && st.LastReload != nil && !st.LastReload.At.Before(before) &&
					st.LastReload.Trigger == "signal"
			})
		} else if r := e.ctl("reload"); r.code != 0 {
			t.Fatalf("%s: ctl reload: %+v", s.name, r)
		} else if s.note != "" && !strings.Contains(r.stdout, s.note) {
			t.Errorf("%s: ctl reload does not show the note %q:\n%s", s.name, s.note, r.stdout)
		}
		rec := lastReload()
		if !rec.OK {
			t.Fatalf("%s: reload refused: %+v", s.name, rec)
		}
		notes := strings.Join(rec.Notes, "\n")
		switch {
		case s.note == "" && strings.Contains(notes, "gateway"):
			t.Errorf("%s: unexpected gateway note: %s", s.name, notes)
		case s.note != "" && !strings.Contains(notes, s.note):
			t.Errorf("%s: notes %q lack %q", s.name, notes, s.note)
		}
		for tok, want := range s.want {
			if got := status(tok); got != want {
				t.Errorf("%s: token %s…: status %d, want %d", s.name, tok[:18], got, want)
			}
		}
	}
	if strings.Contains(p.stderr.String(), tokA) || strings.Contains(p.stderr.String(), tokB) {
		t.Error("a client token in the daemon's log")
	}
	if code, _ := p.stop(t, syscall.SIGTERM, 6*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}
