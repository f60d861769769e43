package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// scenario is one row of the table: an input driven at a sync mode and a
// number of series.
type scenario struct {
	Input  string  // tcp | http | udp | mqtt
	PerMsg int     // MQTT: points per message
	Sync   string  // always | interval
	Series int     // distinct series the points spread over
	Points int64   // points per run
	Rate   float64 // points/s; 0 = as fast as the agent takes them
	Half   bool    // an HTTP run at half the rate sustained into DuckDB, for latency
	// Queued: MQTT messages published while the agent is down, queued by
	// the broker for its persistent session, and timed from the agent's
	// start until DuckDB holds them all: catching up after a restart or an
	// outage, with the broker only delivering.
	Queued bool
}

func (s scenario) name() string {
	n := s.Input
	if s.Input == "mqtt" {
		n = fmt.Sprintf("mqtt %d/msg", s.PerMsg)
	}
	if s.Queued {
		n += ", queued while the agent was down"
	}
	if s.Rate > 0 {
		n += " @ " + num(s.Rate) + " points/s"
	}
	return n
}

// key groups the runs of one scenario.
func (s scenario) key() string { return fmt.Sprintf("%s|%s|%d", s.name(), s.Sync, s.Series) }

// sample is one look at the agent during a run.
type sample struct {
	T         float64 // seconds since the load started
	Persisted uint64  // points the inputs have made durable
	Stored    uint64  // points in the WAL since start
	Flushed   uint64  // points in DuckDB since start
	Backlog   int64   // WAL bytes not yet in DuckDB
	RSS       int64
	CPU       float64 // CPU seconds since start of the process
}

// runResult is what one run of a scenario measured.
type runResult struct {
	Sc         scenario
	Sent       int64 // points the clients sent
	Points     int64 // points the agent acknowledged or persisted (and DuckDB holds)
	Ingest     time.Duration
	E2E        time.Duration
	MaxBacklog int64
	LagRate    float64         // points/s the unflushed backlog grew while the load ran
	LagOK      bool            // enough samples to tell LagRate
	Latencies  []time.Duration // HTTP requests due after the warm-up
	// WarmupLatencies are the HTTP requests due in the warm-up.
	WarmupLatencies []time.Duration
	Refused         int64
	CPU             float64 // agent CPU seconds from the first point until DuckDB had the last
	PeakRSS         int64
	DBBytes         int64
	AgentDrops      uint64 // points the agent counted as dropped (UDP)
	KernelDrops     uint64 // UDP datagrams the kernel dropped on the agent's socket
	Datagrams       int64  // UDP datagrams sent
	BrokerDrops     bool
	Samples         []sample
}

func (r runResult) ingestRate() float64 { return rate(r.Points, r.Ingest) }
func (r runResult) e2eRate() float64    { return rate(r.Points, r.E2E) }

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// flat says whether the unflushed backlog stayed flat at the rate the run
// sustained: it grew by less than 5% of the ingest rate.
func (r runResult) flat() bool { return r.LagOK && r.LagRate < 0.05*r.ingestRate() }

// env is what every run needs.
type env struct {
	bin        string
	mosquitto  string
	brokerConf string // more mosquitto.conf lines, ;-separated
	storage    string // more storage keys for every agent, one per line
	paho       bool   // publish with paho
	mqttAhead  int64  // points publishers may run ahead of the agent; 0: no limit
	workDir    string
	keep       bool
	conns      int // TCP connections, HTTP clients, UDP sockets, MQTT publishers
	tcpBatch   int
	httpBatch  int
	udpBatch   int
	warmup     time.Duration // HTTP latencies of requests due earlier in a run are kept apart
	interval   time.Duration // sampling period
	timeout    time.Duration // bound on one run
	logf       func(format string, args ...any)
}

// sampler looks at the agent every period until stopped.
type sampler struct {
	mu      sync.Mutex
	samples []sample
	stopped chan struct{}
	done    chan struct{}
}

