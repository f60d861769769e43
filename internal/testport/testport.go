// Package testport hands tests free ports on 127.0.0.1.
package testport

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Free returns a port on 127.0.0.1 that was free for TCP and UDP a moment
// ago and that it has not returned before in this process: the kernel may
// hand one ephemeral port to two listeners opened and closed one after the
// other, and an agent given one port for two inputs refuses its config.
func Free(t testing.TB) int {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		if !given[port] {
			given[port] = true
			return port
		}
	}
	t.Fatal("no free port on 127.0.0.1 in 100 tries that was not handed out before")
	return 0
}

// Addr is Free as "127.0.0.1:port".
func Addr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Free(t)))
}
