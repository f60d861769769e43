package socket

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/storage"
)

// countSink stores nothing: the benchmarks measure the listener alone.
type countSink struct{ points atomic.Int64 }

func (s *countSink) WriteBatch(_ context.Context, b *storage.Batch) error {
	s.points.Add(int64(len(b.Points)))
	return nil
}

// BenchmarkTCP sends 94-byte lines of 3 tags and 3 fields over 1000 series
// on one loopback connection, and reports points per second stored.
func BenchmarkTCP(b *testing.B) {
	var buf bytes.Buffer
	const lines = 100000
	for i := 0; i < lines; i++ {
		fmt.Fprintf(&buf, "cpu,host=server%03d,region=us-west,dc=dc1 usage_user=12.5,usage_system=3.2,usage_idle=84.3 %d\n",
			i%1000, 1700000000000000000+int64(i))
	}
	sink := new(countSink)
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
	b.SetBytes(int64(buf.Len()))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf.Bytes()); err != nil {
			b.Fatal(err)
		}
	}
	for sink.points.Load() < int64(b.N)*lines {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)*lines/b.Elapsed().Seconds(), "points/s")
}
