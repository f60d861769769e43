// Command bench is fpagent's published benchmark. It builds the real binary,
// starts it on free loopback ports with a fresh data directory per run,
// drives it with real clients (raw TCP and UDP sockets, HTTP POSTs to
// /api/v2/write, MQTT publishers through mosquitto), and measures points/s
// acknowledged and points/s into DuckDB, the backlog, HTTP ack latency, CPU
// per million points, peak RSS, DuckDB bytes per point, and the recovery of
// a backlog after kill -9. It prints a Markdown table of the medians of
// several runs and can draw an SVG of throughput and RSS over the runs.
//
//	go run ./e2e/bench -quick                     # every input, small, under a minute
//	go run ./e2e/bench                            # the default table (about 15 minutes on 2 cores)
//	go run ./e2e/bench -series 10,1000,100000 -recovery-bytes 1GiB -out results.md -plot bench.svg
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	bin, out, plot, dir   string
	brokerConf, publisher string
	storage               string
	inputs, syncs         []string
	series                []int
	points, mqttMessages  int64
	runs, conns           int
	halfRequests          int
	tcpBatch, httpBatch   int
	udpBatch              int
	rate, udpRate         float64
	half, keep, quick     bool
	subBaseline           bool
	mqttQueued            bool
	recoveryBytes         size
	forward               int64
	timeout, interval     time.Duration
	warmup                time.Duration
	mqttAhead             int64
}

// size is a byte count flag: 1GiB, 256MiB, 64KiB, 1GB, 500MB or bytes.
type size int64

