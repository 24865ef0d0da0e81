// Package sandboxtest serves a sandbox for tests behind the contract
// checker, so every answer a test sees is checked against Mistral's
// published spec (package contract).
package sandboxtest

import (
	"net/http/httptest"
	"testing"

	"github.com/mrbacd/mrbacd/mistral/contract"
	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// Serve starts sb on a local port behind the contract checker and closes
// it at cleanup, when t also fails on every answer off the spec. With
// checkRequests, requests off the spec fail t too: for tests of a client,
// not for tests that send bad requests on purpose.
func Serve(t testing.TB, sb *sandbox.Server, checkRequests bool) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(contract.Install(t, sb, checkRequests))
	t.Cleanup(ts.Close)
	return ts
}
