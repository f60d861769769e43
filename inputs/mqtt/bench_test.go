package mqtt

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/storage"
)

// nopSink takes every batch at once: the benchmarks measure the input alone
// (handler, batching, parsing, acks).
type nopSink struct{}

func (nopSink) WriteBatch(context.Context, *storage.Batch) error { return nil }

type benchMsg struct {
	payload []byte
	done    chan struct{}
}

func (m *benchMsg) Topic() string   { return "bench/a" }
func (m *benchMsg) Payload() []byte { return m.payload }
func (m *benchMsg) Qos() byte       { return 1 }
func (m *benchMsg) Duplicate() bool { return false }
func (m *benchMsg) Ack() {
	if m.done != nil {
		close(m.done)
	}
}

func benchInput(b *testing.B, pointsPer int) {
	var fc *fakeClient
	in, err := newInput(Options{Brokers: []string{"tcp://x:1"}, ClientID: "b", Subscriptions: []Subscription{{Topic: "bench/#", QoS: 1}}},
		nopSink{}, new(inputs.Counters), nil, func(_ *Options, ev events) (client, error) {
			fc = &fakeClient{ev: ev, journal: &journal{}}
			return fc, nil
		})
	if err != nil {
		b.Fatal(err)
	}
	in.Start()
	defer in.Stop(context.Background())
	var sb strings.Builder
	for j := 0; j < pointsPer; j++ {
		fmt.Fprintf(&sb, "bench,host=h%d,sensor=s%d temp=%d.5,hum=%di %d\n", j%10, j, j%40, j%100, 1700000000000000000+j)
	}
	payload := []byte(sb.String())
	msgs := make([]benchMsg, b.N)
	for i := range msgs {
		msgs[i].payload = payload
	}
	msgs[b.N-1].done = make(chan struct{})
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range msgs {
		fc.ev.onMessage(&msgs[i])
	}
	<-msgs[b.N-1].done
	b.ReportMetric(float64(b.N*pointsPer)/b.Elapsed().Seconds(), "points/s")
}

func BenchmarkInputOnePoint(b *testing.B)      { benchInput(b, 1) }
func BenchmarkInputHundredPoints(b *testing.B) { benchInput(b, 100) }
