package socket

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/sinktest"
)

// BenchmarkTCP sends 94-byte lines of 3 tags and 3 fields over 1000 series
// on one loopback connection, and reports points per second stored.
func BenchmarkTCP(b *testing.B) {
	const lines = 100000
	body := sinktest.BenchLines(lines)
	sink := new(sinktest.Counter)
	l, err := NewTCP(TCPOptions{Addr: "127.0.0.1:0"}, sink, new(inputs.Counters), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := l.Start(); err != nil {
		b.Fatal(err)
	}
	defer l.Stop(context.Background())
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(body); err != nil {
			b.Fatal(err)
		}
	}
	for sink.Points.Load() < int64(b.N)*lines {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)*lines/b.Elapsed().Seconds(), "points/s")
}