func startSampler(a *agentProc, start time.Time, period time.Duration) *sampler {
	s := &sampler{stopped: make(chan struct{}), done: make(chan struct{})}
	take := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		asked := time.Since(start)
		st, err := a.stats(ctx)
		if err != nil {
			return
		}
		// The agent read its counters somewhere between the question and
		// the answer: the middle is the best guess.
		at := (asked + time.Since(start)) / 2
		smp := sample{T: at.Seconds(), Persisted: st.persisted(), Stored: st.StoredPoints,
			Flushed: st.FlushedTotal, Backlog: st.BacklogBytes}
		smp.RSS, _, _ = procMem(a.pid())
		smp.CPU, _ = procCPU(a.pid())
		s.mu.Lock()
		s.samples = append(s.samples, smp)
		s.mu.Unlock()
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(period)
		defer t.Stop()
		take()
		for {
			select {
			case <-t.C:
				take()
			case <-s.stopped:
				return
			}
		}
	}()
	return s
}

func (s *sampler) stop() []sample {
	close(s.stopped)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}

// runOnce starts an agent (and a broker for MQTT), drives the scenario's
// load into it, waits until DuckDB holds every point, checks the count,
// stops the agent and measures the file.
// runDir makes a fresh directory for one run under the work directory.
func (e env) runDir(prefix string) (string, error) { return os.MkdirTemp(e.workDir, prefix) }

// cleanRunDir, deferred, removes a run's directory when the run went well
// (and -keep is off), and otherwise names it in the error.
func (e env) cleanRunDir(dir string, err *error) {
	if *err != nil {
		*err = fmt.Errorf("%w\n(files of this run kept in %s)", *err, dir)
	} else if !e.keep {
		os.RemoveAll(dir)
	}
}

func runOnce(e env, sc scenario) (res runResult, err error) {
	res.Sc = sc
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	dir, err := e.runDir("run-")
	if err != nil {
		return res, err
	}
	defer e.cleanRunDir(dir, &err)
	cfg, err := newAgentConfig(dir, sc.Sync, sc.Input)
	if err != nil {
		return res, err
	}
	cfg.Storage = e.storage
	if sc.Series > 100000 && !strings.Contains(e.storage, "max_series") { // past the default storage.max_series
		cfg.Storage = fmt.Sprintf("max_series: %d\n%s", sc.Series, cfg.Storage)
	}
	var br *broker
	if sc.Input == "mqtt" {
		if br, err = startBroker(e.mosquitto, dir, e.brokerConf); err != nil {
			return res, err
		}
		defer br.stop()
		cfg.Broker = br.Addr
		cfg.Client = fmt.Sprintf("fpagent-bench-%d", time.Now().UnixNano())
	}
	a, err := startAgent(e.bin, dir, cfg)
	if err != nil {
		return res, err
	}
	defer a.kill()
	if _, err := a.waitReady(2 * time.Minute); err != nil {
		return res, err
	}
	gen, err := newLineGen(sc.Series)
	if err != nil {
		return res, err
	}

	var cpu0 float64 // a restarted agent's CPU counts from its exec, start-up included
	var start time.Time
	var queued sendResult
	if sc.Queued {
		if a, start, queued, err = queueThenRestart(ctx, e, sc, a, br, gen, dir, cfg); err != nil {
			return res, err
		}
		defer a.kill()
	} else {
		if cpu0, err = procCPU(a.pid()); err != nil {
			return res, fmt.Errorf("read the agent's CPU time: %w", err)
		}
		start = time.Now()
	}
	smp := startSampler(a, start, e.interval)
	l := load{gen: gen, points: sc.Points, workers: e.conns, pace: pacer{start: start, rate: sc.Rate}, warmup: e.warmup}
	var sent sendResult
	switch sc.Input {
	case "tcp":
		l.batch = e.tcpBatch
		sent, err = sendTCP(ctx, fmt.Sprintf("127.0.0.1:%d", cfg.TCP), l)
	case "http":
		l.batch = e.httpBatch
		sent, err = sendHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d", cfg.HTTP), l)
	case "udp":
		l.batch = e.udpBatch
		sent, err = sendUDP(ctx, fmt.Sprintf("127.0.0.1:%d", cfg.UDP), l)
	case "mqtt":
		if sc.Queued {
			sent = queued // published before the agent started
			break
		}
		l.batch, l.paho, l.ahead, l.progress = sc.PerMsg, e.paho, e.mqttAhead, a.persistedPoints
		sent, err = sendMQTT(ctx, br.Addr, l)
	default:
		err = fmt.Errorf("unknown input %q", sc.Input)
	}
	if err != nil {
		smp.stop()
		return res, fmt.Errorf("%s: %w\nagent log:\n%s", sc.name(), err, a.logTail())
	}
	res.Sent, res.Latencies, res.WarmupLatencies, res.Refused, res.Datagrams = sent.sent, sent.latencies, sent.warmupLatencies, sent.refused, sent.datagrams

	// Acknowledged: every point is durable in the WAL. UDP has no
	// acknowledgement and may lose datagrams: wait until the count settles.
	var ingestDone time.Time
	var last agentStats
	if sc.Input == "udp" {
		last, ingestDone, res.KernelDrops, err = waitUDP(ctx, a, cfg.UDP, sent.datagrams)
	} else {
		last, ingestDone, err = waitPersisted(ctx, a, uint64(sent.sent))
	}
	if err != nil {
		smp.stop()
		return res, err
	}
	res.Points = int64(last.persisted())
	res.Ingest = ingestDone.Sub(start)
	if in, ok := last.Inputs["udp"]; ok {
		res.AgentDrops = in.DroppedPoints
	}

	// End to end: DuckDB holds everything the WAL does.
	if err := a.flush(ctx); err != nil {
		smp.stop()
		return res, err
	}
	if _, err := a.waitCaughtUp(ctx, uint64(res.Points)); err != nil {
		smp.stop()
		return res, err
	}
	res.E2E = time.Since(start)
	cpu1, err := procCPU(a.pid())
	if err != nil {
		smp.stop()
		return res, err
	}
	res.CPU = cpu1 - cpu0
	_, res.PeakRSS, _ = procMem(a.pid())
	res.Samples = smp.stop()
	res.MaxBacklog, res.LagRate, res.LagOK = backlogGrowth(res.Samples, res.Ingest.Seconds())

	rows, err := a.count(ctx, "SELECT count(*) FROM points")
	if err != nil {
		return res, err
	}
	if rows != res.Points {
		return res, fmt.Errorf("%s: DuckDB holds %d points, the agent acknowledged %d: lost or duplicated points", sc.name(), rows, res.Points)
	}
	if err := a.stop(5 * time.Minute); err != nil {
		return res, err
	}
	res.DBBytes = dbBytes(cfg.DataDir)
	if br != nil {
		res.BrokerDrops = br.dropped()
	}
	return res, nil
}

