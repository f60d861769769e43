package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"gopkg.in/yaml.v3"
)

// TestLines decodes generated lines with the line-protocol library: each is
// 94 bytes with three tags and three float fields, points spread over the
// series in turn and every timestamp is distinct.
func TestLines(t *testing.T) {
	for _, series := range []int{1, 10, 1000, 100_000, maxSeries} {
		g, err := newLineGen(series)
		if err != nil {
			t.Fatal(err)
		}
		first := int64(123_456_789)
		const n = 2000
		buf := g.appendLines(nil, first, n)
		if len(buf) != n*lineSize || lineSize != 94 {
			t.Fatalf("series %d: %d bytes for %d lines of %d, want 94 each", series, len(buf), n, lineSize)
		}
		dec := lineprotocol.NewDecoderWithBytes(buf)
		hosts := map[string]bool{}
		times := map[int64]bool{}
		for i := int64(0); dec.Next(); i++ {
			m, err := dec.Measurement()
			if err != nil || string(m) != "cpu" {
				t.Fatalf("line %d: measurement %q, %v", i, m, err)
			}
			var tags []string
			for {
				k, v, err := dec.NextTag()
				if err != nil {
					t.Fatalf("line %d: %v", i, err)
				}
				if k == nil {
					break
				}
				tags = append(tags, string(k))
				if string(k) == "host" {
					hosts[string(v)] = true
				}
			}
			fields := 0
			for {
				k, v, err := dec.NextField()
				if err != nil {
					t.Fatalf("line %d: %v", i, err)
				}
				if k == nil {
					break
				}
				if v.Kind() != lineprotocol.Float {
					t.Fatalf("line %d: field %s is %v, want a float", i, k, v.Kind())
				}
				fields++
			}
			ts, err := dec.Time(lineprotocol.Nanosecond, time.Time{})
			if err != nil {
				t.Fatalf("line %d: %v", i, err)
			}
			if want := baseTime + first + i; ts.UnixNano() != want {
				t.Fatalf("line %d: time %d, want %d", i, ts.UnixNano(), want)
			}
			times[ts.UnixNano()] = true
			if len(tags) != 3 || fields != 3 {
				t.Fatalf("line %d: %d tags %v and %d fields, want 3 and 3", i, len(tags), tags, fields)
			}
		}
		if want := min(series, n); len(hosts) != want {
			t.Errorf("series %d: %d distinct hosts in %d lines, want %d", series, len(hosts), n, want)
		}
		if len(times) != n {
			t.Errorf("series %d: %d distinct timestamps in %d lines", series, len(times), n)
		}
	}
	for _, bad := range []int{0, -1, maxSeries + 1} {
		if _, err := newLineGen(bad); err == nil {
			t.Errorf("newLineGen(%d) accepted", bad)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1GiB": 1 << 30, "256MiB": 256 << 20, "64KiB": 64 << 10, "1GB": 1e9, "500MB": 500e6,
		"4096": 4096, "10B": 10, "1.5GiB": 3 << 29, "0": 0,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for n, want := range map[size]string{1 << 30: "1GiB", 256 << 20: "256MiB", 3 << 29: "1536MiB", 1000: "1000", 0: "0"} {
		if got := n.String(); got != want {
			t.Errorf("size(%d).String() = %q, want %q", int64(n), got, want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1MiB", "1TiB", "ten"} {
		if got, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", bad, got)
		}
	}
}

func TestMedianAndPercentile(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %g, want %g", c.in, got, c.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
	var ds []time.Duration
	for i := 1000; i >= 1; i-- { // 1..1000 ms, unsorted
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 500, 99: 990, 99.9: 999, 100: 1000, 0.01: 1} {
		if got := percentile(ds, p); got != want*time.Millisecond {
			t.Errorf("p%g = %s, want %dms", p, got, want)
		}
	}
	if ds[0] != time.Second {
		t.Error("percentile sorted its input in place")
	}
	if got := percentile([]time.Duration{7}, 99.9); got != 7 {
		t.Errorf("p99.9 of one = %d", got)
	}
}

func TestBacklogGrowth(t *testing.T) {
	mk := func(grow float64) []sample {
		var ss []sample
		for i := range 40 {
			tm := float64(i) * 0.25
			stored := uint64(100_000 * tm)
			// The flusher drains in bursts: a saw tooth around the trend.
			lag := uint64(grow*tm) + uint64(i%4)*5000
			ss = append(ss, sample{T: tm, Stored: stored + lag, Flushed: stored, Backlog: int64(lag) * 100})
		}
		return ss
	}
	r := runResult{Points: 1_000_000, Ingest: 10 * time.Second}
	r.MaxBacklog, r.LagRate, r.LagOK = backlogGrowth(mk(0), 10)
	if !r.LagOK || !r.flat() {
		t.Errorf("a saw tooth without trend: lag %g points/s, flat %t", r.LagRate, r.flat())
	}
	r.MaxBacklog, r.LagRate, r.LagOK = backlogGrowth(mk(20_000), 10)
	if !r.LagOK || r.flat() || math.Abs(r.LagRate-20_000) > 2000 {
		t.Errorf("growing 20,000 points/s: measured %g, flat %t", r.LagRate, r.flat())
	}
	if r.MaxBacklog == 0 {
		t.Error("no max backlog")
	}
	if _, _, ok := backlogGrowth(mk(0)[:5], 10); ok {
		t.Error("five samples were enough to judge")
	}
}

func TestProcParsing(t *testing.T) {
	stat := []byte("4242 (fp agent) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 150 0 0 20 0 12 0 100 0 0\n")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 400/clockTicks() {
		t.Errorf("parseStatCPU = %g, %v; want %g", cpu, err, 400/clockTicks())
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("a short stat line was accepted")
	}
	status := []byte("Name:\tfpagent\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t12\n")
	rss, hwm, err := parseStatusMem(status)
	if err != nil || rss != 100<<20 || hwm != 200<<20 {
		t.Errorf("parseStatusMem = %d, %d, %v", rss, hwm, err)
	}
	if _, _, err := parseStatusMem([]byte("Name:\tx\n")); err == nil {
		t.Error("a status without VmRSS was accepted")
	}
	udp := []byte(`   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 2195: 0100007F:46A9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 287910 2 000000002103b5ba 17
 7319: 0100007F:9AAD 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 434694 2 000000007b0e50ea 0
`)
	if drops, ok, err := parseUDPDrops(udp, 0x46A9); err != nil || !ok || drops != 17 {
		t.Errorf("parseUDPDrops(port 0x46A9) = %d, %t, %v; want 17", drops, ok, err)
	}
	if _, ok, err := parseUDPDrops(udp, 0x46AA); err != nil || ok {
		t.Errorf("parseUDPDrops found a socket on a port nobody holds (%v)", err)
	}
	// This process's own figures read back.
	if cpu, err := procCPU(os.Getpid()); err != nil || cpu < 0 {
		t.Errorf("procCPU(self) = %g, %v", cpu, err)
	}
	if rss, hwm, err := procMem(os.Getpid()); err != nil || rss <= 0 || hwm < rss {
		t.Errorf("procMem(self) = %d, %d, %v", rss, hwm, err)
	}
}

func TestScenarios(t *testing.T) {
	o, err := parseFlags([]string{"-inputs", "tcp,mqtt", "-sync", "always,interval", "-series", "10,1000", "-points", "1050", "-mqtt-queued=false"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range o.scenarios() {
		names = append(names, s.key()+"/"+itoa(s.Points))
	}
	want := "tcp|always|10/1050 mqtt 1/msg|always|10/150000 mqtt 100/msg|always|10/1000 " +
		"tcp|interval|10/1050 mqtt 1/msg|interval|10/150000 mqtt 100/msg|interval|10/1000 " +
		"tcp|always|1000/1050 mqtt 1/msg|always|1000/150000 mqtt 100/msg|always|1000/1000 " +
		"tcp|interval|1000/1050 mqtt 1/msg|interval|1000/150000 mqtt 100/msg|interval|1000/1000"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("scenarios:\n got %s\nwant %s", got, want)
	}
	// Each MQTT shape is also run queued while the agent is down, unless
	// paced.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-inputs", "mqtt"}, "mqtt 1/msg|always|1000 mqtt 1/msg, queued while the agent was down|always|1000 " +
			"mqtt 100/msg|always|1000 mqtt 100/msg, queued while the agent was down|always|1000"},
		{[]string{"-inputs", "mqtt100", "-rate", "1000"}, "mqtt 100/msg @ 1,000 points/s|always|1000"},
	} {
		o, err := parseFlags(append(c.args, "-sync", "always"), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, s := range o.scenarios() {
			keys = append(keys, s.key())
		}
		if got := strings.Join(keys, " "); got != c.want {
			t.Errorf("%q:\n got %s\nwant %s", c.args, got, c.want)
		}
	}
	for _, bad := range [][]string{
		{"-inputs", "kafka"}, {"-sync", "sometimes"}, {"-series", "0"}, {"-series", "x"},
		{"-udp-batch", "1000"}, {"-runs", "0"}, {"-rate", "-5"}, {"extra"}, {"-recovery-bytes", "lots"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
	q, err := parseFlags([]string{"-quick", "-points", "5000"}, io.Discard)
	if err != nil || q.points != 5000 || q.runs != 1 || q.mqttMessages != 10_000 || q.recoveryBytes != 16<<20 {
		t.Errorf("-quick with -points 5000: %+v, %v", q, err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestNum(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -4500: "-4,500", math.NaN(): "–"} {
		if got := num(in); got != want {
			t.Errorf("num(%g) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[float64]float64{0.7: 1, 1: 1, 1.2: 2, 3: 5, 7: 10, 120_000: 200_000, 0: 1} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%g) = %g, want %g", in, got, want)
		}
	}
}

// TestSVG draws a plot and checks that it is well-formed XML with a line
// per series and panel.
func TestSVG(t *testing.T) {
	var ss []sample
	for i := range 20 {
		ss = append(ss, sample{T: float64(i) * 0.25, Persisted: uint64(i * 50_000), Flushed: uint64(max(0, i-2) * 50_000), RSS: int64(100+i) << 20})
	}
	var buf bytes.Buffer
	err := writeSVG(&buf, `tcp & <http>`, []panel{{Title: "a", Samples: ss, Rates: true}, {Title: "b", Samples: ss}, {Title: "c", Samples: ss[:1]}})
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&buf)
	paths := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "path" {
			paths++
		}
	}
	if paths != 4 { // a: ingest, DuckDB, RSS; b: RSS; c: too few samples
		t.Errorf("%d paths, want 4", paths)
	}
}

// TestQuick runs the command on small sizes against the real binary.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the agent; skipped under -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fpagent")
	// The same build as e2e's, so that the two share the build cache.
	build := exec.Command("go", "build", "-o", bin, "../../cmd/fpagent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	inputs := "tcp,http,udp"
	if _, err := findMosquitto(); err == nil {
		inputs += ",mqtt100"
	}
	md, svg := filepath.Join(dir, "results.md"), filepath.Join(dir, "bench.svg")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-quick", "-bin", bin, "-dir", dir, "-inputs", inputs, "-sync", "always", "-points", "30000",
		"-recovery-bytes", "8MiB", "-out", md, "-plot", svg}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stderr.String(), stdout.String())
	}
	out, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, stdout.Bytes()) {
		t.Error("-out differs from what was printed")
	}
	for _, want := range []string{"| tcp | always | 1,000 | 30,000 |", "| http | always | 1,000 | 30,000 (6 requests) |",
		"(half the sustained maximum) | always |", "| udp | always |", "| kill -9, restart | always |"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in the table:\n%s", want, out)
		}
	}
	if fi, err := os.Stat(svg); err != nil || fi.Size() < 1000 {
		t.Errorf("plot: %v", err)
	}
	t.Logf("\n%s", out)
}

