package socket

import (
	"net"
	"testing"
	"time"
)

// A socket nobody reads, with a small receive buffer, flooded: the kernel
// drops datagrams and the counter sees them.
func TestUDPDropCounter(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	c, err := newUDPDropCounter(conn)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := c.drops(); err != nil || d != 0 {
		t.Fatalf("before sending: %d drops, %v", d, err)
	}
	out, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	payload := make([]byte, 1024)
	for range 500 {
		out.Write(payload)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, err := c.drops()
		if err != nil {
			t.Fatal(err)
		}
		if d > 0 {
			t.Logf("%d of 500 datagrams dropped", d)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("500 KiB sent into a 4 KiB buffer nobody reads and no drop counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
