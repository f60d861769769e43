// Package sdnotify tells systemd about the service's state (sd_notify(3)):
// one datagram of newline-separated VAR=value lines to the unix socket named
// by $NOTIFY_SOCKET. Without $NOTIFY_SOCKET every call does nothing, so the
// agent runs the same outside systemd.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// The states the agent sends.
const (
	Ready     = "READY=1"
	Stopping  = "STOPPING=1"
	Reloading = "RELOADING=1"
)

// Notifier sends state lines to systemd.
type Notifier struct {
	addr string // "" = not under systemd (or not Type=notify)
}

// New reads $NOTIFY_SOCKET. An abstract socket ("@name") is supported.
func New() *Notifier {
	return &Notifier{addr: os.Getenv("NOTIFY_SOCKET")}
}

// Enabled reports whether there is a socket to notify.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != "" }

// Notify sends the given lines as one datagram, e.g. Notify(Ready, Status("ready")).
func (n *Notifier) Notify(lines ...string) error {
	if !n.Enabled() {
		return nil
	}
	addr := n.addr
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("systemd notify socket %s: %w", n.addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(lines, "\n"))); err != nil {
		return fmt.Errorf("systemd notify socket %s: %w", n.addr, err)
	}
	return nil
}

// Status is a STATUS= line, shown by systemctl status. Line breaks become spaces.
func Status(s string) string {
	return "STATUS=" + strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}
