package socket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/sinktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startTCP(t *testing.T, opts TCPOptions, sink inputs.Sink) (*TCP, *inputs.Counters) {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	c := new(inputs.Counters)
	l, err := NewTCP(opts, sink, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return l, c
}

func dial(t *testing.T, addr net.Addr) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func send(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

// settled fails unless every line received is accounted for.
func settled(t *testing.T, c *inputs.Counters) inputs.CounterSnapshot {
	t.Helper()
	s := c.Snapshot()
	if s.ReceivedPoints != s.PersistedPoints+s.RejectedPoints+s.DroppedPoints {
		t.Errorf("received %d != persisted %d + rejected %d + dropped %d", s.ReceivedPoints,
			s.PersistedPoints, s.RejectedPoints, s.DroppedPoints)
	}
	return s
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTCPMixedLines(t *testing.T) {
	sink := sinktest.New()
	l, counters := startTCP(t, TCPOptions{MaxLineBytes: 100, ReadBytes: 64}, sink)
	c := dial(t, l.Addr())
	long := "cpu v=" + strings.Repeat("9", 300) + " 4"
	// A long line that spans reads, bad lines, CRLF and a last line without a newline.
	send(t, c, "cpu v=1 1\nbad line\r\ncpu v=2 2\n"+long+"\ncpu,host=a v= 5\n\ncpu v=3 3\r\n# comment\ncpu v=4 4")
	c.CloseWrite()
	if !sink.WaitFor(4, 3, 5*time.Second) {
		t.Fatalf("got %d points and %d rejects", len(sink.Points()), len(sink.Rejects()))
	}
	var got []string
	for _, p := range sink.Points() {
		got = append(got, fmt.Sprint(p.Fields[0].Value.Float()))
	}
	if strings.Join(got, " ") != "1 2 3 4" {
		t.Errorf("stored values %v, want 1 2 3 4", got)
	}
	lines := map[int]string{}
	for _, r := range sink.Rejects() {
		if r.Source != "tcp" || r.Origin != c.LocalAddr().String() {
			t.Errorf("reject from %q %q, want tcp and the peer %s", r.Source, r.Origin, c.LocalAddr())
		}
		lines[r.Line] = r.Reason
	}
	if len(lines) != 3 || !strings.Contains(lines[4], "max_line_bytes (100)") || lines[2] == "" || lines[5] == "" {
		t.Errorf("rejects by line: %v", lines)
	}
	waitUntil(t, "the connection is closed", func() bool { return counters.Connections.Load() == 0 })
	s := settled(t, counters)
	if s.PersistedPoints != 4 || s.RejectedPoints != 3 || s.Oversize != 1 || s.ConnectionsAccepted != 1 {
		t.Errorf("counters %+v", s)
	}
}

func TestTCPGarbageKeepsConnection(t *testing.T) {
	sink := sinktest.New()
	l, counters := startTCP(t, TCPOptions{}, sink)
	c := dial(t, l.Addr())
	garbage := make([]byte, 100000)
	rand.New(rand.NewSource(1)).Read(garbage)
	send(t, c, "cpu v=1 1\n")
	send(t, c, string(garbage))
	send(t, c, "\ncpu v=2 2\n")
	if !sink.WaitFor(2, 1, 5*time.Second) {
		t.Fatalf("got %d points and %d rejects after garbage", len(sink.Points()), len(sink.Rejects()))
	}
	// Still serving the same connection.
	send(t, c, "cpu v=3 3\n")
	if !sink.WaitFor(3, 1, 5*time.Second) {
		t.Fatal("the connection stopped serving after garbage")
	}
	c.Close()
	waitUntil(t, "the connection is closed", func() bool { return counters.Connections.Load() == 0 })
	settled(t, counters)
}

func TestTCPConnectionLimit(t *testing.T) {
	sink := sinktest.New()
	l, counters := startTCP(t, TCPOptions{MaxConnections: 2}, sink)
	a, b := dial(t, l.Addr()), dial(t, l.Addr())
	waitUntil(t, "two connections are open", func() bool { return counters.Connections.Load() == 2 })
	extra := dial(t, l.Addr())
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("a connection over the limit read %v, want it closed", err)
	}
	send(t, a, "cpu v=1 1\n")
	send(t, b, "cpu v=2 2\n")
	if !sink.WaitFor(2, 0, 5*time.Second) {
		t.Fatal("connections within the limit were not served")
	}
	if s := counters.Snapshot(); s.ConnectionsRefused != 1 || s.ConnectionsAccepted != 2 {
		t.Errorf("counters %+v", s)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestTCPIdleTimeout: a sender trickling one byte at a time without ever
// finishing a line is closed; another connection is served meanwhile.
func TestTCPIdleTimeout(t *testing.T) {
	sink := sinktest.New()
	l, counters := startTCP(t, TCPOptions{IdleTimeout: 300 * time.Millisecond}, sink)
	slow, fast := dial(t, l.Addr()), dial(t, l.Addr())
	closed := make(chan error, 1)
	go func() {
		_, err := slow.Read(make([]byte, 1))
		closed <- err
	}()
	start := time.Now()
	trickle := time.NewTicker(50 * time.Millisecond)
	defer trickle.Stop()
	sent := 0
	for {
		select {
		case err := <-closed:
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the trickling connection was closed after %v, want about 300ms", d)
			}
			if !errors.Is(err, io.EOF) && !isReset(err) {
				t.Errorf("trickling connection read %v, want EOF", err)
			}
			send(t, fast, "cpu v=-1 0\n")
			if !sink.WaitFor(sent+1, 0, 5*time.Second) {
				t.Fatalf("the other connection stored %d of %d points", len(sink.Points()), sent+1)
			}
			// What the trickler sent is a line that never ended: rejected.
			waitUntil(t, "the trickled bytes are rejected", func() bool { return len(sink.Rejects()) == 1 })
			waitUntil(t, "the trickler is counted out", func() bool { return counters.Connections.Load() == 1 })
			return
		case <-trickle.C:
			slow.Write([]byte{'x'})
			send(t, fast, fmt.Sprintf("cpu v=%d %d\n", sent, sent))
			sent++
			if time.Since(start) > 5*time.Second {
				t.Fatal("the trickling connection was never closed")
			}
		}
	}
}

// TestTCPBackpressureStopsReading: while the sink pushes back, the listener
// stops reading, so the sender blocks; nothing read is lost once it recovers.
func TestTCPBackpressureStopsReading(t *testing.T) {
	if testing.Short() {
		t.Skip("writes until the kernel buffers are full")
	}
	sink := sinktest.New()
	sink.PushBack(1<<30, 20*time.Millisecond)
	l, counters := startTCP(t, TCPOptions{}, sink)
	c := dial(t, l.Addr())
	c.SetWriteBuffer(64 << 10)
	line := "cpu,host=server01,region=us-west,dc=dc1 usage_user=12.5,usage_system=3.2,usage_idle=84.3 1700000000000000000\n"
	chunk := []byte(strings.Repeat(line, (1<<20)/len(line)))
	written, blocked := 0, false
	for written < 64<<20 {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		n, err := c.Write(chunk)
		written += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			blocked = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !blocked {
		t.Fatalf("wrote %d MiB while the sink pushed back: the listener kept reading", written>>20)
	}
	if got := len(sink.Points()); got != 0 {
		t.Fatalf("sink stored %d points while pushing back", got)
	}
	// Let the sink recover, then finish the line cut by the timeout.
	sink.PushBack(0, 0)
	c.SetWriteDeadline(time.Time{})
	send(t, c, line[written%len(line):])
	written += len(line) - written%len(line)
	c.CloseWrite()
	want := written / len(line)
	if !sink.WaitFor(want, 0, 20*time.Second) {
		t.Fatalf("stored %d of %d points after the sink recovered", len(sink.Points()), want)
	}
	waitUntil(t, "the connection is closed", func() bool { return counters.Connections.Load() == 0 })
	s := settled(t, counters)
	if s.DroppedPoints != 0 || s.PersistedPoints != uint64(want) || s.Backpressure == 0 {
		t.Errorf("counters %+v, want %d persisted and none dropped", s, want)
	}
	t.Logf("sender blocked after %d MiB; %d retries", written>>20, s.Backpressure)
}

func TestTCPFailingSinkClosesConnection(t *testing.T) {
	sink := sinktest.New()
	sink.Fail(errors.New("disk on fire"))
	l, counters := startTCP(t, TCPOptions{}, sink)
	c := dial(t, l.Addr())
	send(t, c, "cpu v=1 1\ncpu v=2 2\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("read %v, want the connection closed", err)
	}
	waitUntil(t, "the connection is closed", func() bool { return counters.Connections.Load() == 0 })
	s := settled(t, counters)
	if s.DroppedPoints != 2 || s.WriteErrors != 1 {
		t.Errorf("counters %+v", s)
	}
}

func TestTCPStopWaitsForInFlight(t *testing.T) {
	sink := sinktest.New()
	sink.Delay(200 * time.Millisecond)
	c := new(inputs.Counters)
	l, err := NewTCP(TCPOptions{Addr: "127.0.0.1:0", BatchLines: 10}, sink, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, l.Addr())
	var buf bytes.Buffer
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&buf, "cpu v=%d %d\n", i, i)
	}
	send(t, conn, buf.String()+"cpu v=100 100") // the last line is still open
	waitUntil(t, "lines are read", func() bool { return c.ReceivedPoints.Load() >= 10 })
	time.Sleep(50 * time.Millisecond)
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(sink.Points()); got != 101 {
		t.Errorf("Stop returned with %d of 101 points stored", got)
	}
	settled(t, c)
}

func TestTCPStopGivesUpUnderBackpressure(t *testing.T) {
	sink := sinktest.New()
	sink.PushBack(1<<30, 10*time.Millisecond)
	c := new(inputs.Counters)
	l, err := NewTCP(TCPOptions{Addr: "127.0.0.1:0"}, sink, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, l.Addr())
	send(t, conn, "cpu v=1 1\ncpu v=2 2\n")
	waitUntil(t, "the sink pushes back", func() bool { return c.Backpressure.Load() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := l.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want the deadline", err)
	}
	if s := settled(t, c); s.DroppedPoints != 2 {
		t.Errorf("counters %+v, want the 2 points dropped", s)
	}
}

func TestTCPOptionsValidated(t *testing.T) {
	if _, err := NewTCP(TCPOptions{MaxLineBytes: -1}, sinktest.New(), new(inputs.Counters), nil); err == nil {
		t.Error("NewTCP accepted a negative MaxLineBytes")
	}
	l, err := NewTCP(TCPOptions{Addr: "127.0.0.1:1"}, sinktest.New(), new(inputs.Counters), nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.opts.MaxConnections != DefaultMaxConnections || l.opts.MaxLineBytes != 64<<10 || l.opts.BatchLines != 5000 {
		t.Errorf("defaults not applied: %+v", l.opts)
	}
}
