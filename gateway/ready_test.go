package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	probe "github.com/mrbacd/mrbacd/metrics"
	"github.com/mrbacd/mrbacd/secrets"
)

// readyReason is the reason /readyz would serve for err ("" when ready).
func readyReason(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var nr *probe.NotReadyError
	if !errors.As(err, &nr) {
		t.Fatalf("Ready: %v is not a *probe.NotReadyError", err)
	}
	return nr.Reason
}

// TestReadyUpstreamKey: a workspace whose key is not in its store yet makes
// the gateway not ready, naming the workspace; once the key is written and
// read by the poller, it is ready.
func TestReadyUpstreamKey(t *testing.T) {
	missing := secrets.Target{Path: "mistral/ops-team"}
	e := newEnv(t,
		withWorkspace("ops-workspace", Workspace{}, map[string]string{"ops-dev": "developer"}),
		withOptions(func(o *Options) {
			up := o.Upstreams["ops-workspace"]
			up.KeyName, up.Target = "ops-team-key", missing
			o.Upstreams["ops-workspace"] = up
			o.KeyPollInterval = time.Hour // the test reads the store itself
		}))
	ctx := context.Background()
	if got, want := readyReason(t, e.gw.Ready(ctx)), "no upstream key for workspace ops-workspace"; got != want {
		t.Fatalf("Ready before the key is stored: reason %q, want %q", got, want)
	}
	k, err := e.sb.AddKey("ops-team-key", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.secrets = append(e.secrets, k.Plaintext)
	e.mu.Unlock()
	if _, err := e.store.Write(ctx, secrets.WriteRequest{Target: missing, IfVersion: secrets.NoVersion,
		Record: secrets.Record{APIKey: k.Plaintext, KeyID: k.ID, KeyName: k.Name, CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if err := e.gw.snap.Load().keys["ops-workspace"].poll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.gw.Ready(ctx); err != nil {
		t.Fatalf("Ready once every workspace has its key: %v", err)
	}
	// A 401 re-read leaves the cached key in place: still ready.
	kc := e.gw.snap.Load().keys[testWorkspace]
	if _, err := kc.reload(ctx, kc.get()); err != nil {
		t.Fatal(err)
	}
	if err := e.gw.Ready(ctx); err != nil {
		t.Fatalf("Ready after a re-read: %v", err)
	}
}

// TestReadyJournalUnreachable: a journal that does not answer makes the
// gateway not ready, without its error's text in the reason.
func TestReadyJournalUnreachable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.gw.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	e.db.Close()
	err := e.gw.Ready(ctx)
	if got, want := readyReason(t, err), "journal unreachable"; got != want {
		t.Fatalf("Ready with the journal closed: reason %q, want %q (err %v)", got, want, err)
	}
	if errors.Unwrap(err) == nil {
		t.Fatalf("Ready with the journal closed: no cause logged (%v)", err)
	}
}

// TestReadyDraining: once Serve's context ends the gateway answers
// "draining" while a request is still in flight, and after it closed.
func TestReadyDraining(t *testing.T) {
	var stall atomic.Bool
	entered, release := make(chan struct{}, 1), make(chan struct{})
	e := newEnv(t, withHandler(func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if stall.Load() && r.URL.Path == pathChat {
				entered <- struct{}{}
				<-release
			}
			h.ServeHTTP(w, r)
		})
	}))
	o := e.opts
	o.Registerer = prometheus.NewRegistry()
	gw, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ctx, ln) }()
	if err := gw.Ready(context.Background()); err != nil {
		t.Fatalf("Ready while serving: %v", err)
	}
	stall.Store(true)
	answered := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+pathChat,
			strings.NewReader(chatBody("mistral-small-latest", 10, false, "hello")))
		req.Header.Set("Authorization", "Bearer "+e.tokens["analyst"])
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-entered
	cancel()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for readyReason(t, gw.Ready(context.Background())) != "draining" {
		select {
		case <-deadline.C:
			t.Fatal("Ready never answered draining after shutdown began")
		case <-tick.C:
		}
	}
	close(release)
	if code := <-answered; code != http.StatusOK {
		t.Fatalf("the request in flight during the drain answered %d, want 200", code)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if got := readyReason(t, gw.Ready(context.Background())); got != "draining" {
		t.Fatalf("Ready after Serve returned: reason %q, want draining", got)
	}
}
