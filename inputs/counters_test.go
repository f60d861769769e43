package inputs

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRegistryCounters(t *testing.T) {
	r := NewRegistry()
	if a, b := r.Counters("tcp"), r.Counters("tcp"); a != b {
		t.Fatal("Counters returned different counters for the same input")
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				c := r.Counters("http")
				c.ReceivedPoints.Add(3)
				c.PersistedPoints.Add(2)
				c.RejectedPoints.Add(1)
				c.Connections.Add(1)
				c.Connections.Add(-1)
			}
		}()
	}
	wg.Wait()
	s := r.Snapshot()["http"]
	if s.ReceivedPoints != 24000 || s.PersistedPoints != 16000 || s.RejectedPoints != 8000 || s.Connections != 0 {
		t.Fatalf("snapshot %+v", s)
	}
	b, err := json.Marshal(r.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"http":{`, `"tcp":{`, `"received_points":24000`, `"connections_refused":0`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("snapshot JSON %s lacks %s", b, key)
		}
	}
}

func TestRegistryMetrics(t *testing.T) {
	r := NewRegistry()
	r.Counters("udp").DroppedPoints.Add(7)
	r.Counters("tcp").Connections.Add(2)
	r.Counters("udp").KernelDrops.Store(5)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(r); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP fpagent_input_connections Connections open now.
# TYPE fpagent_input_connections gauge
fpagent_input_connections{input="tcp"} 2
fpagent_input_connections{input="udp"} 0
# HELP fpagent_input_dropped_points_total Points not stored: queue full, pushed back or failed writes.
# TYPE fpagent_input_dropped_points_total counter
fpagent_input_dropped_points_total{input="tcp"} 0
fpagent_input_dropped_points_total{input="udp"} 7
# HELP fpagent_input_kernel_dropped_datagrams_total UDP datagrams the kernel dropped because the socket's receive buffer (inputs.udp.read_buffer, capped by net.core.rmem_max) was full.
# TYPE fpagent_input_kernel_dropped_datagrams_total counter
fpagent_input_kernel_dropped_datagrams_total{input="tcp"} 0
fpagent_input_kernel_dropped_datagrams_total{input="udp"} 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"fpagent_input_connections", "fpagent_input_dropped_points_total", "fpagent_input_kernel_dropped_datagrams_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(r); n != 2*len(metrics) {
		t.Errorf("collected %d metrics, want %d", n, 2*len(metrics))
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
