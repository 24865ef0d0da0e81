//go:build !linux

package ctlsock

import (
	"errors"
	"net"
)

// peerCred is only implemented on Linux; elsewhere every peer is refused.
func peerCred(net.Conn) (uint32, int32, error) {
	return 0, 0, errors.New("peer credentials are only checked on linux")
}