// queueThenRestart stops the agent a, whose persistent session the broker
// keeps, publishes every message of sc, and starts the agent again on the
// same data directory. It returns the new agent, when it was started, and
// what was published.
func queueThenRestart(ctx context.Context, e env, sc scenario, a *agentProc, br *broker, gen lineGen,
	dir string, cfg agentConfig) (*agentProc, time.Time, sendResult, error) {
	if err := a.stop(time.Minute); err != nil {
		return nil, time.Time{}, sendResult{}, err
	}
	pub := load{gen: gen, points: sc.Points, workers: e.conns, batch: sc.PerMsg, pace: pacer{start: time.Now()}, paho: e.paho}
	sent, err := sendMQTT(ctx, br.Addr, pub)
	if err != nil {
		return nil, time.Time{}, sent, fmt.Errorf("%s: publish while the agent is down: %w", sc.name(), err)
	}
	if br.dropped() {
		return nil, time.Time{}, sent, fmt.Errorf("%s: mosquitto dropped queued messages:\n%s", sc.name(), br.log())
	}
	start := time.Now()
	b, err := startAgent(e.bin, dir, cfg)
	if err != nil {
		return nil, time.Time{}, sent, err
	}
	// The clock runs from the exec: the drain may begin before the admin
	// API answers, which is all that is waited for here.
	if _, err := b.waitFor("/health", 2*time.Minute); err != nil {
		b.kill()
		return nil, time.Time{}, sent, err
	}
	return b, start, sent, nil
}