// The config the agent gets must parse, with -storage's "; " separators.
func TestAgentConfigYAML(t *testing.T) {
	storage := strings.ReplaceAll("duckdb: {threads: 2}; sync_interval: 10ms;batch_size: 5000", ";", "\n")
	c := agentConfig{DataDir: "/tmp/x", Sync: "always", Input: "tcp", Storage: storage}
	var doc struct {
		Storage map[string]any `yaml:"storage"`
	}
	if err := yaml.Unmarshal([]byte(c.yaml()), &doc); err != nil {
		t.Fatalf("%v in\n%s", err, c.yaml())
	}
	for _, k := range []string{"sync", "duckdb", "sync_interval", "batch_size"} {
		if _, ok := doc.Storage[k]; !ok {
			t.Errorf("storage.%s missing from\n%s", k, c.yaml())
		}
	}
}

// The warm-up's requests count in the request total and the whole-run p99,
// and nowhere else.
func TestSummarizeWarmup(t *testing.T) {
	mss := func(from, to int) []time.Duration {
		var ds []time.Duration
		for i := from; i <= to; i++ {
			ds = append(ds, time.Duration(i)*time.Millisecond)
		}
		return ds
	}
	sc := scenario{Input: "http", Sync: "always", Series: 1000, Points: 1000, Half: true, Rate: 1000}
	run := runResult{Sc: sc, Points: 1000, Latencies: mss(1, 100), WarmupLatencies: mss(1001, 1005)}
	r := summarize(sc, []runResult{run, run, run}, 0)
	if r.P99 != 99 || r.P50 != 50 || r.WholeP99 != 1004 || r.Requests != 105 || r.WarmupRequests != 5 {
		t.Errorf("p50 %g, p99 %g, whole p99 %g, %d requests (%d warm-up): want 50, 99, 1004, 105 (5)",
			r.P50, r.P99, r.WholeP99, r.Requests, r.WarmupRequests)
	}
	var b strings.Builder
	writeRow(&b, r)
	if !strings.Contains(b.String(), "(105 requests, 5 in the warm-up)") || !strings.Contains(b.String(), "| 99.0 (1004.0 with the warm-up) |") {
		t.Errorf("row does not say how many requests were warm-up: %s", b.String())
	}
	rep := report{Warmup: time.Second, Rows: []row{r}}
	if tg := rep.targets(); !strings.Contains(tg, "99.0 ms after the warm-up, 1004.0 ms over the whole run") {
		t.Errorf("targets do not give both p99s: %s", tg)
	}
	allWarm := summarize(sc, []runResult{{Sc: sc, Points: 1000, WarmupLatencies: mss(1, 10)}}, 0)
	if !math.IsNaN(allWarm.P99) || allWarm.WholeP99 != 10 || allWarm.Requests != 10 {
		t.Errorf("a run that is all warm-up: p99 %g, whole %g, %d requests; want no p99, 10, 10", allWarm.P99, allWarm.WholeP99, allWarm.Requests)
	}
}

