package outputs

import "github.com/prometheus/client_golang/prometheus"

// Collector exports every output's figures, labelled by output name and type.
type Collector struct{ fwds []*Forwarder }

// NewCollector returns a Collector of fwds.
func NewCollector(fwds []*Forwarder) *Collector { return &Collector{fwds: fwds} }

func desc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("fpagent_output_"+name, help, []string{"output", "type"}, nil)
}

var (
	descCursor       = desc("cursor_position", "WAL position up to which the remote side has accepted everything.")
	descLagRecords   = desc("lag_records", "WAL records not yet accepted by the remote side.")
	descLagBytes     = desc("lag_bytes", "WAL bytes not yet accepted by the remote side.")
	descLagSeconds   = desc("lag_seconds", "Seconds since the output last had nothing left to send (0 when caught up).")
	descBudget       = desc("disk_budget_bytes", "WAL bytes the output may leave behind it before its on_full policy applies.")
	descSent         = desc("sent_points_total", "Points the remote side accepted.")
	descBatches      = desc("sent_batches_total", "Batches the remote side accepted.")
	descFailed       = desc("failed_sends_total", "Sends that failed (each is retried).")
	descRetries      = desc("retries_total", "Sends retried after a failure.")
	descDeadLettered = desc("dead_lettered_points_total", "Points refused for good (or not encodable), kept in the dead-letter table.")
	descDrops        = desc("drops_total", "Times the output was over its disk budget under on_full: drop_oldest and skipped WAL segments.")
	descDroppedRecs  = desc("dropped_records_total", "WAL records skipped unsent under on_full: drop_oldest.")
	descDroppedBytes = desc("dropped_bytes_total", "WAL bytes skipped unsent under on_full: drop_oldest.")
	descUp           = desc("up", "1 when the last send succeeded, 0 while sends fail.")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCursor, descLagRecords, descLagBytes, descLagSeconds, descBudget,
		descSent, descBatches, descFailed, descRetries, descDeadLettered, descDrops, descDroppedRecs, descDroppedBytes, descUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range c.fwds {
		st := f.Stats()
		l := []string{f.cfg.Name, f.cfg.Type}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
		}
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
		}
		gauge(descCursor, float64(st.Cursor))
		gauge(descLagRecords, float64(st.LagRecords))
		gauge(descLagBytes, float64(st.LagBytes))
		gauge(descLagSeconds, st.LagSeconds)
		gauge(descBudget, float64(st.DiskBudget))
		counter(descSent, st.SentPoints)
		counter(descBatches, st.SentBatches)
		counter(descFailed, st.Failures)
		counter(descRetries, st.Retries)
		counter(descDeadLettered, st.DeadLettered)
		counter(descDrops, st.Drops)
		counter(descDroppedRecs, st.DroppedRecords)
		counter(descDroppedBytes, st.DroppedBytes)
		up := 0.0
		if st.Healthy {
			up = 1
		}
		gauge(descUp, up)
	}
}