// pollPeriod is how often the bench asks /stats whether a phase is over.
// A /stats answer costs the agent a few milliseconds of CPU (it queries
// DuckDB for its section), so polling faster would slow what is measured.
const pollPeriod = 50 * time.Millisecond

// waitPersisted polls /stats until the inputs have persisted want points.
func waitPersisted(ctx context.Context, a *agentProc, want uint64) (agentStats, time.Time, error) {
	for {
		st, err := a.stats(ctx)
		if err != nil {
			return st, time.Time{}, err
		}
		if st.persisted() >= want {
			return st, time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return st, time.Time{}, fmt.Errorf("the agent persisted %d of %d points: %w", st.persisted(), want, ctx.Err())
		case <-time.After(pollPeriod):
		}
	}
}

// waitUDP polls /stats until every datagram sent was either read by the
// agent (/stats payloads) or dropped by the kernel on its full socket
// (/proc/<pid>/net/udp), and every point read was settled. Without the
// kernel's count it falls back to waiting for the counts to stop changing.
func waitUDP(ctx context.Context, a *agentProc, port int, datagrams int64) (agentStats, time.Time, uint64, error) {
	if _, err := udpDrops(a.pid(), port); err != nil {
		st, at, err := waitSettled(ctx, a, 500*time.Millisecond)
		return st, at, 0, err
	}
	for {
		st, err := a.stats(ctx)
		if err != nil {
			return st, time.Time{}, 0, err
		}
		drops, err := udpDrops(a.pid(), port)
		if err != nil {
			return st, time.Time{}, 0, err
		}
		in := st.Inputs["udp"]
		if int64(in.Payloads+drops) >= datagrams && in.PersistedPoints+in.DroppedPoints+in.RejectedPoints >= in.ReceivedPoints {
			// Every datagram is read, but up to inputs.udp.queue_datagrams
			// of them may wait in the agent's queue, counted as points only
			// once parsed: wait for the counts to stop changing too.
			st, at, err := waitSettled(ctx, a, 300*time.Millisecond)
			if err == nil {
				drops, err = udpDrops(a.pid(), port)
			}
			return st, at, drops, err
		}
		select {
		case <-ctx.Done():
			return st, time.Time{}, drops, fmt.Errorf("UDP: %d datagrams sent, the agent read %d and the kernel dropped %d: %w",
				datagrams, in.Payloads, drops, ctx.Err())
		case <-time.After(pollPeriod):
		}
	}
}

// waitSettled polls /stats until the inputs' counts stop changing for
// quiet, and returns when they last changed.
func waitSettled(ctx context.Context, a *agentProc, quiet time.Duration) (agentStats, time.Time, error) {
	var last agentStats
	var key [3]uint64
	changed := time.Now()
	for {
		st, err := a.stats(ctx)
		if err != nil {
			return st, time.Time{}, err
		}
		k := [3]uint64{st.persisted(), 0, 0}
		for _, in := range st.Inputs {
			k[1] += in.ReceivedPoints
			k[2] += in.DroppedPoints + in.RejectedPoints
		}
		if k != key {
			key, last, changed = k, st, time.Now()
		} else if k[0]+k[2] >= k[1] && time.Since(changed) >= quiet {
			return last, changed, nil
		}
		select {
		case <-ctx.Done():
			return st, time.Time{}, ctx.Err()
		case <-time.After(pollPeriod):
		}
	}
}

// backlogGrowth returns the largest backlog seen and how fast the points
// not yet in DuckDB grew while the load ran (least squares over the samples
// after the first half second), with whether there were enough samples.
func backlogGrowth(ss []sample, loadSeconds float64) (maxBytes int64, slope float64, ok bool) {
	var xs, ys []float64
	for _, s := range ss {
		maxBytes = max(maxBytes, s.Backlog)
		if s.T >= 0.5 && s.T <= loadSeconds {
			xs = append(xs, s.T)
			ys = append(ys, float64(s.Stored)-float64(s.Flushed))
		}
	}
	if len(xs) < 6 {
		return maxBytes, 0, false
	}
	return maxBytes, linearSlope(xs, ys), true
}

