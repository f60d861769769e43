package sinktest

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"

	"github.com/fpagent/fpagent/storage"
)

// Counter is a sink that stores nothing and counts points, so that a
// benchmark measures an input alone.
type Counter struct{ Points atomic.Int64 }

// WriteBatch counts b's points.
func (c *Counter) WriteBatch(_ context.Context, b *storage.Batch) error {
	c.Points.Add(int64(len(b.Points)))
	return nil
}

// BenchLines returns n lines of line protocol with 3 tags and 3 fields over
// 1000 series, the benchmarks' standard workload.
func BenchLines(n int) []byte {
	var buf bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&buf, "cpu,host=server%03d,region=us-west,dc=dc1 usage_user=12.5,usage_system=3.2,usage_idle=84.3 %d\n",
			i%1000, 1700000000000000000+int64(i))
	}
	return buf.Bytes()
}
