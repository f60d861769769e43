package httpwrite

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/storage"
)

type countSink struct{ points atomic.Int64 }

func (s *countSink) WriteBatch(_ context.Context, b *storage.Batch) error {
	s.points.Add(int64(len(b.Points)))
	return nil
}

// BenchmarkWrite posts 5000-line bodies of 94-byte lines from 4 clients and
// reports points per second answered 204; the sink stores nothing.
func BenchmarkWrite(b *testing.B) {
	var buf bytes.Buffer
	const lines = 5000
	for i := 0; i < lines; i++ {
		fmt.Fprintf(&buf, "cpu,host=server%03d,region=us-west,dc=dc1 usage_user=12.5,usage_system=3.2,usage_idle=84.3 %d\n",
			i%1000, 1700000000000000000+int64(i))
	}
	h, err := NewHandler(Options{}, new(countSink), new(inputs.Counters), nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := buf.Bytes()
	b.SetBytes(int64(len(body)))
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				resp, err := http.Post(srv.URL+"/api/v2/write?bucket=b", "text/plain", bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 204 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)*lines/b.Elapsed().Seconds(), "points/s")
}
