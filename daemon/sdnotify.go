package daemon

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// SdNotify sends state (e.g. "READY=1") to systemd's notification socket
// named by $NOTIFY_SOCKET, using the stdlib only. It returns false, nil when
// the variable is unset (not run by systemd with Type=notify).
func SdNotify(state string) (bool, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return false, nil
	}
	if name[0] == '@' { // abstract namespace
		name = "\x00" + name[1:]
	} else if name[0] != '/' {
		return false, fmt.Errorf("sd_notify: NOTIFY_SOCKET %q is neither a path nor an abstract socket", name)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	return true, nil
}

// reloadingState is the message sent when a reload begins.
func reloadingState() string {
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10)
}

// WatchdogInterval returns how often to send WATCHDOG=1 (half the
// configured WatchdogSec), and false when the watchdog is not enabled for
// this process ($WATCHDOG_USEC unset, or $WATCHDOG_PID names another process).
func WatchdogInterval() (time.Duration, bool) {
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0, false
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" {
		if pid, err := strconv.Atoi(p); err != nil || pid != os.Getpid() {
			return 0, false
		}
	}
	return time.Duration(us) * time.Microsecond / 2, true
}
