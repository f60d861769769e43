package socket

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// udpDropCounter reads how many datagrams the kernel dropped on conn's
// socket, from /proc/net/udp and udp6, where Linux counts them per socket.
type udpDropCounter struct{ ino uint64 }

func newUDPDropCounter(conn *net.UDPConn) (*udpDropCounter, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("fstat the UDP socket: %w", serr)
	}
	return &udpDropCounter{ino: st.Ino}, nil
}

// drops returns the kernel's drop count for the socket.
func (c *udpDropCounter) drops() (uint64, error) {
	for _, table := range []string{"/proc/self/net/udp", "/proc/self/net/udp6"} {
		f, err := os.Open(table)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return 0, err
		}
		d, found, err := parseUDPDrops(f, c.ino)
		f.Close()
		if err != nil || found {
			return d, err
		}
	}
	return 0, fmt.Errorf("socket inode %d is in neither /proc/self/net/udp nor udp6", c.ino)
}
