package socket

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/sinktest"
)

func startUDP(t *testing.T, opts UDPOptions, sink inputs.Sink) (*UDP, *inputs.Counters, net.Conn) {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	c := new(inputs.Counters)
	u, err := NewUDP(opts, sink, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", u.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := u.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return u, c, conn
}

func TestUDPMixedLines(t *testing.T) {
	sink := sinktest.New()
	_, counters, conn := startUDP(t, UDPOptions{ReadBufferBytes: 1 << 20}, sink)
	send(t, conn, "cpu v=1 1\nnot line protocol\ncpu v=2 2\n\x00\xff\xfe garbage\ncpu v=3 3")
	send(t, conn, "cpu v=4 4\n")
	if !sink.WaitFor(4, 2, 5*time.Second) {
		t.Fatalf("got %d points and %d rejects", len(sink.Points()), len(sink.Rejects()))
	}
	waitSettled(t, counters)
	lines := map[int]bool{}
	for _, r := range sink.Rejects() {
		lines[r.Line] = true
		if r.Source != "udp" || r.Origin != conn.LocalAddr().String() {
			t.Errorf("reject from %q %q, want udp and %s", r.Source, r.Origin, conn.LocalAddr())
		}
	}
	if !lines[2] || !lines[4] {
		t.Errorf("rejected lines %v, want 2 and 4", lines)
	}
	s := settled(t, counters)
	if s.PersistedPoints != 4 || s.RejectedPoints != 2 || s.Payloads != 2 {
		t.Errorf("counters %+v", s)
	}
}

func TestUDPTruncatedDatagram(t *testing.T) {
	sink := sinktest.New()
	_, counters, conn := startUDP(t, UDPOptions{MaxDatagramBytes: 40}, sink)
	send(t, conn, "cpu v=1 1\ncpu v=2 2\ncpu v=3 3\ncpu v=4444444 4\n") // cut inside the 4th line
	if !sink.WaitFor(3, 1, 5*time.Second) {
		t.Fatalf("got %d points and %d rejects", len(sink.Points()), len(sink.Rejects()))
	}
	if r := sink.Rejects()[0]; r.Line != 4 || !strings.Contains(r.Reason, "max_datagram_bytes (40)") || string(r.Payload) != "cpu v=4444" {
		t.Errorf("reject %+v", r)
	}
	waitSettled(t, counters)
	if s := settled(t, counters); s.Oversize != 1 || len(sink.Points()) != 3 {
		t.Errorf("counters %+v, points %d", s, len(sink.Points()))
	}
}

// TestUDPDropsWhatItCannotStore: with a slow sink and a queue of one
// datagram, what does not fit is dropped and counted; a sink that pushes
// back drops its batch.
func TestUDPDropsWhatItCannotStore(t *testing.T) {
	sink := sinktest.New()
	sink.Delay(50 * time.Millisecond)
	u, counters, conn := startUDP(t, UDPOptions{QueueDatagrams: 1, BatchLines: 1}, sink)
	for i := 0; i < 50; i++ {
		send(t, conn, fmt.Sprintf("cpu v=%d %d\ncpu v=%d %d\n", i, i, i, i+1))
	}
	waitUntil(t, "every datagram is read", func() bool { return counters.Payloads.Load() == 50 })
	sink.Delay(0)
	sink.PushBack(1, time.Second)
	send(t, conn, "cpu v=1 1\n")
	waitUntil(t, "the pushed-back datagram is counted", func() bool { return counters.Backpressure.Load() == 1 })
	if err := u.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := settled(t, counters)
	if s.ReceivedPoints != 101 || s.DroppedPoints == 0 || s.PersistedPoints == 0 || s.PersistedPoints != uint64(len(sink.Points())) {
		t.Errorf("counters %+v, sink holds %d points", s, len(sink.Points()))
	}
}

// waitSettled waits until every line received is counted as settled: the
// sink holds a batch a moment before the listener counts it.
func waitSettled(t *testing.T, c *inputs.Counters) {
	t.Helper()
	waitUntil(t, "the counters settle", func() bool {
		s := c.Snapshot()
		return s.ReceivedPoints == s.PersistedPoints+s.RejectedPoints+s.DroppedPoints
	})
}