func TestSumMetric(t *testing.T) {
	text := `# HELP fpagent_input_persisted_points_total Points made durable by the store.
# TYPE fpagent_input_persisted_points_total counter
fpagent_input_persisted_points_total{input="mqtt",listener="tcp://x"} 1.5e+06
fpagent_input_persisted_points_total{input="tcp",listener="127.0.0.1:1"} 42
fpagent_input_persisted_points_total_other 7
fpagent_input_persisted_points_totally{a="b"} 9
`
	n, err := sumMetric(strings.NewReader(text), "fpagent_input_persisted_points_total")
	if err != nil || n != 1_500_042 {
		t.Fatalf("sum = %d, %v; want 1500042", n, err)
	}
	if _, err := sumMetric(strings.NewReader("fpagent_input_persisted_points_total x\n"), "fpagent_input_persisted_points_total"); err == nil {
		t.Fatal("a sample that is not a number was taken")
	}
}

// The gate holds publishers while they are more than ahead points past the
// agent, and lets them go once progress catches up.
func TestGate(t *testing.T) {
	var persisted atomic.Int64
	r := &reserver{total: 1 << 30}
	l := load{batch: 100, ahead: 1000, progress: func(context.Context) (int64, error) { return persisted.Load(), nil }}
	g := startGate(context.Background(), l, r)
	defer g.stop()
	r.take(10) // 1,000 points out: at the limit, not past it
	flushes := 0
	flush := func() error { flushes++; return nil }
	if err := g.wait(context.Background(), flush); err != nil || flushes != 0 {
		t.Fatalf("at the limit: %v, %d flushes", err, flushes)
	}
	r.take(1)
	done := make(chan error, 1)
	go func() { done <- g.wait(context.Background(), flush) }()
	select {
	case err := <-done:
		t.Fatalf("past the limit the gate let a publisher through (%v)", err)
	case <-time.After(3 * gatePoll):
	}
	persisted.Store(100)
	select {
	case err := <-done:
		if err != nil || flushes != 1 {
			t.Fatalf("after progress: %v, %d flushes (want 1, before waiting)", err, flushes)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the gate stayed shut after the agent caught up")
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.take(5)
	go func() { done <- g.wait(ctx, flush) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled wait returned %v", err)
	}
	open := startGate(context.Background(), load{batch: 100}, r)
	defer open.stop()
	if err := open.wait(context.Background(), flush); err != nil {
		t.Fatal(err)
	}
}

func TestSubBaselineReport(t *testing.T) {
	rep := report{SubBaseline: &subBaseline{Messages: 150_000, Rates: []float64{16_623, 19_409, 18_153}, SubCPU: []float64{3.1, 3.4, 3.36}}}
	var b strings.Builder
	rep.writeMarkdown(&b)
	want := "no agent: 18,153 messages/s (median of 3 runs: 16,623 / 19,409 / 18,153; mosquitto_sub used 3.36 CPU s)"
	if !strings.Contains(b.String(), want) {
		t.Errorf("no %q in:\n%s", want, b.String())
	}
}

func TestSubBaselineReportAllFailed(t *testing.T) {
	rep := report{SubBaseline: &subBaseline{Messages: 150_000}}
	var b strings.Builder
	rep.writeMarkdown(&b)
	if want := "Broker baseline: every mosquitto_sub run failed"; !strings.Contains(b.String(), want) || strings.Contains(b.String(), "(median of 0 runs") {
		t.Errorf("no %q in:\n%s", want, b.String())
	}
}
