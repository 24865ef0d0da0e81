package daemon_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
)

// gatewayAddr finds the gateway's address in the daemon's JSON log.
func (p *proc) gatewayAddr(t *testing.T) string {
	t.Helper()
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		var rec struct {
			Msg    string `json:"msg"`
			Listen string `json:"listen"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "gateway listening" && rec.Listen != "" {
			return rec.Listen
		}
	}
	t.Fatalf("no gateway address in the log:\n%s", p.stderr.String())
	return ""
}

func TestGatewayServedByTheDaemon(t *testing.T) {
	e := newEnv(t, startSandbox(t))
	const token = "gw-client-token-for-the-daemon-test"
	sum := sha256.Sum256([]byte(token))
	extra := `roles:
  analyst: {models: [mistral-small-latest], max_tokens_per_request: 500, daily_tokens: 100000}
gateway:
  listen: "127.0.0.1:0"
  clients:
    - {name: reporting-app, role: analyst, workspace: dev-workspace, token_sha256: ` + hex.EncodeToString(sum[:]) + `}
`
	e.writeConfig(cfgOpts{extra: extra})
	p := e.start()
	if r := e.ctl("run", "rotate", "--wait"); r.code != 0 {
		t.Fatalf("bootstrap: %+v", r)
	}
	url := "http://" + p.gatewayAddr(t) + "/v1/models"
	tests := []struct {
		name  string
		token string
		want  int
	}{
		{name: "known client", token: token, want: 200},
		{name: "unknown token", token: "nope", want: 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var code int
			// The gateway picks up the bootstrapped key within its poll interval.
			testenv.WaitFor(t, 10*time.Second, "the gateway to answer", func() bool {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Authorization", "Bearer "+tc.token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return false
				}
				resp.Body.Close()
				code = resp.StatusCode
				return code == tc.want
			})
		})
	}
	if code, _ := p.stop(t, syscall.SIGTERM, 6*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}
