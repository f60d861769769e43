package inputs

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Counters account for everything one input (named by its source, "http",
// "tcp", "udp", "mqtt") received. Its fields are atomics: inputs add to them on
// the hot path without locks. A point here is one line-protocol line (or
// reading), good or bad. Once every batch is settled,
//
//	ReceivedPoints = PersistedPoints + RejectedPoints + DroppedPoints.
type Counters struct {
	ReceivedPoints  atomic.Uint64 // lines read, good and bad
	PersistedPoints atomic.Uint64 // points the sink made durable
	RejectedPoints  atomic.Uint64 // bad lines, dead-lettered with their reason
	DroppedPoints   atomic.Uint64 // points not stored: queue full, pushed back or failed writes (HTTP and MQTT senders were told)
	ReceivedBytes   atomic.Uint64 // payload bytes read, before decompression

	Payloads            atomic.Uint64 // write requests, datagrams or messages
	Connections         atomic.Int64  // connections open now
	ConnectionsAccepted atomic.Uint64
	ConnectionsRefused  atomic.Uint64 // over the connection limit
	Oversize            atomic.Uint64 // lines over the line limit, bodies over the body limit
	Throttled           atomic.Uint64 // payloads refused with "retry later": over the request limit or pushed back
	Backpressure        atomic.Uint64 // times the sink pushed back (a TCP batch is retried each time)
	WriteErrors         atomic.Uint64 // sink failures other than backpressure
	// KernelDrops are datagrams the kernel discarded because the socket's
	// receive buffer was full (UDP on Linux): never received, so outside
	// the sum above.
	KernelDrops atomic.Uint64
}

// CounterSnapshot is a copy of Counters, as /stats shows it.
type CounterSnapshot struct {
	ReceivedPoints      uint64 `json:"received_points"`
	PersistedPoints     uint64 `json:"persisted_points"`
	RejectedPoints      uint64 `json:"rejected_points"`
	DroppedPoints       uint64 `json:"dropped_points"`
	ReceivedBytes       uint64 `json:"received_bytes"`
	Payloads            uint64 `json:"payloads"`
	Connections         int64  `json:"connections"`
	ConnectionsAccepted uint64 `json:"connections_accepted"`
	ConnectionsRefused  uint64 `json:"connections_refused"`
	Oversize            uint64 `json:"oversize"`
	Throttled           uint64 `json:"throttled"`
	Backpressure        uint64 `json:"backpressure"`
	WriteErrors         uint64 `json:"write_errors"`
	KernelDrops         uint64 `json:"kernel_dropped_datagrams,omitempty"`
}

// Snapshot copies the counters. Settled counts are read before received, so
// that a snapshot taken while batches are in flight never shows more settled
// than received.
func (c *Counters) Snapshot() CounterSnapshot {
	var s CounterSnapshot
	s.PersistedPoints = c.PersistedPoints.Load()
	s.RejectedPoints = c.RejectedPoints.Load()
	s.DroppedPoints = c.DroppedPoints.Load()
	s.ReceivedPoints = c.ReceivedPoints.Load()
	s.ReceivedBytes = c.ReceivedBytes.Load()
	s.Payloads = c.Payloads.Load()
	s.Connections = c.Connections.Load()
	s.ConnectionsAccepted = c.ConnectionsAccepted.Load()
	s.ConnectionsRefused = c.ConnectionsRefused.Load()
	s.Oversize = c.Oversize.Load()
	s.Throttled = c.Throttled.Load()
	s.Backpressure = c.Backpressure.Load()
	s.WriteErrors = c.WriteErrors.Load()
	s.KernelDrops = c.KernelDrops.Load()
	return s
}

// Registry holds the counters of every input by name. It is a
// prometheus.Collector: register it with the agent's registerer.
type Registry struct {
	mu     sync.Mutex
	inputs map[string]*Counters
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{inputs: make(map[string]*Counters)}
}

// Counters returns the counters of the named input, creating them on first
// use. Every call with the same name returns the same counters.
func (r *Registry) Counters(input string) *Counters {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.inputs[input]
	if !ok {
		c = new(Counters)
		r.inputs[input] = c
	}
	return c
}

// Snapshot copies the counters of every input, keyed by input name.
func (r *Registry) Snapshot() map[string]CounterSnapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]CounterSnapshot, len(r.inputs))
	for name, c := range r.inputs {
		out[name] = c.Snapshot()
	}
	return out
}

type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(*CounterSnapshot) float64
}

func newMetric(name, help string, kind prometheus.ValueType, value func(*CounterSnapshot) float64) metric {
	return metric{prometheus.NewDesc(name, help, []string{"input"}, nil), kind, value}
}

var metrics = []metric{
	newMetric("fpagent_input_received_points_total", "Lines (points) received, good and bad.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.ReceivedPoints) }),
	newMetric("fpagent_input_persisted_points_total", "Points made durable by the store.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.PersistedPoints) }),
	newMetric("fpagent_input_rejected_points_total", "Bad lines rejected and dead-lettered.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.RejectedPoints) }),
	newMetric("fpagent_input_dropped_points_total", "Points not stored: queue full, pushed back or failed writes.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.DroppedPoints) }),
	newMetric("fpagent_input_received_bytes_total", "Payload bytes received, before decompression.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.ReceivedBytes) }),
	newMetric("fpagent_input_payloads_total", "Write requests, datagrams or messages received.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.Payloads) }),
	newMetric("fpagent_input_connections", "Connections open now.",
		prometheus.GaugeValue, func(s *CounterSnapshot) float64 { return float64(s.Connections) }),
	newMetric("fpagent_input_connections_accepted_total", "Connections accepted.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.ConnectionsAccepted) }),
	newMetric("fpagent_input_connections_refused_total", "Connections refused over the connection limit.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.ConnectionsRefused) }),
	newMetric("fpagent_input_oversize_total", "Lines or bodies refused for being over their size limit.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.Oversize) }),
	newMetric("fpagent_input_throttled_total", "Payloads refused with retry-later: over the request limit or pushed back.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.Throttled) }),
	newMetric("fpagent_input_backpressure_total", "Times the store pushed back on a batch.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.Backpressure) }),
	newMetric("fpagent_input_write_errors_total", "Batches the store failed to write, other than by pushing back.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.WriteErrors) }),
	newMetric("fpagent_input_kernel_dropped_datagrams_total", "UDP datagrams the kernel dropped because the socket's receive buffer (inputs.udp.read_buffer, capped by net.core.rmem_max) was full.",
		prometheus.CounterValue, func(s *CounterSnapshot) float64 { return float64(s.KernelDrops) }),
}

// Describe implements prometheus.Collector.
func (r *Registry) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range metrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (r *Registry) Collect(ch chan<- prometheus.Metric) {
	snap := r.Snapshot()
	names := make([]string, 0, len(snap))
	for name := range snap {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, m := range metrics {
		for _, name := range names {
			s := snap[name]
			ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(&s), name)
		}
	}
}
