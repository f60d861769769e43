package lineproto

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/fpagent/fpagent/storage"
)

// benchPayload is n lines of 94 bytes, 3 tags and 3 fields, over 1000 series.
func benchPayload(n int) []byte {
	var buf bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&buf, "cpu,host=server%03d,region=us-west,dc=dc1 usage_user=12.5,usage_system=3.2,usage_idle=84.3 %d\n",
			i%1000, 1700000000000000000+int64(i))
	}
	return buf.Bytes()
}

func BenchmarkParse(b *testing.B) {
	const lines = 5000
	data := benchPayload(lines)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var batch storage.Batch
	m := Meta{Source: "bench", Received: time.Unix(1700000000, 0)}
	for b.Loop() {
		batch.Points = batch.Points[:0]
		if n, r := Parse(&batch, data, m); n != lines || r != 0 {
			b.Fatalf("parsed %d points and %d rejects, want %d and 0", n, r, lines)
		}
	}
	b.ReportMetric(float64(b.N)*lines/b.Elapsed().Seconds(), "lines/s")
}