// linearSlope is the least-squares slope of ys over xs.
func linearSlope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// recoveryResult is what one recovery run measured.
type recoveryResult struct {
	Bytes   int64 // unflushed WAL bytes at the kill
	Points  int64 // points in them
	Time    time.Duration
	PeakRSS int64
	Samples []sample
}

// runRecovery builds a backlog of at least target WAL bytes with a flusher
// that never runs (a huge batch_size and flush_interval), SIGKILLs the agent,
// restarts it on a normal config and times it until /ready, which it answers
// once DuckDB holds the whole WAL.
func runRecovery(e env, sync string, series int, target int64) (res recoveryResult, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	dir, err := e.runDir("recovery-")
	if err != nil {
		return res, err
	}
	defer e.cleanRunDir(dir, &err)
	cfg, err := newAgentConfig(dir, sync, "tcp")
	if err != nil {
		return res, err
	}
	cfg.Storage = fmt.Sprintf("batch_size: 1000000000\nflush_interval: 10000h\ndisk_budget: %d", 2*target+(256<<20))
	a, err := startAgent(e.bin, dir, cfg)
	if err != nil {
		return res, err
	}
	defer a.kill()
	if _, err := a.waitReady(2 * time.Minute); err != nil {
		return res, err
	}
	gen, err := newLineGen(series)
	if err != nil {
		return res, err
	}
	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	watchErr := make(chan error, 1)
	go func() {
		defer stopSending()
		for {
			st, err := a.stats(ctx)
			if err != nil {
				watchErr <- err
				return
			}
			if st.BacklogBytes >= target {
				watchErr <- nil
				return
			}
			select {
			case <-sendCtx.Done():
				watchErr <- nil
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	l := load{gen: gen, points: 1 << 40, workers: e.conns, batch: e.tcpBatch, pace: pacer{start: time.Now()}}
	_, err = sendTCP(sendCtx, fmt.Sprintf("127.0.0.1:%d", cfg.TCP), l)
	if err != nil && !errors.Is(err, context.Canceled) {
		return res, err
	}
	if err := <-watchErr; err != nil {
		return res, err
	}
	st, _, err := waitSettled(ctx, a, 300*time.Millisecond)
	if err != nil {
		return res, err
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("building a backlog of %d bytes: %w", target, ctx.Err())
	}
	res.Bytes = st.BacklogBytes
	res.Points = int64(st.StoredPoints - st.FlushedTotal)
	a.kill()
	e.logf("  recovery: killed the agent with %d MiB (%d points) unflushed", res.Bytes>>20, res.Points)

	cfg.Storage = ""
	b, err := startAgent(e.bin, dir, cfg)
	if err != nil {
		return res, err
	}
	defer b.kill()
	rss := startRSSWatch(b)
	ready, err := b.waitReady(e.timeout)
	res.Samples = rss.stop()
	if err != nil {
		return res, err
	}
	res.Time = ready.Sub(b.started)
	_, res.PeakRSS, _ = procMem(b.pid())
	after, err := b.stats(ctx)
	if err != nil {
		return res, err
	}
	if after.Checkpoint < after.WALLastPosition || int64(after.FlushedTotal) < res.Points {
		return res, fmt.Errorf("ready after recovery, but DuckDB has %d of %d points (checkpoint %d, WAL %d)",
			after.FlushedTotal, res.Points, after.Checkpoint, after.WALLastPosition)
	}
	return res, b.stop(5 * time.Minute)
}

// rssWatch samples a process's RSS while it recovers (its /stats may not
// answer yet).
type rssWatch struct {
	stopped chan struct{}
	done    chan []sample
}

func startRSSWatch(a *agentProc) *rssWatch {
	w := &rssWatch{stopped: make(chan struct{}), done: make(chan []sample, 1)}
	go func() {
		var ss []sample
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, _, err := procMem(a.pid()); err == nil {
				cpu, _ := procCPU(a.pid())
				ss = append(ss, sample{T: time.Since(a.started).Seconds(), RSS: rss, CPU: cpu})
			}
			select {
			case <-t.C:
			case <-w.stopped:
				w.done <- ss
				return
			}
		}
	}()
	return w
}

func (w *rssWatch) stop() []sample {
	close(w.stopped)
	return <-w.done
}
