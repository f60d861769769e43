package httpwrite

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/sinktest"
)

// BenchmarkWrite posts 5000-line bodies of 94-byte lines from 4 clients and
// reports points per second answered 204; the sink stores nothing.
func BenchmarkWrite(b *testing.B) {
	const lines = 5000
	body := sinktest.BenchLines(lines)
	h, err := NewHandler(Options{}, new(sinktest.Counter), new(inputs.Counters), nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
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
