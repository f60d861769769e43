package lineproto

import (
	"bytes"
	"fmt"
	"syscall"
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
	cpu0 := cpuTime()
	for b.Loop() {
		batch.Points = batch.Points[:0]
		if n, r := Parse(&batch, data, m); n != lines || r != 0 {
			b.Fatalf("parsed %d points and %d rejects, want %d and 0", n, r, lines)
		}
	}
	b.ReportMetric(float64(b.N)*lines/b.Elapsed().Seconds(), "lines/s")
	// The machine is shared: lines per CPU second (of every thread of the
	// process, the garbage collector's included) is what a core does.
	b.ReportMetric(float64(b.N)*lines/(cpuTime()-cpu0).Seconds(), "lines/cpu-s")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkParseDecoderOnly is the same payload through the decoder alone,
// as lines with strings and first sightings of a series go.
func BenchmarkParseDecoderOnly(b *testing.B) {
	const lines = 5000
	data := benchPayload(lines)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var batch storage.Batch
	p := newParser()
	p.noFast = true
	m := Meta{Source: "bench", Received: time.Unix(1700000000, 0)}
	cpu0 := cpuTime()
	for b.Loop() {
		batch.Points = batch.Points[:0]
		if n, r := p.parse(&batch, data, &m); n != lines || r != 0 {
			b.Fatalf("parsed %d points and %d rejects, want %d and 0", n, r, lines)
		}
	}
	b.ReportMetric(float64(b.N)*lines/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(b.N)*lines/(cpuTime()-cpu0).Seconds(), "lines/cpu-s")
}
