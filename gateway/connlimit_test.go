package gateway

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts the connections its listener accepted.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// heldConn is a client connection kept open (keep-alive) after its request.
type heldConn struct {
	c  net.Conn
	br *bufio.Reader
}

// dialModels opens a connection to addr and writes a models request on it.
func dialModels(t *testing.T, addr, token string) *heldConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("GET " + pathModels + " HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + token + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	return &heldConn{c: c, br: bufio.NewReader(c)}
}

// status reads the answer's status (the body is drained; the connection stays open).
func (h *heldConn) status() (int, error) {
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	drain(resp.Body)
	return resp.StatusCode, nil
}

// TestMaxConnections: with max_connections 2 and two connections held open,
// a third client's request is not served until one of them closes; its
// slot is then released once (the third takes it, a fourth waits again).
func TestMaxConnections(t *testing.T) {
	e := newEnv(t, withOptions(func(o *Options) { o.MaxConnections = 2 }))
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &countingListener{Listener: inner}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.gw.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	addr, tok := inner.Addr().String(), e.tokens["unbounded"]

	held := []*heldConn{dialModels(t, addr, tok), dialModels(t, addr, tok)}
	for i, h := range held {
		if code, err := h.status(); err != nil || code != http.StatusOK {
			t.Fatalf("connection %d: status %d, %v", i, code, err)
		}
	}
	// notServed checks that h gets no answer while the two slots are held.
	notServed := func(h *heldConn, which string, accepted int64) {
		t.Helper()
		h.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := h.br.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the %s client was answered (%v) while two connections were held", which, err)
		}
		h.c.SetReadDeadline(time.Time{})
		if n := ln.accepted.Load(); n != accepted {
			t.Fatalf("%d connections accepted, want %d", n, accepted)
		}
	}
	third := dialModels(t, addr, tok)
	notServed(third, "third", 2)

	held[0].c.Close()
	var code atomic.Int64
	go func() {
		c, _ := third.status()
		code.Store(int64(c))
	}()
	eventually(t, "the third client to be served once a connection closed", func() bool { return code.Load() == http.StatusOK })
	if n := ln.accepted.Load(); n != 3 {
		t.Fatalf("%d connections accepted, want 3", n)
	}
	// The closed connection released its slot once: the cap is still 2.
	notServed(dialModels(t, addr, tok), "fourth", 3)
}
