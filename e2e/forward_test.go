package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fpagent/fpagent/internal/testport"
)

// fwdLoad writes uniquely numbered points to an agent's HTTP input and
// records which the agent acknowledged (204): the ledger of what must reach
// the central store.
type fwdLoad struct {
	url    string
	next   atomic.Int64
	mu     sync.Mutex
	acked  map[int64]bool
	sent   atomic.Int64
	failed atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup
}

const fwdBatch = 200

// fwdLine is point seq: its own timestamp, so (key, time) is unique per seq.
func fwdLine(seq int64) string {
	return fmt.Sprintf("fwd,src=edge,shard=s%d seq=%di,v=%d.5 %d\n", seq%4, seq, seq, 1_700_000_000_000_000_000+seq*1000)
}

func startFwdLoad(url string, workers int) *fwdLoad {
	l := &fwdLoad{url: url, acked: map[int64]bool{}, stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-l.stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				first := l.next.Add(fwdBatch) - fwdBatch
				var b bytes.Buffer
				for s := first; s < first+fwdBatch; s++ {
					b.WriteString(fwdLine(s))
				}
				l.sent.Add(fwdBatch)
				resp, err := c.Post(l.url+"/write", "text/plain", &b)
				if err != nil {
					l.failed.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					l.failed.Add(1)
					continue
				}
				l.mu.Lock()
				for s := first; s < first+fwdBatch; s++ {
					l.acked[s] = true
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *fwdLoad) finish() {
	close(l.stop)
	l.wg.Wait()
}

// outputStat is one output's section of /stats.
type outputStat struct {
	Cursor     uint64 `json:"cursor_position"`
	LagRecords uint64 `json:"lag_records"`
	SentPoints uint64 `json:"sent_points"`
	Retries    uint64 `json:"retries"`
	Dropped    uint64 `json:"dropped_records"`
	Healthy    bool   `json:"healthy"`
	Error      string `json:"error"`
}

func (a *agent) output(name string) outputStat {
	a.t.Helper()
	var st struct {
		Outputs map[string]outputStat `json:"outputs"`
	}
	a.getJSON("/stats", &st)
	return st.Outputs[name]
}

// waitForwarded waits until the edge's output has nothing left to send.
func waitForwarded(t *testing.T, edge *agent, name string, timeout time.Duration) outputStat {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := edge.output(name)
		if st.LagRecords == 0 && st.Healthy {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("output %s still %d records behind after %s: %+v", name, st.LagRecords, timeout, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkCentral reads the central DuckDB of a stopped agent and checks that
// every acknowledged point is there exactly once.
func checkCentral(t *testing.T, path string, l *fwdLoad) {
	t.Helper()
	db := openDB(t, path)
	rows, err := db.Query(`SELECT (fields->>'seq')::BIGINT AS seq, count(*) FROM readings WHERE measurement = 'fwd' GROUP BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	found := map[int64]int{}
	for rows.Next() {
		var seq int64
		var n int
		if err := rows.Scan(&seq, &n); err != nil {
			t.Fatal(err)
		}
		found[seq] = n
	}
	var missing, dup, extra int
	for seq := range l.acked {
		if found[seq] == 0 {
			missing++
		}
	}
	for seq, n := range found {
		if n > 1 {
			dup++
		}
		if !l.acked[seq] {
			extra++ // sent, not acknowledged (the edge was killed), yet stored: allowed
		}
	}
	t.Logf("ledger: sent %d, acknowledged by the edge %d, found in the central store %d, missing %d, duplicated %d, stored without an acknowledgement %d",
		l.sent.Load(), len(l.acked), len(found), missing, dup, extra)
	if missing > 0 || dup > 0 {
		t.Fatalf("%d acknowledged points missing in the central store (in ranges %s), %d duplicated", missing, missingRanges(l.acked, found), dup)
	}
	if len(l.acked) == 0 {
		t.Fatal("nothing was acknowledged: the test proved nothing")
	}
}

// missingRanges lists the runs of acknowledged sequence numbers not found,
// so that a failure tells a tail never delivered from holes in the middle.
func missingRanges(acked map[int64]bool, found map[int64]int) string {
	var seqs []int64
	for seq := range acked {
		if found[seq] == 0 {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	var b strings.Builder
	for i, n := 0, 0; i < len(seqs) && n < 20; n++ {
		j := i
		for j+1 < len(seqs) && seqs[j+1] <= seqs[j]+4 {
			j++
		}
		fmt.Fprintf(&b, "%d-%d (%d) ", seqs[i], seqs[j], j-i+1)
		i = j + 1
	}
	var maxAcked int64
	for seq := range acked {
		maxAcked = max(maxAcked, seq)
	}
	fmt.Fprintf(&b, "of acknowledged up to %d", maxAcked)
	return b.String()
}

// chaos runs the actions in order, a random 1-3 s apart, while load runs.
func chaos(t *testing.T, rng *rand.Rand, actions []func()) {
	for i, act := range actions {
		time.Sleep(time.Duration(1000+rng.IntN(2000)) * time.Millisecond)
		act()
		t.Logf("chaos %d/%d done", i+1, len(actions))
	}
}

// fleet is an edge agent forwarding to a central one, and the faults the
// forwarding tests inject into them.
type fleet struct {
	t             *testing.T
	rng           *rand.Rand
	edge, central *agent
	kills         int
}

func (f *fleet) killEdge() { f.edge.kill(); f.kills++; f.edge.start() }

func (f *fleet) killCentral() {
	f.central.kill()
	f.kills++
	time.Sleep(time.Duration(f.rng.IntN(500)) * time.Millisecond)
	f.central.start()
}

// cut stops the central agent for a while: the link is down.
func (f *fleet) cut() { f.central.stop(); time.Sleep(3 * time.Second); f.central.start() }

func (f *fleet) killBoth() {
	f.central.kill()
	f.edge.kill()
	f.kills += 2
	f.edge.start()
	f.central.start()
}

// run runs the actions under load, a random 1-3 s apart, and checks that
// there were at least ten kills.
func (f *fleet) run(load *fwdLoad, actions ...func()) {
	f.t.Helper()
	chaos(f.t, f.rng, actions)
	load.finish()
	if f.kills < 10 {
		f.t.Fatalf("only %d kills", f.kills)
	}
}

// startEdge starts an edge agent with the outputs section given; it waits
// for /health only, since its output may be failing.
func startEdge(t *testing.T, outputs string) *agent {
	t.Helper()
	dir, p := t.TempDir(), newPorts(t)
	cfg := baseConfig(dir, p, "max_wal_size: 128KiB", "mqtt: {enabled: false}") + "\n" + outputs
	edge := newAgent(t, dir, p, cfg)
	edge.ReadyPath = "/health"
	edge.start()
	return edge
}

// TestForwardInfluxUnderKills: an edge agent forwards over HTTP (the influx
// output) to a second agent acting as the central store; both are killed
// at random moments under steady load, and the central one is stopped for a
// while (the link is down). In the end the central DuckDB holds every point
// the edge acknowledged, exactly once.
func TestForwardInfluxUnderKills(t *testing.T) {
	f := &fleet{t: t, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))}
	cdir, cp := t.TempDir(), newPorts(t)
	f.central = startAgent(t, cdir, cp, baseConfig(cdir, cp, "", "mqtt: {enabled: false}"))
	f.edge = startEdge(t, fmt.Sprintf(`outputs:
  influx:
    - name: central
      url: http://127.0.0.1:%d
      batch_size: 1000
      retry_min: 50ms
      retry_max: 500ms
      timeout: 5s
`, cp.HTTP))

	load := startFwdLoad(f.edge.HTTP, 2)
	f.run(load, f.killEdge, f.killCentral, f.killEdge, f.cut, f.killCentral, f.killEdge, f.killBoth,
		f.killCentral, f.killEdge, f.cut, f.killEdge, f.killCentral)
	st := waitForwarded(t, f.edge, "central", 2*time.Minute)
	t.Logf("edge output after %d kills: %+v", f.kills, st)
	if st.Retries == 0 {
		t.Error("the output never retried: the link was never seen down")
	}
	f.edge.stop()
	f.central.stop()
	checkCentral(t, f.central.dbPath(), load)
}

// TestForwardMQTTUnderKills: the same through mosquitto, with the mqtt
// output on the edge and the central agent subscribed with a persistent
// session.
func TestForwardMQTTUnderKills(t *testing.T) {
	f := &fleet{t: t, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))}
	broker := startMosquitto(t, brokerDir(t), 0)
	cdir, cp := t.TempDir(), newPorts(t)
	f.central = startAgent(t, cdir, cp, baseConfig(cdir, cp, "", fmt.Sprintf(`mqtt:
  enabled: true
  brokers: [%s]
  client_id: central-%d
  clean_session: false
  subscriptions:
    - {topic: "fleet/#", qos: 1, format: influx}`, broker.Addr, cp.Admin)))
	f.edge = startEdge(t, fmt.Sprintf(`outputs:
  mqtt:
    - name: upstream
      brokers: [%s]
      client_id: edge-%d
      topic: fleet/{shard}/{measurement}
      batch_size: 1000
      retry_min: 50ms
      retry_max: 500ms
      timeout: 5s
`, broker.Addr, f.rng.Uint32()))

	// One writer: the central agent takes MQTT more slowly than HTTP, and
	// the test waits for it to catch up.
	load := startFwdLoad(f.edge.HTTP, 1)
	restartBroker := func() { broker.restart(time.Second) }
	f.run(load, f.killEdge, f.killCentral, f.killEdge, restartBroker, f.killCentral, f.killEdge, f.cut,
		f.killCentral, f.killEdge, f.killCentral, f.killEdge, f.killCentral)
	st := waitForwarded(t, f.edge, "upstream", 2*time.Minute)
	t.Logf("edge output after %d kills: %+v", f.kills, st)
	// The central agent takes what the broker queued for its session.
	deadline := time.Now().Add(2 * time.Minute)
	for queryAgentInt(t, f.central, `SELECT count(*) FROM readings WHERE measurement = 'fwd'`) < int64(len(load.acked)) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", broker.log.String())
		}
	})
	f.edge.stop()
	f.central.stop()
	checkCentral(t, f.central.dbPath(), load)
}

// TestOutputBudget: an output whose target is unreachable, past its disk
// budget, either keeps ingestion going by dropping its oldest unsent data
// (drop_oldest, counted and logged) or pushes back on writers (block).
func TestOutputBudget(t *testing.T) {
	dead := testport.Free(t) // nothing listens here
	for _, policy := range []string{"drop_oldest", "block"} {
		t.Run(policy, func(t *testing.T) {
			dir := t.TempDir()
			p := newPorts(t)
			cfg := baseConfig(dir, p, "max_wal_size: 64KiB\nstore_timeout: 200ms", "mqtt: {enabled: false}") + fmt.Sprintf(`
outputs:
  influx:
    - name: nowhere
      url: http://127.0.0.1:%d
      retry_min: 100ms
      retry_max: 200ms
      disk_budget: 256KiB
      on_full: %s
`, dead, policy)
			a := newAgent(t, dir, p, cfg)
			a.ReadyPath = "/health"
			a.start()
			c := &http.Client{Timeout: 10 * time.Second}
			codes := map[int]int{}
			var retryAfter string
			for i := range 100 {
				var b strings.Builder
				for j := range 100 {
					b.WriteString(fwdLine(int64(i*100 + j)))
				}
				resp, err := c.Post(a.HTTP+"/write", "text/plain", strings.NewReader(b.String()))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				codes[resp.StatusCode]++
				if resp.StatusCode != http.StatusNoContent {
					retryAfter = resp.Header.Get("Retry-After")
				}
			}
			st := a.output("nowhere")
			metrics := a.get("/metrics")
			ready := a.getStatus("/ready")
			t.Logf("answers %v, output %+v, /ready %d", codes, st, ready)
			if st.Healthy || ready != http.StatusServiceUnavailable {
				t.Errorf("output healthy=%v, /ready %d: want it failing and the agent not ready", st.Healthy, ready)
			}
			switch policy {
			case "drop_oldest":
				if codes[http.StatusNoContent] != 100 {
					t.Errorf("answers %v: under drop_oldest every write must be taken", codes)
				}
				if st.Dropped == 0 || !strings.Contains(metrics, `fpagent_output_dropped_records_total{output="nowhere",type="influx"}`) {
					t.Errorf("no drop counted: %+v", st)
				}
				if !strings.Contains(a.Log(), "DROPPED its oldest unsent WAL records") {
					t.Error("no loud log line about the drop")
				}
			case "block":
				if codes[http.StatusNoContent] == 100 || retryAfter == "" {
					t.Errorf("answers %v (Retry-After %q): under block writes past the budget must be refused with Retry-After", codes, retryAfter)
				}
				if st.Dropped != 0 {
					t.Errorf("block dropped %d records", st.Dropped)
				}
			}
			a.stop()
		})
	}
}

func (a *agent) get(path string) string {
	a.t.Helper()
	resp, err := http.Get(a.Admin + path)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}

func (a *agent) getStatus(path string) int {
	a.t.Helper()
	resp, err := http.Get(a.Admin + path)
	if err != nil {
		a.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// queryAgentInt runs a query through the running agent's admin API.
func queryAgentInt(t *testing.T, a *agent, q string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := fmt.Sprintf(`{"q": %q, "format": "csv"}`, q)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.Admin+"/api/v1/query", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	var n int64
	if _, err := fmt.Sscan(lines[len(lines)-1], &n); err != nil {
		t.Fatalf("%s: answer %q", q, b.String())
	}
	return n
}

// TestExportCommand: fpagent export writes a day's history to Parquet
// through the running agent, and the file reads back with DuckDB as the
// same rows.
func TestExportCommand(t *testing.T) {
	dir := t.TempDir()
	p := newPorts(t)
	a := startAgent(t, dir, p, baseConfig(dir, p, "", "mqtt: {enabled: false}"))
	var b strings.Builder
	for seq := range int64(5000) {
		b.WriteString(fwdLine(seq)) // 2023-11-14 22:13:20 UTC onwards, 1 µs apart
	}
	resp, err := http.Post(a.HTTP+"/write", "text/plain", strings.NewReader(b.String()))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write: %v %v", resp, err)
	}
	resp.Body.Close()
	out, err := exec.Command(agentBin, "export", "-addr", a.Admin, "-day", "2023-11-14").CombinedOutput()
	if err != nil {
		t.Fatalf("fpagent export: %v\n%s", err, out)
	}
	file := filepath.Join(dir, "data", "export", "day=2023-11-14", "readings.parquet")
	if !strings.Contains(string(out), "5000 rows") || !strings.Contains(string(out), file) {
		t.Fatalf("fpagent export printed %q; want 5000 rows in %s", out, file)
	}
	a.stop()
	digest := func(db *sql.DB, from string) (n int64, h string) {
		t.Helper()
		q := `SELECT count(*), md5(string_agg(concat_ws('|', ts, key, measurement, tags::VARCHAR, fields::VARCHAR), ';' ORDER BY ts, key)) FROM ` + from
		if err := db.QueryRow(q).Scan(&n, &h); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n, h
	}
	mem, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	n1, h1 := digest(mem, `read_parquet('`+file+`')`)
	n2, h2 := digest(openDB(t, a.dbPath()), `readings WHERE ts >= '2023-11-14' AND ts < '2023-11-15'`)
	if n1 != 5000 || n1 != n2 || h1 != h2 {
		t.Fatalf("the Parquet file holds %d rows (digest %s), the agent's DuckDB %d (digest %s); want the same 5000", n1, h1, n2, h2)
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
}
