package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// median of xs; NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	// The epsilon keeps 99.9/100*1000 = 999.0000000000001 from rounding up.
	i := int(math.Ceil(p/100*float64(len(s))-1e-9)) - 1
	return s[max(0, min(i, len(s)-1))]
}

// row is the medians of one scenario's runs.
type row struct {
	Sc             scenario
	Runs, Failed   int
	Points         float64
	Ingest, E2E    float64 // points/s
	MaxBacklog     float64 // bytes
	Flat           int     // runs whose backlog stayed flat
	FlatKnown      int     // runs long enough to tell
	P50, P99, P999 float64 // ms
	Requests       int     // HTTP requests per run
	WarmupRequests int     // of which due in the warm-up, left out of P50-P999
	WholeP99       float64 // ms, the warm-up included
	CPUPerM        float64 // CPU seconds per million points
	PeakRSS        float64 // bytes
	BytesPerPoint  float64
	LostPct        float64 // UDP: sent but never persisted, percent
	AgentDropPct   float64 // UDP: what the agent counted as dropped, percent of sent
	KernelDropPct  float64 // UDP: datagrams the kernel dropped, percent of those sent
	Refused        float64
	BrokerDrops    bool
}

func summarize(sc scenario, runs []runResult, failed int) row {
	r := row{Sc: sc, Runs: len(runs), Failed: failed}
	var pts, in, e2e, backlog, p50, p99, p999, wholeP99, cpu, rss, bpp, lost, agentDrops, kernelDrops, refused []float64
	for _, x := range runs {
		pts = append(pts, float64(x.Points))
		in = append(in, x.ingestRate())
		e2e = append(e2e, x.e2eRate())
		backlog = append(backlog, float64(x.MaxBacklog))
		if x.LagOK {
			r.FlatKnown++
			if x.flat() {
				r.Flat++
			}
		}
		if len(x.Latencies)+len(x.WarmupLatencies) > 0 {
			if len(x.Latencies) > 0 { // else the run was all warm-up
				p50 = append(p50, ms(percentile(x.Latencies, 50)))
				p99 = append(p99, ms(percentile(x.Latencies, 99)))
				p999 = append(p999, ms(percentile(x.Latencies, 99.9)))
			}
			whole := append(append([]time.Duration(nil), x.Latencies...), x.WarmupLatencies...)
			wholeP99 = append(wholeP99, ms(percentile(whole, 99)))
			r.Requests, r.WarmupRequests = len(whole), len(x.WarmupLatencies)
		}
		if x.Points > 0 {
			cpu = append(cpu, x.CPU/(float64(x.Points)/1e6))
			bpp = append(bpp, float64(x.DBBytes)/float64(x.Points))
		}
		rss = append(rss, float64(x.PeakRSS))
		if x.Sent > 0 {
			lost = append(lost, 100*float64(x.Sent-x.Points)/float64(x.Sent))
			agentDrops = append(agentDrops, 100*float64(x.AgentDrops)/float64(x.Sent))
		}
		if x.Datagrams > 0 {
			kernelDrops = append(kernelDrops, 100*float64(x.KernelDrops)/float64(x.Datagrams))
		}
		refused = append(refused, float64(x.Refused))
		r.BrokerDrops = r.BrokerDrops || x.BrokerDrops
	}
	r.Points, r.Ingest, r.E2E, r.MaxBacklog = median(pts), median(in), median(e2e), median(backlog)
	r.P50, r.P99, r.P999, r.WholeP99 = median(p50), median(p99), median(p999), median(wholeP99)
	r.CPUPerM, r.PeakRSS, r.BytesPerPoint = median(cpu), median(rss), median(bpp)
	r.LostPct, r.AgentDropPct, r.KernelDropPct, r.Refused = median(lost), median(agentDrops), median(kernelDrops), median(refused)
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// recoveryRow is the medians of the recovery runs.
type recoveryRow struct {
	Sync          string
	Runs, Failed  int
	Bytes, Points float64
	Seconds       float64
	PeakRSS       float64
}

func summarizeRecovery(sync string, rs []recoveryResult, failed int) recoveryRow {
	r := recoveryRow{Sync: sync, Runs: len(rs), Failed: failed}
	var b, p, s, rss []float64
	for _, x := range rs {
		b = append(b, float64(x.Bytes))
		p = append(p, float64(x.Points))
		s = append(s, x.Time.Seconds())
		rss = append(rss, float64(x.PeakRSS))
	}
	r.Bytes, r.Points, r.Seconds, r.PeakRSS = median(b), median(p), median(s), median(rss)
	return r
}

// forwardRow is the median of the forwarding runs.
type forwardRow struct {
	Sync                 string
	Series, Runs, Failed int
	Points, Backlog      float64
	Forward, InCentral   float64 // seconds
	EdgeCPU, CentralCPU  float64
	EdgeRSS, CentralRSS  float64
}

func summarizeForward(sync string, series int, rs []forwardResult, failed int) forwardRow {
	r := forwardRow{Sync: sync, Series: series, Runs: len(rs), Failed: failed}
	var p, b, f, c, ec, cc, er, cr []float64
	for _, x := range rs {
		p, b = append(p, float64(x.Points)), append(b, float64(x.Backlog))
		f, c = append(f, x.Forward.Seconds()), append(c, x.InCentral.Seconds())
		ec, cc = append(ec, x.EdgeCPU), append(cc, x.CentralCPU)
		er, cr = append(er, float64(x.EdgeRSS)), append(cr, float64(x.CentralRSS))
	}
	r.Points, r.Backlog, r.Forward, r.InCentral = median(p), median(b), median(f), median(c)
	r.EdgeCPU, r.CentralCPU, r.EdgeRSS, r.CentralRSS = median(ec), median(cc), median(er), median(cr)
	return r
}

// report is everything the table is made of.
type report struct {
	Machine     machine
	BrokerConf  string
	Storage     string // extra storage keys, as given to -storage
	Publisher   string
	Command     string
	Warmup      time.Duration // HTTP latencies leave out requests due this early in a run
	MQTTAhead   int64         // points MQTT publishers may run ahead of the agent
	Runs        int
	Rows        []row
	Recovery    []recoveryRow
	Forward     []forwardRow
	SubBaseline *subBaseline
	Elapsed     time.Duration
}

// num formats n with thousands separators.
func num(n float64) string {
	if math.IsNaN(n) {
		return "–"
	}
	s := fmt.Sprintf("%.0f", n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func dec(n float64, places int) string {
	if math.IsNaN(n) {
		return "–"
	}
	return fmt.Sprintf("%.*f", places, n)
}

func mib(n float64) string { return dec(n/(1<<20), 1) }

// writeMarkdown writes the report as Markdown.
func (rep report) writeMarkdown(w io.Writer) {
	m := rep.Machine
	fmt.Fprintf(w, "## fpagent benchmark\n\n")
	fmt.Fprintf(w, "- Machine: %s, %d cores, %.1f GiB RAM, Linux %s; data directory on %s\n",
		m.CPU, m.Cores, float64(m.RAM)/(1<<30), m.Kernel, m.FS)
	broker := "mosquitto on its defaults but max_queued_messages 0"
	if rep.BrokerConf != "" {
		broker += " and " + rep.BrokerConf
	}
	broker += ", MQTT publisher " + rep.Publisher
	if rep.MQTTAhead > 0 {
		broker += fmt.Sprintf(" at most %s points ahead of what the agent has persisted", num(float64(rep.MQTTAhead)))
	}
	fmt.Fprintf(w, "- fpagent %s (commit %s), %s, DuckDB %s; %s\n", m.AgentVersion, m.Commit, m.GoVersion, m.DuckDB, broker)
	if rep.Storage != "" {
		fmt.Fprintf(w, "- Storage settings beyond the defaults: `%s`\n", rep.Storage)
	}
	fmt.Fprintf(w, "- Started %s, took %s; load average (1, 5, 15 min) %s before, %s after",
		m.Started.Format(time.RFC3339), rep.Elapsed.Round(time.Second), m.LoadBefore, m.LoadAfter)
	if busy(m.LoadBefore, m.Cores) || busy(m.LoadAfter, m.Cores) {
		fmt.Fprintf(w, " (**the machine was busy with other work: the figures are noisy**)")
	}
	fmt.Fprintf(w, "\n- Command: `%s`; each figure is the median of %d runs\n\n", rep.Command, rep.Runs)

	if len(rep.Rows) > 0 {
		fmt.Fprintln(w, "| input | sync | series | points | acked points/s | in DuckDB points/s | max backlog MiB | backlog flat | ack p50 ms | p99 ms | p99.9 ms | CPU s / M points | peak RSS MiB | DuckDB bytes/point | lost |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
		for _, r := range rep.Rows {
			writeRow(w, r)
		}
		fmt.Fprintln(w)
	}
	if len(rep.Recovery) > 0 {
		fmt.Fprintln(w, "| recovery | sync | WAL backlog MiB | points | time to /ready s | points/s | MB/s | peak RSS MiB |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|")
		for _, r := range rep.Recovery {
			if r.Runs == 0 {
				fmt.Fprintf(w, "| kill -9, restart | %s | failed (%d runs) | | | | | |\n", r.Sync, r.Failed)
				continue
			}
			fmt.Fprintf(w, "| kill -9, restart | %s | %s | %s | %s | %s | %s | %s |\n", r.Sync, mib(r.Bytes), num(r.Points),
				dec(r.Seconds, 2), num(r.Points/r.Seconds), dec(r.Bytes/r.Seconds/1e6, 1), mib(r.PeakRSS))
		}
		fmt.Fprintln(w)
	}
	if len(rep.Forward) > 0 {
		fmt.Fprintln(w, "| forwarding a backlog (influx output to a central fpagent) | sync | series | points | backlog MiB | forwarded points/s | in central DuckDB points/s | edge CPU s / M points | central CPU s / M points | edge peak RSS MiB | central peak RSS MiB |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, r := range rep.Forward {
			if r.Runs == 0 {
				fmt.Fprintf(w, "| edge -> central | %s | %s | failed (%d runs) | | | | | | | |\n", r.Sync, num(float64(r.Series)), r.Failed)
				continue
			}
			fmt.Fprintf(w, "| edge -> central | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Sync, num(float64(r.Series)),
				num(r.Points), mib(r.Backlog), num(r.Points/r.Forward), num(r.Points/r.InCentral),
				dec(r.EdgeCPU/r.Points*1e6, 2), dec(r.CentralCPU/r.Points*1e6, 2), mib(r.EdgeRSS), mib(r.CentralRSS))
		}
		fmt.Fprintln(w)
	}
	if b := rep.SubBaseline; b != nil && len(b.Rates) == 0 {
		fmt.Fprintf(w, "Broker baseline: every mosquitto_sub run failed (the bench's log says why).\n\n")
	} else if b != nil {
		fmt.Fprintf(w, "Broker baseline: the mqtt 1/msg load (%s messages, the same publishers) into `mosquitto_sub -q 1 -c` as the only subscriber, no agent: %s messages/s (median of %d runs: %s; mosquitto_sub used %s CPU s).\n\n",
			num(float64(b.Messages)), num(median(b.Rates)), len(b.Rates), joinNums(b.Rates), dec(median(b.SubCPU), 2))
	}
	if t := rep.targets(); t != "" {
		fmt.Fprintf(w, "Targets (issues 5 and 6, 1,000 series, sync=always):\n\n%s\n", t)
	}
	fmt.Fprint(w, strings.ReplaceAll(legend, "{warmup}", rep.Warmup.String()))
}

func writeRow(w io.Writer, r row) {
	name := r.Sc.name()
	if r.Sc.Half {
		name += " (half the sustained maximum)"
	}
	if r.Runs == 0 {
		fmt.Fprintf(w, "| %s | %s | %s | failed (%d runs) | | | | | | | | | | | |\n", name, r.Sc.Sync, num(float64(r.Sc.Series)), r.Failed)
		return
	}
	acked := num(r.Ingest)
	inDB := num(r.E2E)
	if r.Sc.Input == "mqtt" {
		acked += fmt.Sprintf(" (%s msg/s)", num(r.Ingest/float64(r.Sc.PerMsg)))
		inDB += fmt.Sprintf(" (%s msg/s)", num(r.E2E/float64(r.Sc.PerMsg)))
	}
	flat := "–"
	if r.FlatKnown > 0 {
		flat = "yes"
		if r.Flat < r.FlatKnown {
			flat = fmt.Sprintf("no (%d of %d runs grew)", r.FlatKnown-r.Flat, r.FlatKnown)
		}
	}
	p50, p99, p999 := "–", "–", "–"
	if r.Requests > 0 {
		p50, p99, p999 = dec(r.P50, 1), dec(r.P99, 1), dec(r.P999, 1)
		if r.WarmupRequests > 0 {
			p99 += fmt.Sprintf(" (%s with the warm-up)", dec(r.WholeP99, 1))
		}
	}
	lost := "–"
	if r.Sc.Input == "udp" {
		lost = fmt.Sprintf("%s%% (kernel %s%%, agent %s%%)", dec(r.LostPct, 1), dec(r.KernelDropPct, 1), dec(r.AgentDropPct, 1))
	}
	points := num(r.Points)
	if r.Requests > 0 {
		points += fmt.Sprintf(" (%s requests", num(float64(r.Requests)))
		if r.WarmupRequests > 0 {
			points += fmt.Sprintf(", %s in the warm-up", num(float64(r.WarmupRequests)))
		}
		points += ")"
	}
	if r.BrokerDrops {
		lost = "broker dropped"
	}
	if r.Failed > 0 {
		name += fmt.Sprintf(" (%d failed)", r.Failed)
	}
	fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
		name, r.Sc.Sync, num(float64(r.Sc.Series)), points, acked, inDB, mib(r.MaxBacklog), flat,
		p50, p99, p999, dec(r.CPUPerM, 2), mib(r.PeakRSS), dec(r.BytesPerPoint, 1), lost)
}

// busy tells whether a load average is above the number of cores.
func busy(load string, cores int) bool {
	var one float64
	if _, err := fmt.Sscan(load, &one); err != nil {
		return false
	}
	return one > float64(cores)
}

// targets compares the rows with the figures issues 5 and 6 ask for.
func (rep report) targets() string {
	var b strings.Builder
	check := func(what string, got, want float64, unit string, less bool) {
		ok := got >= want
		if less {
			ok = got < want
		}
		verdict := "met"
		if !ok {
			verdict = "**missed**"
		}
		fmt.Fprintf(&b, "- %s: %s %s (target %s%s) — %s\n", what, num(got), unit, map[bool]string{true: "under ", false: "at least "}[less], num(want), verdict)
	}
	for _, r := range rep.Rows {
		if r.Sc.Series != 1000 || r.Sc.Sync != "always" || r.Runs == 0 {
			continue
		}
		switch {
		case r.Sc.Input == "tcp":
			check("TCP into DuckDB", r.E2E, 700_000, "points/s", false)
		case r.Sc.Input == "http" && !r.Sc.Half:
			check("HTTP into DuckDB", r.E2E, 700_000, "points/s", false)
		case r.Sc.Input == "http" && r.Sc.Half:
			fmt.Fprintf(&b, "- HTTP ack p99 at half the sustained maximum rate: %s ms after the warm-up, %s ms over the whole run (target under 50 ms) — %s\n",
				dec(r.P99, 1), dec(r.WholeP99, 1), map[bool]string{true: "met", false: "**missed**"}[r.P99 < 50])
		case r.Sc.Input == "mqtt" && r.Sc.PerMsg == 1 && !r.Sc.Queued:
			check("MQTT QoS 1, 1 point/message, into DuckDB", r.E2E, 40_000, "messages/s", false)
		case r.Sc.Input == "mqtt" && r.Sc.PerMsg == 100 && !r.Sc.Queued:
			check("MQTT QoS 1, 100 points/message, into DuckDB", r.E2E, 600_000, "points/s", false)
		case r.Sc.Input == "mqtt" && r.Sc.PerMsg == 1:
			check("MQTT QoS 1, 1 point/message, queued while the agent was down, into DuckDB", r.E2E, 40_000, "messages/s", false)
		case r.Sc.Input == "mqtt" && r.Sc.PerMsg == 100:
			check("MQTT QoS 1, 100 points/message, queued while the agent was down, into DuckDB", r.E2E, 600_000, "points/s", false)
		}
	}
	return b.String()
}

const legend = `What the columns mean:
- points: points acknowledged per run (HTTP: 204 answers; TCP, UDP and MQTT: the agent's /stats persisted_points, which for MQTT precede its PUBACK to the broker).
- acked points/s: from the first point sent until the agent had made the last one durable in its WAL (HTTP: the last 204; TCP, UDP, MQTT: /stats persisted_points).
- in DuckDB points/s: from the first point sent until DuckDB held every one (/stats checkpoint reached wal_last_position after POST /api/v1/flush); the count in DuckDB is checked against the acknowledged count.
- max backlog: the largest /stats backlog_bytes (WAL bytes not yet in DuckDB) sampled every 250 ms. Backlog flat: the points not yet in DuckDB grew by less than 5% of the ingest rate while the load ran (least squares over the samples).
- ack p50/p99/p99.9: HTTP only, each 5,000-line request until its 204, which the agent sends once the points are durable. In a rate-limited run latency counts from when the request was due, so a late answer that delays the next request is not hidden. Requests due in the first {warmup} of a run are left out (the warm-up: the agent's heap, pools and DuckDB's buffers grow from nothing while the first requests arrive, all four at once); the points column says how many, and the p99 column gives the whole run's p99 too, in brackets. With few requests per run, p99.9 is the slowest one.
- CPU s / M points: the agent's user+system CPU seconds (/proc/<pid>/stat) from the first point until DuckDB had the last, per million points.
- peak RSS: the agent's VmHWM (/proc/<pid>/status) at the end of the run, start-up included.
- DuckDB bytes/point: the size of fpagent.duckdb after a clean stop divided by the points in it.
- lost (UDP): sent but never persisted, as a share of what was sent; apart, the datagrams the kernel dropped because the agent's socket buffer was full (/proc/<pid>/net/udp drops; inputs.udp.read_buffer is capped by net.core.rmem_max) and the points the agent dropped because its queue was full (/stats dropped_points). Without -udp-rate the senders flood: the loss says how far past its capacity that is.
- queued while the agent was down (MQTT): the messages are published while the agent is stopped and mosquitto keeps them for its persistent session; for these rows every clock (acked, in DuckDB, CPU) starts at the agent's exec, start-up included, instead of at the first point sent.
- recovery: a backlog built with a flusher that never runs (huge batch_size and flush_interval), the agent SIGKILLed, restarted on a normal config and timed from exec until /ready answers 200, which it does once DuckDB holds the whole WAL.
- forwarding a backlog: an edge agent takes the points over TCP while its influx output points at a central agent that is not running; once they are durable (and in the edge's own DuckDB), the central agent starts. Forwarded points/s: from its start until the edge's output had nothing left to send (every batch acknowledged with a 204, so durable in the central WAL); in central DuckDB points/s: until POST /api/v1/flush on the central agent returned and its count matched. CPU per million points: the edge while forwarding, the central agent from its start. Both agents and the sender share the machine.
- The load generators run on the same machine as the agent and take CPU from it.
`

// joinNums formats xs with thousands separators, separated by " / ".
func joinNums(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = num(x)
	}
	return strings.Join(s, " / ")
}