func (s *size) String() string {
	n := int64(*s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (s *size) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = size(n)
	return nil
}

func parseSize(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}, {"", 1}}
	s := strings.TrimSpace(v)
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || n < 0 {
				break
			}
			return int64(n * float64(u.mult)), nil
		}
	}
	return 0, fmt.Errorf("size %q: want a number of bytes or one with KiB, MiB, GiB, KB, MB or GB", v)
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	o.recoveryBytes = 256 << 20
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	inputs := fs.String("inputs", "tcp,http,udp,mqtt", "inputs to drive: tcp, http, udp, mqtt (both MQTT shapes), mqtt1, mqtt100")
	syncs := fs.String("sync", "always,interval", "storage.sync modes: always, interval, none")
	series := fs.String("series", "1000", "comma-separated series counts (issue 5: 1000; issue 8: 10,100000)")
	fs.StringVar(&o.bin, "bin", "", "fpagent binary to run (default: go build -trimpath ./cmd/fpagent into a temp dir)")
	fs.Int64Var(&o.points, "points", 1_500_000, "points per run for tcp, http, udp and mqtt 100/msg")
	fs.Int64Var(&o.mqttMessages, "mqtt-messages", 150_000, "messages per run for mqtt 1/msg")
	fs.IntVar(&o.runs, "runs", 3, "runs per scenario; the table shows medians")
	fs.Float64Var(&o.rate, "rate", 0, "points/s to send at (0: as fast as the agent takes them)")
	fs.Float64Var(&o.udpRate, "udp-rate", 0, "points/s to send UDP at, overriding -rate for UDP (0: flood, and count what is lost)")
	fs.BoolVar(&o.half, "half", true, "also run HTTP at half the rate it sustained into DuckDB, for ack latency (ignored with -rate)")
	fs.IntVar(&o.halfRequests, "half-requests", 0, "requests at least in a half-rate HTTP run (0: as many as -points makes; with 300 requests a p99 is the third slowest, 1200 gives it more weight)")
	fs.IntVar(&o.conns, "conns", 4, "TCP connections, HTTP clients, UDP sockets and MQTT publishers")
	fs.IntVar(&o.tcpBatch, "tcp-batch", 700, "lines per TCP write (700 lines are about 64 KiB)")
	fs.IntVar(&o.httpBatch, "http-batch", 5000, "lines per HTTP request body")
	fs.Int64Var(&o.mqttAhead, "mqtt-ahead", 200_000, "MQTT publishers wait while they are this many points ahead of what the agent has persisted, so that the broker does not pile up gigabytes (0: no limit)")
	fs.BoolVar(&o.mqttQueued, "mqtt-queued", true, "also run each MQTT scenario with its messages published while the agent is down and queued by the broker, timed from the agent's start (ignored with -rate)")
	fs.BoolVar(&o.subBaseline, "sub-baseline", false, "also time the mqtt 1/msg load into mosquitto_sub instead of the agent: the broker's and publishers' own limit on this machine (needs mosquitto-clients)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "HTTP requests due in this first part of a run are left out of the ack latency percentiles (the agent's heap and pools grow from nothing then); the report gives the whole run's p99 too")
	fs.IntVar(&o.udpBatch, "udp-batch", 40, "lines per UDP datagram")
	fs.Int64Var(&o.forward, "forward", 0, "also time forwarding a backlog of this many points from an edge agent to a central one over the influx output (issue 9: 10000000; 0: skip)")
	fs.Var(&o.recoveryBytes, "recovery-bytes", "WAL backlog to recover after kill -9, e.g. 1GiB (0: skip the recovery runs)")
	fs.StringVar(&o.storage, "storage", "", `more storage keys for the agent, separated by ";" (e.g. "duckdb: {threads: 2}; sync_interval: 10ms"); the table says so`)
	fs.StringVar(&o.brokerConf, "broker-conf", "", `more mosquitto.conf lines, separated by ";" (e.g. "max_inflight_messages 1000"); the table says so`)
	fs.StringVar(&o.publisher, "publisher", "raw", "MQTT publisher: raw (a lean MQTT 3.1.1 QoS 1 publisher, little CPU taken from the agent) or paho")
	fs.StringVar(&o.out, "out", "", "also write the Markdown table to this file")
	fs.StringVar(&o.plot, "plot", "", "write an SVG of throughput and RSS over each scenario's median run to this file")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "directory for the runs' data directories (its disk decides what fsync costs)")
	fs.BoolVar(&o.keep, "keep", false, "keep the runs' data directories and logs")
	fs.BoolVar(&o.quick, "quick", false, "small sizes and one run: every input in under a minute (flags given explicitly still win)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "bound on one run")
	fs.DurationVar(&o.interval, "interval", 250*time.Millisecond, "how often /stats and /proc are sampled")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./e2e/bench [flags]\n\n"+
			"Benchmark the real fpagent binary over loopback and print a Markdown table.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q: every option is a flag (see -h)", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		quick := map[string]func(){
			"points":         func() { o.points = 100_000 },
			"mqtt-messages":  func() { o.mqttMessages = 10_000 },
			"runs":           func() { o.runs = 1 },
			"recovery-bytes": func() { o.recoveryBytes = 16 << 20 },
			"warmup":         func() { o.warmup = 0 }, // a quick run is over in about a second
		}
		for name, f := range quick {
			if !set[name] {
				f()
			}
		}
	}
	o.inputs = splitList(*inputs)
	o.syncs = splitList(*syncs)
	for _, in := range o.inputs {
		if !slices.Contains([]string{"tcp", "http", "udp", "mqtt", "mqtt1", "mqtt100"}, in) {
			return o, fmt.Errorf("-inputs: unknown input %q: use tcp, http, udp, mqtt, mqtt1 or mqtt100", in)
		}
	}
	if o.publisher != "raw" && o.publisher != "paho" {
		return o, fmt.Errorf("-publisher %q: use raw or paho", o.publisher)
	}
	for _, s := range o.syncs {
		if !slices.Contains([]string{"always", "interval", "none"}, s) {
			return o, fmt.Errorf("-sync: unknown mode %q: use always, interval or none", s)
		}
	}
	for _, s := range splitList(*series) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxSeries {
			return o, fmt.Errorf("-series: %q is not a count from 1 to %d", s, maxSeries)
		}
		o.series = append(o.series, n)
	}
	switch {
	case len(o.inputs) == 0 && o.recoveryBytes == 0 && o.forward == 0 && !o.subBaseline:
		return o, errors.New("nothing to run: -inputs is empty, -recovery-bytes and -forward are 0 and -sub-baseline is off")
	case o.forward < 0:
		return o, fmt.Errorf("-forward %d: must be 0 (skip) or a number of points", o.forward)
	case len(o.syncs) == 0 || len(o.series) == 0:
		return o, errors.New("-sync and -series need at least one value each")
	case o.runs < 1 || o.conns < 1 || o.tcpBatch < 1 || o.httpBatch < 1 || o.udpBatch < 1 || o.halfRequests < 0:
		return o, errors.New("-runs, -conns and the -*-batch sizes must be at least 1, -half-requests at least 0")
	case o.points < 1 || o.mqttMessages < 1:
		return o, errors.New("-points and -mqtt-messages must be at least 1")
	case o.udpBatch*lineSize > 65507:
		return o, fmt.Errorf("-udp-batch %d: %d bytes do not fit a UDP datagram (65,507 at most)", o.udpBatch, o.udpBatch*lineSize)
	case o.mqttAhead < 0:
		return o, fmt.Errorf("-mqtt-ahead %d: must be 0 (no limit) or positive", o.mqttAhead)
	case o.warmup < 0:
		return o, fmt.Errorf("-warmup %v: must be 0 (time every request) or positive", o.warmup)
	case o.rate < 0 || o.udpRate < 0:
		return o, fmt.Errorf("-rate %g, -udp-rate %g: must be 0 (unlimited) or positive", o.rate, o.udpRate)
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// scenarios expands the flags into the table's rows, in order.
func (o options) scenarios() []scenario {
	var out []scenario
	for _, series := range o.series {
		for _, sync := range o.syncs {
			for _, in := range o.inputs {
				base := scenario{Input: in, Sync: sync, Series: series, Points: o.points, Rate: o.rate}
				switch in {
				case "mqtt", "mqtt1", "mqtt100":
					base.Input = "mqtt"
					var shapes []scenario
					if in != "mqtt100" {
						s := base
						s.PerMsg, s.Points = 1, o.mqttMessages
						shapes = append(shapes, s)
					}
					if in != "mqtt1" {
						s := base
						s.PerMsg, s.Points = 100, o.points/100*100
						shapes = append(shapes, s)
					}
					for _, s := range shapes {
						out = append(out, s)
						if o.mqttQueued && o.rate == 0 {
							s.Queued = true
							out = append(out, s)
						}
					}
				case "udp":
					if o.udpRate > 0 {
						base.Rate = o.udpRate
					}
					out = append(out, base)
				default:
					out = append(out, base)
				}
			}
		}
	}
	return out
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	begun := time.Now()

	work, err := os.MkdirTemp(o.dir, "fpagent-bench-")
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	if !o.keep {
		defer os.RemoveAll(work)
	}
	e := env{workDir: work, keep: o.keep, conns: o.conns, tcpBatch: o.tcpBatch, httpBatch: o.httpBatch,
		udpBatch: o.udpBatch, brokerConf: o.brokerConf, storage: strings.ReplaceAll(o.storage, ";", "\n"), paho: o.publisher == "paho", mqttAhead: o.mqttAhead, warmup: o.warmup, interval: o.interval, timeout: o.timeout, logf: logf, bin: o.bin}
	if e.bin == "" {
		logf("building fpagent (go build -trimpath; the first build compiles DuckDB and takes minutes)")
		if e.bin, err = buildAgent(work); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
	} else if e.bin, err = filepath.Abs(e.bin); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	scs := o.scenarios()
	if o.subBaseline || slices.ContainsFunc(scs, func(s scenario) bool { return s.Input == "mqtt" }) {
		if e.mosquitto, err = findMosquitto(); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 2
		}
	}
	if o.subBaseline {
		// Said now rather than after every other run.
		if _, err := exec.LookPath("mosquitto_sub"); err != nil {
			fmt.Fprintln(stderr, "bench:", errNoMosquittoSub)
			return 2
		}
	}
	rep := report{Machine: readMachine(e.bin, work), Runs: o.runs, Warmup: o.warmup, MQTTAhead: o.mqttAhead, BrokerConf: o.brokerConf, Storage: o.storage, Publisher: o.publisher,
		Command: commandLine(args)}
	logf("bench: %d scenarios × %d runs on %s, %d cores, load %s", len(scs), o.runs, rep.Machine.CPU, rep.Machine.Cores, rep.Machine.LoadBefore)

	results := map[string][]runResult{}
	failed := map[string]int{}
	runAll := func(list []scenario) {
		for r := 1; r <= o.runs; r++ {
			for _, sc := range list {
				res, err := runOnce(e, sc)
				if err != nil {
					failed[sc.key()]++
					logf("%-22s sync=%-8s series=%-6d run %d/%d FAILED: %v", sc.name(), sc.Sync, sc.Series, r, o.runs, err)
					continue
				}
				results[sc.key()] = append(results[sc.key()], res)
				logf("%-22s sync=%-8s series=%-6d run %d/%d: %s acked/s, %s into DuckDB/s, backlog max %s MiB, CPU %.1f s, RSS %s MiB",
					sc.name(), sc.Sync, sc.Series, r, o.runs, num(res.ingestRate()), num(res.e2eRate()),
					mib(float64(res.MaxBacklog)), res.CPU, mib(float64(res.PeakRSS)))
			}
		}
	}
	runAll(scs)

	// HTTP at half its measured maximum: the latency a user sees when the
	// agent is not saturated (issue 5: p99 under 50 ms). The maximum is what
	// the agent sustains, into DuckDB: it acknowledges faster than that for
	// as long as its disk budget lasts, and a rate above what DuckDB takes
	// only builds a backlog.
	var halves []scenario
	if o.half && o.rate == 0 {
		for _, sc := range scs {
			if sc.Input != "http" || len(results[sc.key()]) == 0 {
				continue
			}
			var rates []float64
			for _, r := range results[sc.key()] {
				rates = append(rates, min(r.ingestRate(), r.e2eRate()))
			}
			h := sc
			h.Half, h.Rate = true, float64(int64(median(rates)/2/1000)*1000)
			h.Points = max(h.Points, int64(o.halfRequests)*int64(o.httpBatch))
			if h.Rate > 0 {
				halves = append(halves, h)
			}
		}
		runAll(halves)
	}

	var panels []panel
	for _, sc := range scs {
		rs := results[sc.key()]
		rep.Rows = append(rep.Rows, summarize(sc, rs, failed[sc.key()]))
		if h := halfOf(halves, sc); h != nil {
			rep.Rows = append(rep.Rows, summarize(*h, results[h.key()], failed[h.key()]))
		}
		if mr, ok := medianRun(rs); ok {
			panels = append(panels, panel{Title: fmt.Sprintf("%s, sync=%s, %s series", sc.name(), sc.Sync, num(float64(sc.Series))),
				Samples: mr.Samples, Rates: true})
		}
	}

	if o.recoveryBytes > 0 {
		sync := o.syncs[0]
		var rs []recoveryResult
		fails := 0
		for r := 1; r <= o.runs; r++ {
			res, err := runRecovery(e, sync, o.series[0], int64(o.recoveryBytes))
			if err != nil {
				fails++
				logf("recovery of %s run %d/%d FAILED: %v", mib(float64(o.recoveryBytes)), r, o.runs, err)
				continue
			}
			rs = append(rs, res)
			logf("recovery run %d/%d: %s MiB (%s points) in %.2f s", r, o.runs, mib(float64(res.Bytes)), num(float64(res.Points)), res.Time.Seconds())
		}
		rep.Recovery = append(rep.Recovery, summarizeRecovery(sync, rs, fails))
		if len(rs) > 0 {
			panels = append(panels, panel{Title: fmt.Sprintf("recovery of %s MiB after kill -9 (RSS until /ready)", mib(float64(rs[0].Bytes))),
				Samples: rs[0].Samples})
		}
	}

	if o.subBaseline {
		b := &subBaseline{Messages: o.mqttMessages}
		for r := 1; r <= o.runs; r++ {
			rate, cpu, err := runSubBaseline(e, o.mqttMessages)
			if err != nil {
				logf("mosquitto_sub baseline run %d/%d FAILED: %v", r, o.runs, err)
				continue
			}
			b.Rates, b.SubCPU = append(b.Rates, rate), append(b.SubCPU, cpu)
			logf("mosquitto_sub baseline run %d/%d: %s messages/s", r, o.runs, num(rate))
		}
		rep.SubBaseline = b
	}

	if o.forward > 0 {
		sync := o.syncs[0]
		var rs []forwardResult
		fails := 0
		for r := 1; r <= o.runs; r++ {
			res, err := runForward(e, sync, o.series[0], o.forward)
			if err != nil {
				fails++
				logf("forwarding run %d/%d FAILED: %v", r, o.runs, err)
				continue
			}
			rs = append(rs, res)
			logf("forwarding run %d/%d: %s points (%s MiB) forwarded in %.2f s, in the central DuckDB after %.2f s",
				r, o.runs, num(float64(res.Points)), mib(float64(res.Backlog)), res.Forward.Seconds(), res.InCentral.Seconds())
		}
		rep.Forward = append(rep.Forward, summarizeForward(sync, o.series[0], rs, fails))
	}

	rep.Machine.LoadAfter = loadAvg()
	rep.Elapsed = time.Since(begun)
	rep.writeMarkdown(stdout)
	code := 0
	if o.out != "" {
		if err := writeFile(o.out, func(w io.Writer) error { rep.writeMarkdown(w); return nil }); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			code = 1
		}
	}
	if o.plot != "" {
		title := fmt.Sprintf("fpagent: throughput and RSS over each scenario's median run (%s, %d cores, %s)",
			rep.Machine.CPU, rep.Machine.Cores, rep.Machine.Started.Format("2006-01-02"))
		err := writeFile(o.plot, func(w io.Writer) error { return writeSVG(w, title, panels) })
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			code = 1
		}
	}
	for _, n := range failed {
		if n > 0 {
			code = 1
		}
	}
	for _, r := range rep.Recovery {
		if r.Failed > 0 {
			code = 1
		}
	}
	for _, r := range rep.Forward {
		if r.Failed > 0 {
			code = 1
		}
	}
	return code
}

// commandLine is the command as a person would type it again, quoting the
// arguments a shell would split or drop.
func commandLine(args []string) string {
	out := []string{"go", "run", "./e2e/bench"}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$*?") {
			a = strconv.Quote(a)
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

func halfOf(halves []scenario, sc scenario) *scenario {
	for i, h := range halves {
		if h.Input == sc.Input && h.Sync == sc.Sync && h.Series == sc.Series {
			return &halves[i]
		}
	}
	return nil
}

// medianRun is the run whose into-DuckDB rate is the median one.
func medianRun(rs []runResult) (runResult, bool) {
	if len(rs) == 0 {
		return runResult{}, false
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b runResult) int {
		switch {
		case a.e2eRate() < b.e2eRate():
			return -1
		case a.e2eRate() > b.e2eRate():
			return 1
		}
		return 0
	})
	return s[len(s)/2], true
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
