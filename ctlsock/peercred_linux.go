package ctlsock

import (
	"fmt"
	"net"
	"syscall"
)

// peerCred returns the uid and pid of the process at the other end of a
// unix-socket connection (SO_PEERCRED: the credentials at connect time).
func peerCred(c net.Conn) (uid uint32, pid int32, err error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, 0, fmt.Errorf("peer credentials: not a unix socket (%T)", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return 0, 0, fmt.Errorf("peer credentials: SO_PEERCRED: %w", serr)
	}
	return cred.Uid, cred.Pid, nil
}
