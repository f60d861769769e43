package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// The soak runs the real agent with every input at once under steady load
// from concurrent clients and, at random moments, SIGKILLs and restarts it,
// fills the disk under its WAL, restarts the MQTT broker, flips bytes in a
// sealed WAL segment while the agent is down, and sends malformed input. At
// the end it stops the agent cleanly, opens the DuckDB file and checks a
// ledger: every acknowledged point (HTTP 204 or 400 "partial write", MQTT
// PUBACK from the broker) stored exactly once, the dead-letter table holding
// exactly the acknowledged malformed input, the per-input counters adding
// up, no goroutine or file-descriptor leak across a stretch without kills,
// and the peak RSS under a bound.
//
// Short mode (about 2.5 minutes; skipped with -short):
//
//	go test ./e2e -run TestSoak -v
//
// Long mode, for as long as FPAGENT_SOAK says:
//
//	FPAGENT_SOAK=30m go test ./e2e -run TestSoak -v -timeout 0
//
// FPAGENT_SOAK_SEED replays the fault schedule of an earlier run (the seed is
// printed); FPAGENT_SOAK_RSS_MB changes the RSS bound (default 400);
// FPAGENT_SOAK_LEDGER names a file the ledger is also written to.
//
// Damaged WAL bytes: a flip lands either in a record DuckDB already holds
// (at or below the checkpoint /stats showed before the kill: nothing may be
// lost) or in a record not yet flushed. The second is media failure under
// acknowledged data, which no WAL survives: the points and rejects in that
// record are read from the segment before the flip (every point and bad
// line carries a token) and reported as "lost to injected damage", apart
// from the ledger; anything else missing fails the test.

// soakBaseTime is the timestamp of sequence number 0 of every source; point
// i of a source carries soakBaseTime+i, so that every point has an identity
// (key, time) of its own.
const soakBaseTime = 1_750_000_000_000_000_000

// soakDefaultRSSMB is the bound on the agent's peak resident memory
// (VmHWM): DuckDB's memory_limit (256MB by default) plus the Go heap.
const soakDefaultRSSMB = 400

// Leak allowances across the quiet stretch: a leak per connection or
// request shows as hundreds over the stretch; these allow for goroutines
// and descriptors that come and go with timers, the MQTT client and WAL
// segments.
const (
	soakGoroutineSlack = 20
	soakFDSlack        = 10
)

// soakSlowRestart is how long from start to /ready after a SIGKILL makes the
// soak print what the agent logged meanwhile.
const soakSlowRestart = 5 * time.Second

// soakToken names one point or one malformed line: source letter, G (good)
// or B (bad), sequence number. It is carried in the id field of good
// points and in the tags of bad lines, so it can be found in WAL records
// and dead-letter payloads without decoding them.
var soakToken = regexp.MustCompile(`([HMTU])([GB])([0-9]{8})`)

type soakPlan struct {
	chaos, quiet time.Duration
	seed         uint64
	rssMB        int
	long         bool
}

func soakPlanFromEnv(t *testing.T) soakPlan {
	p := soakPlan{chaos: 90 * time.Second, quiet: 25 * time.Second, rssMB: soakDefaultRSSMB, seed: uint64(time.Now().UnixNano())}
	if v := os.Getenv("FPAGENT_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 2*time.Minute {
			t.Fatalf("FPAGENT_SOAK=%q: want a duration of at least 2m, e.g. 30m or 4h", v)
		}
		p.quiet = min(max(d/10, 30*time.Second), 5*time.Minute)
		p.chaos = d - p.quiet
		p.long = true
	}
	if v := os.Getenv("FPAGENT_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("FPAGENT_SOAK_SEED=%q: want an unsigned integer", v)
		}
		p.seed = s
	}
	if v := os.Getenv("FPAGENT_SOAK_RSS_MB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("FPAGENT_SOAK_RSS_MB=%q: want a positive number of megabytes", v)
		}
		p.rssMB = n
	}
	if dl, ok := t.Deadline(); ok {
		if need := p.chaos + p.quiet + 4*time.Minute; time.Until(dl) < need {
			t.Fatalf("the soak needs about %s but the test deadline is in %s: run with -timeout 0 (or a larger -timeout)",
				need.Round(time.Second), time.Until(dl).Round(time.Second))
		}
	}
	return p
}

// TestSoak: see the comment at the top of this file.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes about 2.5 minutes; run without -short (FPAGENT_SOAK=30m for the long mode)")
	}
	plan := soakPlanFromEnv(t)
	began := time.Now()
	t.Logf("soak: seed %d (FPAGENT_SOAK_SEED=%d replays the fault schedule), chaos %s, quiet stretch %s",
		plan.seed, plan.seed, plan.chaos, plan.quiet)
	rng := rand.New(rand.NewPCG(plan.seed, 0x50a450a4))

	mnt := soakTmpfs(t, "64m")
	walParent := mnt
	if mnt == "" {
		walParent = t.TempDir()
	}
	dir := t.TempDir()
	mq := startMosquitto(t, brokerDir(t), 0)
	ports := newPorts(t)
	cfg := soakConfig(dir, filepath.Join(walParent, "wal"), ports, mq.Addr)
	a := startAgent(t, dir, ports, cfg)

	s := &soak{t: t, a: a, mq: mq, plan: plan, rng: rng, mnt: mnt, walDir: filepath.Join(walParent, "wal"), began: began}
	s.ld = newLoad(a, mq.Addr, rng)
	s.ld.start()
	t.Cleanup(s.ld.finish)

	s.chaos(plan.chaos)
	s.leakStretch(plan.quiet)
	s.ld.finish()
	s.settle()
	s.checkCounters()
	s.sampleRSS()
	a.stop()
	mq.stop()
	if l := mq.log.String(); strings.Contains(l, "dropped") {
		t.Errorf("mosquitto dropped messages (max_queued_messages?):\n%s", grepLines(l, "dropped", 10))
	}
	s.checkEvidence()
	s.ledger()
}

// checkEvidence checks that every segment with flipped bytes is still
// there, or was renamed *.broken when its records were all behind the
// checkpoint: damaged segments are kept as evidence, never deleted.
func (s *soak) checkEvidence() {
	for seg := range s.flippedSegs {
		_, err1 := os.Stat(filepath.Join(s.walDir, seg))
		_, err2 := os.Stat(filepath.Join(s.walDir, seg+".broken"))
		if err1 != nil && err2 != nil {
			s.t.Errorf("the damaged WAL segment %s is gone: neither it nor %s.broken is in %s", seg, seg, s.walDir)
		}
	}
}

// soakTmpfs mounts a tmpfs of the given size for the WAL, so that the soak
// can fill it. It returns "" (and the soak runs without disk-full faults)
// where mounting is not allowed, except under CI, where it is a failure.
func soakTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the soak fills a tmpfs it mounts, which needs root; CI runs as root")
		}
		t.Log("soak: not root, so no tmpfs: the disk-full faults are left out")
		return ""
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount a %s tmpfs on %s: %v: %s", size, dir, err, out)
		}
		t.Logf("soak: cannot mount a tmpfs (%v: %s): the disk-full faults are left out", err, out)
		return ""
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s; detaching it", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

// soakConfig is the agent's config: the WAL (storage.base_dir) on the
// tmpfs, small segments and a 1s flush so that a kill finds sealed
// segments both flushed and not, every input on, MQTT with a persistent
// session and fast reconnects.
func soakConfig(dir, walDir string, p agentPorts, broker string) string {
	mqtt := mqttSection(broker, "soak-agent", "reconnect_min: 100ms\nreconnect_max: 1s", `{topic: "soak/#", qos: 1, format: influx}`)
	return fmt.Sprintf(`data_dir: %s
log: {level: info, format: text}
storage:
  base_dir: %s
  max_wal_size: 64KiB
  batch_size: 50000
  flush_interval: 1s
  store_timeout: 2s
admin:
  listen: 127.0.0.1:%d
inputs:
  http: {listen: "127.0.0.1:%d"}
  tcp: {listen: "127.0.0.1:%d"}
  udp: {listen: "127.0.0.1:%d"}
%s
`, filepath.Join(dir, "data"), walDir, p.Admin, p.HTTP, p.TCP, p.UDP, indent(mqtt, "  "))
}

// ---- the ledger of what was sent ----

// Token states.
const (
	stUnsent = 0
	stSent   = 1 // sent, no acknowledgement (yet): may or may not be stored
	stAcked  = 2 // acknowledged: must be stored exactly once
)

// sourceLedger records, per sequence number, what happened to each good
// point and each malformed line of one source.
type sourceLedger struct {
	name   string
	letter byte
	mu     sync.Mutex
	good   []uint8
	bad    []uint8
	// Tokens in WAL records whose bytes were flipped before they reached
	// DuckDB: lost to injected media damage if missing.
	riskGood, riskBad map[int]bool
}

func newSourceLedger(name string, letter byte) *sourceLedger {
	return &sourceLedger{name: name, letter: letter, riskGood: map[int]bool{}, riskBad: map[int]bool{}}
}

func (l *sourceLedger) allocGood(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := len(l.good)
	for range n {
		l.good = append(l.good, stSent)
	}
	return first
}

func (l *sourceLedger) allocBad() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bad = append(l.bad, stSent)
	return len(l.bad) - 1
}

func (l *sourceLedger) ackGood(first, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := first; i < first+n; i++ {
		l.good[i] = stAcked
	}
}

func (l *sourceLedger) ackBad(i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bad[i] = stAcked
}

func (l *sourceLedger) goodLine(seq int) string {
	return fmt.Sprintf("soak,src=%s,s=%d id=\"%cG%08d\",v=%di %d\n", l.name, seq%8, l.letter, seq, seq, soakBaseTime+int64(seq))
}

// badLine is a malformed line carrying its token; kind picks the flaw.
func (l *sourceLedger) badLine(tok, kind int) string {
	id := fmt.Sprintf("%cB%08d", l.letter, tok)
	switch kind % 4 {
	case 0:
		return "soakbad,src=" + l.name + ",id=" + id + " v=\n" // no field value
	case 1:
		return "soakbad,src=" + l.name + ",id=" + id + " v=1i 12ab\n" // bad timestamp
	case 2:
		return "soakbad,src=" + l.name + ",id=" + id + "\n" // no fields
	default:
		return "soakbad,src=" + l.name + ",id=" + id + " v=abc\n" // bad field value
	}
}

// ---- load ----

// tcpConnRecord is what one TCP connection carried; its lines are expected
// in full when the client closed it and no kill came near it.
type tcpConnRecord struct {
	open, closed time.Time
	good         [][2]int // first, n
	bad          []int
}

type load struct {
	a      *agent
	broker string
	seeds  []uint64

	stop, paused atomic.Bool
	parked       atomic.Int32
	workers      int32
	wg           sync.WaitGroup
	finished     sync.Once

	http, mqtt, tcp, udp *sourceLedger
	byLetter             map[byte]*sourceLedger
	byName               map[string]*sourceLedger

	keepAlive, oneShot *http.Transport

	httpRequests, httpRetries, http503, tcpConns atomic.Int64
	mqttPublishes, mqttUnacked                   atomic.Int64

	mu        sync.Mutex
	anomalies []string
	cleanTCP  []tcpConnRecord
}

func newLoad(a *agent, broker string, rng *rand.Rand) *load {
	ld := &load{a: a, broker: broker,
		http: newSourceLedger("http", 'H'), mqtt: newSourceLedger("mqtt", 'M'),
		tcp: newSourceLedger("tcp", 'T'), udp: newSourceLedger("udp", 'U'),
		keepAlive: &http.Transport{MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second},
		oneShot:   &http.Transport{DisableKeepAlives: true},
	}
	ld.byLetter = map[byte]*sourceLedger{'H': ld.http, 'M': ld.mqtt, 'T': ld.tcp, 'U': ld.udp}
	ld.byName = map[string]*sourceLedger{"http": ld.http, "mqtt": ld.mqtt, "tcp": ld.tcp, "udp": ld.udp}
	for range 16 {
		ld.seeds = append(ld.seeds, rng.Uint64())
	}
	return ld
}

func (ld *load) anomaly(format string, args ...any) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if len(ld.anomalies) < 200 {
		ld.anomalies = append(ld.anomalies, time.Now().UTC().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
}

// Rates: about 1,200 HTTP, 1,000 MQTT, 800 TCP and 200 UDP points a second.
func (ld *load) start() {
	spawn := func(f func()) {
		ld.workers++
		ld.wg.Add(1)
		go func() { defer ld.wg.Done(); f() }()
	}
	for i := range 3 {
		tr := ld.keepAlive
		if i == 2 {
			tr = ld.oneShot // a new connection per request: churn for the leak check
		}
		spawn(func() { ld.httpWorker(i, &http.Client{Transport: tr, Timeout: 15 * time.Second}) })
	}
	for i := range 2 {
		spawn(func() { ld.mqttWorker(i) })
	}
	for i := range 2 {
		spawn(func() { ld.tcpWorker(i) })
	}
	spawn(ld.udpWorker)
}

// finish stops the load and waits for every worker.
func (ld *load) finish() {
	ld.finished.Do(func() {
		ld.stop.Store(true)
		ld.wg.Wait()
		ld.keepAlive.CloseIdleConnections()
	})
}

// pause parks every worker (TCP connections closed, HTTP idle connections
// dropped) and returns once all are parked.
func (ld *load) pause() error {
	ld.paused.Store(true)
	deadline := time.Now().Add(60 * time.Second)
	for ld.parked.Load() < ld.workers {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d load workers parked within 60s", ld.parked.Load(), ld.workers)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ld.keepAlive.CloseIdleConnections()
	return nil
}

func (ld *load) resume() { ld.paused.Store(false) }

// hold parks the calling worker while the load is paused; it reports
// whether the worker should go on.
func (ld *load) hold(onPause func()) bool {
	if ld.stop.Load() {
		return false
	}
	if !ld.paused.Load() {
		return true
	}
	if onPause != nil {
		onPause()
	}
	ld.parked.Add(1)
	for ld.paused.Load() && !ld.stop.Load() {
		time.Sleep(20 * time.Millisecond)
	}
	ld.parked.Add(-1)
	return !ld.stop.Load()
}

// sleep waits d unless the load stops first.
func (ld *load) sleep(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end) && !ld.stop.Load(); {
		time.Sleep(min(20*time.Millisecond, time.Until(end)))
	}
}

func (ld *load) pace(start time.Time, every time.Duration) { ld.sleep(every - time.Since(start)) }

var storedRE = regexp.MustCompile(`(\d+) points stored`)

// httpWrite posts body; it returns the status, the answer's message and
// the Retry-After, or a transport error.
func (ld *load) httpWrite(c *http.Client, body string) (int, string, time.Duration, error) {
	ld.httpRequests.Add(1)
	resp, err := c.Post(ld.a.HTTP+"/api/v2/write?bucket=soak&precision=ns", "text/plain", strings.NewReader(body))
	if err != nil {
		return 0, "", 0, err
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return resp.StatusCode, string(msg), time.Duration(ra) * time.Second, nil
}

// sendHTTP writes the good points [first, first+n) and nbad malformed lines
// until the agent acknowledges them, as a client that retries does: the same
// points again (their identity makes a second store a no-op), the malformed
// lines under fresh tokens (so that each token's fate is known).
func (ld *load) sendHTTP(c *http.Client, rng *rand.Rand, first, n, nbad int) {
	l := ld.http
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			ld.httpRetries.Add(1)
		}
		var b strings.Builder
		var bads []int
		for i := first; i < first+n; i++ {
			if i == first+n/2 {
				for range nbad {
					tok := l.allocBad()
					bads = append(bads, tok)
					b.WriteString(l.badLine(tok, rng.IntN(4)))
				}
			}
			b.WriteString(l.goodLine(i))
		}
		if n == 0 {
			for range nbad {
				tok := l.allocBad()
				bads = append(bads, tok)
				b.WriteString(l.badLine(tok, rng.IntN(4)))
			}
		}
		status, msg, retry, err := ld.httpWrite(c, b.String())
		switch {
		case err != nil:
			ld.sleep(100 * time.Millisecond)
		case status == http.StatusNoContent && nbad == 0:
			l.ackGood(first, n)
			return
		case status == http.StatusBadRequest && nbad > 0 && strings.Contains(msg, "partial write"):
			if m := storedRE.FindStringSubmatch(msg); m == nil || m[1] != strconv.Itoa(n) {
				ld.anomaly("HTTP 400 partial write of %d good and %d bad lines says %q", n, nbad, msg)
			}
			l.ackGood(first, n)
			for _, tok := range bads {
				l.ackBad(tok)
			}
			return
		case status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
			ld.http503.Add(1)
			if retry <= 0 {
				ld.anomaly("HTTP %d without Retry-After: %s", status, msg)
			}
			ld.sleep(min(max(retry, 100*time.Millisecond), 500*time.Millisecond))
		default:
			ld.anomaly("HTTP write of %d good and %d bad lines: %d %s", n, nbad, status, strings.TrimSpace(msg))
			ld.sleep(200 * time.Millisecond)
		}
		if ld.stop.Load() {
			return // left unacknowledged
		}
	}
}

func (ld *load) httpWorker(id int, c *http.Client) {
	rng := rand.New(rand.NewPCG(ld.seeds[id], 1))
	const lines = 40
	for n := 0; ld.hold(c.CloseIdleConnections); n++ {
		start := time.Now()
		nbad := 0
		if n%5 == 4 {
			nbad = 1
		}
		ld.sendHTTP(c, rng, ld.http.allocGood(lines), lines, nbad)
		ld.pace(start, 100*time.Millisecond)
	}
}

// mqttMsg is one QoS 1 message: good points [first, first+n) and, unless
// bad is -1, one malformed line (or binary payload) with token bad.
type mqttMsg struct {
	first, n int
	bad      int
	kind     int
	payload  []byte
}

func (ld *load) mqttPayload(m *mqttMsg) {
	l := ld.mqtt
	var b bytes.Buffer
	for i := m.first; i < m.first+m.n; i++ {
		b.WriteString(l.goodLine(i))
	}
	if m.bad >= 0 {
		if m.kind == 4 {
			b.Write([]byte{0xff, 0xfe, 0x00})
			fmt.Fprintf(&b, "MB%08d", m.bad)
			b.Write([]byte{0x80, 0x81, '\n'})
		} else {
			b.WriteString(l.badLine(m.bad, m.kind))
		}
	}
	m.payload = b.Bytes()
}

func (ld *load) mqttConnect(id string) paho.Client {
	for !ld.stop.Load() {
		o := paho.NewClientOptions().AddBroker(ld.broker).SetClientID(id).SetCleanSession(true).
			SetAutoReconnect(false).SetConnectTimeout(3 * time.Second).SetWriteTimeout(3 * time.Second)
		c := paho.NewClient(o)
		if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			return c
		}
		c.Disconnect(0)
		ld.sleep(200 * time.Millisecond)
	}
	return nil
}

// publish sends msgs at QoS 1 and returns those the broker did not
// acknowledge within 5 seconds.
func (ld *load) publish(c paho.Client, topic string, msgs []mqttMsg) (unacked []mqttMsg) {
	toks := make([]paho.Token, len(msgs))
	for i := range msgs {
		ld.mqttPublishes.Add(1)
		toks[i] = c.Publish(topic, 1, false, msgs[i].payload)
	}
	deadline := time.Now().Add(5 * time.Second)
	for i, tok := range toks {
		m := msgs[i]
		if tok.WaitTimeout(time.Until(deadline)) && tok.Error() == nil {
			ld.mqtt.ackGood(m.first, m.n)
			if m.bad >= 0 {
				ld.mqtt.ackBad(m.bad)
			}
			continue
		}
		ld.mqttUnacked.Add(1)
		unacked = append(unacked, m)
	}
	return unacked
}

func (ld *load) mqttWorker(id int) {
	rng := rand.New(rand.NewPCG(ld.seeds[4+id], 2))
	topic := fmt.Sprintf("soak/p%d", id)
	var c paho.Client
	var retry []mqttMsg // unacknowledged messages with good points: published again
	defer func() {
		if c != nil {
			c.Disconnect(100)
		}
	}()
	for n := 0; ld.hold(nil); n++ {
		start := time.Now()
		if c == nil || !c.IsConnectionOpen() {
			if c != nil {
				c.Disconnect(0)
			}
			if c = ld.mqttConnect(fmt.Sprintf("soak-pub-%d-%d", id, n)); c == nil {
				return
			}
		}
		msgs := make([]mqttMsg, 0, len(retry)+11)
		for _, m := range retry {
			if m.bad >= 0 {
				// A malformed line is never sent twice: a fresh token each time.
				m.bad = ld.mqtt.allocBad()
			}
			ld.mqttPayload(&m)
			msgs = append(msgs, m)
		}
		retry = nil
		for range 10 {
			m := mqttMsg{first: ld.mqtt.allocGood(5), n: 5, bad: -1}
			ld.mqttPayload(&m)
			msgs = append(msgs, m)
		}
		if n%3 == 2 {
			m := mqttMsg{bad: ld.mqtt.allocBad(), kind: rng.IntN(6)}
			if m.kind == 5 { // good lines and a bad one in one message
				m.first, m.n, m.kind = ld.mqtt.allocGood(4), 4, rng.IntN(4)
			}
			ld.mqttPayload(&m)
			msgs = append(msgs, m)
		}
		for _, m := range ld.publish(c, topic, msgs) {
			if m.n > 0 {
				retry = append(retry, m)
			}
		}
		if len(retry) > 0 {
			c.Disconnect(0)
			c = nil
		}
		ld.pace(start, 100*time.Millisecond)
	}
}

func (ld *load) tcpWorker(id int) {
	var conn net.Conn
	var rec *tcpConnRecord
	closeClean := func() {
		if conn == nil {
			return
		}
		err := conn.Close()
		rec.closed = time.Now()
		if err == nil {
			ld.mu.Lock()
			ld.cleanTCP = append(ld.cleanTCP, *rec)
			ld.mu.Unlock()
		}
		conn, rec = nil, nil
	}
	defer closeClean()
	l := ld.tcp
	const lines = 20
	for n := 0; ld.hold(closeClean); n++ {
		start := time.Now()
		if conn == nil {
			var err error
			if conn, err = net.DialTimeout("tcp", ld.a.TCP, time.Second); err != nil {
				conn = nil
				ld.sleep(100 * time.Millisecond)
				continue
			}
			ld.tcpConns.Add(1)
			rec = &tcpConnRecord{open: time.Now()}
		}
		first := l.allocGood(lines)
		bad := -1
		var b strings.Builder
		for i := first; i < first+lines; i++ {
			if i == first+lines/2 && n%10 == 9 {
				bad = l.allocBad()
				b.WriteString(l.badLine(bad, n/10))
			}
			b.WriteString(l.goodLine(i))
		}
		// The agent stops reading under backpressure: a write may wait.
		conn.SetWriteDeadline(time.Now().Add(60 * time.Second))
		if _, err := io.WriteString(conn, b.String()); err != nil {
			conn.Close() // broken (a kill): what it carried is best effort
			conn, rec = nil, nil
			ld.sleep(100 * time.Millisecond)
			continue
		}
		rec.good = append(rec.good, [2]int{first, lines})
		if bad >= 0 {
			rec.bad = append(rec.bad, bad)
		}
		if (n+7*id)%20 == 19 { // connection churn for the leak check
			closeClean()
		}
		ld.pace(start, 50*time.Millisecond)
	}
}

func (ld *load) udpWorker() {
	conn, err := net.Dial("udp", ld.a.UDP)
	if err != nil {
		ld.anomaly("UDP dial %s: %v", ld.a.UDP, err)
		return
	}
	defer conn.Close()
	l := ld.udp
	const lines = 10
	for n := 0; ld.hold(nil); n++ {
		start := time.Now()
		first := l.allocGood(lines)
		var b strings.Builder
		for i := first; i < first+lines; i++ {
			if i == first+lines/2 && n%10 == 9 {
				b.WriteString(l.badLine(l.allocBad(), n/10))
			}
			b.WriteString(l.goodLine(i))
		}
		conn.Write([]byte(b.String())) // best effort: errors after a kill are expected
		ld.pace(start, 50*time.Millisecond)
	}
}

// ---- the faults ----

type soak struct {
	t      *testing.T
	a      *agent
	mq     *mosquitto
	ld     *load
	plan   soakPlan
	rng    *rand.Rand
	mnt    string // tmpfs holding the WAL; "" = no disk-full faults
	walDir string
	began  time.Time

	kills                      []time.Time
	flipsFlushed, flipsPending int
	flipsSkipped               int
	lostRecords                []damagedRecord // WAL records damaged before they were flushed
	flippedSegs                map[string]bool
	diskFulls, diskFullBit     int
	brokerRestarts, bursts     int
	peakHWM                    int64           // kB
	restarts                   []time.Duration // from start to /ready after each SIGKILL
	leak                       string
}

func (s *soak) logf(format string, args ...any) {
	s.t.Helper()
	s.t.Logf("[%7s %s] %s", time.Since(s.began).Round(100*time.Millisecond), time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

type soakEvent int

const (
	evKill soakEvent = iota
	evKillFlip
	evDiskFull
	evBroker
	evBurst
)

// chaos runs faults at random moments for d. Each kind happens at least
// once (the first five events are one of each, shuffled).
func (s *soak) chaos(d time.Duration) {
	end := time.Now().Add(d)
	first := []soakEvent{evKill, evKillFlip, evDiskFull, evBroker, evBurst}
	s.rng.Shuffle(len(first), func(i, j int) { first[i], first[j] = first[j], first[i] })
	minGap, spread := 2*time.Second, 4*time.Second
	if s.plan.long {
		minGap, spread = 3*time.Second, 12*time.Second
	}
	for n := 0; ; n++ {
		s.wait(minGap + time.Duration(s.rng.Int64N(int64(spread))))
		if time.Now().After(end) && n >= len(first) {
			return
		}
		ev := s.pick(n, first)
		switch ev {
		case evKill:
			s.killRestart(false)
		case evKillFlip:
			s.killRestart(true)
		case evDiskFull:
			s.fillDisk(time.Duration(1500+s.rng.IntN(2500)) * time.Millisecond)
		case evBroker:
			s.restartBroker(time.Duration(200+s.rng.IntN(2300)) * time.Millisecond)
		case evBurst:
			s.burst()
		}
	}
}

func (s *soak) pick(n int, first []soakEvent) soakEvent {
	if n < len(first) {
		return first[n]
	}
	switch r := s.rng.IntN(100); {
	case r < 25:
		return evKill
	case r < 55:
		return evKillFlip
	case r < 75:
		return evDiskFull
	case r < 90:
		return evBroker
	default:
		return evBurst
	}
}

// wait sleeps d, sampling the agent's peak RSS each second.
func (s *soak) wait(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(min(time.Second, time.Until(end)))
		s.sampleRSS()
	}
}

// sampleRSS records the running agent's VmHWM.
func (s *soak) sampleRSS() {
	if s.a.cmd == nil || s.a.cmd.Process == nil {
		return
	}
	if kb, err := procStatusKB(s.a.cmd.Process.Pid, "VmHWM"); err == nil {
		s.peakHWM = max(s.peakHWM, kb)
	}
}

func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

type soakStats struct {
	Checkpoint    uint64 `json:"checkpoint"`
	PendingWrites uint64 `json:"pending_writes"`
	WALFiles      int    `json:"wal_files_count"`
	Backpressure  uint64 `json:"backpressure_total"`
	StoreErrors   uint64 `json:"store_errors_total"`
	WAL           struct {
		FirstPosition uint64 `json:"first_position"`
		Corruptions   uint64 `json:"corruptions_total"`
		WriteErrors   uint64 `json:"write_errors_total"`
	} `json:"wal"`
	Inputs map[string]struct {
		ReceivedPoints      uint64 `json:"received_points"`
		PersistedPoints     uint64 `json:"persisted_points"`
		RejectedPoints      uint64 `json:"rejected_points"`
		DroppedPoints       uint64 `json:"dropped_points"`
		Connections         int64  `json:"connections"`
		ConnectionsAccepted uint64 `json:"connections_accepted"`
		Backpressure        uint64 `json:"backpressure"`
	} `json:"inputs"`
}

func (s *soak) stats() soakStats {
	var st soakStats
	s.a.getJSON("/stats", &st)
	return st
}

// killRestart SIGKILLs the agent and starts it again; with flip, bytes of a
// sealed WAL segment are flipped while it is down.
func (s *soak) killRestart(flip bool) {
	var cp uint64
	preferFlushed := (s.flipsFlushed+s.flipsPending+s.flipsSkipped)%2 == 0
	if flip {
		cp = s.awaitFlipTarget(preferFlushed)
	}
	s.sampleRSS()
	s.a.kill()
	s.kills = append(s.kills, time.Now())
	what := "SIGKILL"
	flipped := false
	if flip {
		var note string
		flipped, note = s.flip(cp, preferFlushed)
		what += "; " + note
	}
	time.Sleep(time.Duration(s.rng.IntN(400)) * time.Millisecond)
	mark := len(s.a.Log())
	start := time.Now()
	s.a.start()
	took := time.Since(start)
	s.restarts = append(s.restarts, took)
	s.logf("%s; restarted, ready in %s", what, took.Round(time.Millisecond))
	if took > soakSlowRestart {
		l := s.a.Log()[mark:]
		s.logf("slow restart: the agent's log from its start until ready:\n%s", l[:min(len(l), 6000)])
	}
	if flipped {
		if st := s.stats(); st.WAL.Corruptions == 0 {
			s.t.Errorf("after flipping bytes in a sealed WAL segment the restarted agent counts no corruption (/stats wal.corruptions_total 0)")
		}
		if !strings.Contains(s.a.Log(), "damaged segment") {
			s.t.Errorf("after flipping bytes in a sealed WAL segment the agent logged no \"damaged segment\"")
		}
	}
}

// awaitFlipTarget waits up to 3 seconds for a moment when the WAL has a
// sealed segment of the wanted kind (one holding records DuckDB already
// has, or one holding only records it has not), and returns the checkpoint
// then: the kill follows at once.
func (s *soak) awaitFlipTarget(flushed bool) uint64 {
	var st soakStats
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		st = s.stats()
		// The oldest segment is sealed when there are two; it straddles
		// the checkpoint when its first record is at or below it (a
		// segment wholly below is deleted after each flush).
		if st.WALFiles >= 2 && (st.WAL.FirstPosition <= st.Checkpoint) == flushed {
			break
		}
		if !flushed && st.WALFiles >= 3 {
			break
		}
	}
	return st.Checkpoint
}

// walRecord is one intact record of a sealed segment.
type walRecord struct {
	seg     string
	off     int64
	payload []byte
	pos     uint64
}

var castagnoliTable = crc32.MakeTable(crc32.Castagnoli)

// sealedRecords lists the intact records of every segment but the newest
// (the segment format: a 40-byte header, then records of crc32c(4)
// length(4) position(8) payload). Records at or past the next segment's
// first position were superseded by a failed write and are left out.
func sealedRecords(dir string) ([]walRecord, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); len(n) == 37 && strings.HasSuffix(n, ".wal") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var recs []walRecord
	for i := 0; i+1 < len(names); i++ {
		nextFirst, err := strconv.ParseUint(names[i+1][17:33], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("segment name %s: %v", names[i+1], err)
		}
		data, err := os.ReadFile(filepath.Join(dir, names[i]))
		if err != nil {
			return nil, err
		}
		for off := 40; off+16 <= len(data); {
			n := int(binary.LittleEndian.Uint32(data[off+4:]))
			end := off + 16 + n
			if n <= 0 || end > len(data) {
				break
			}
			pos := binary.LittleEndian.Uint64(data[off+8:])
			if crc32.Checksum(data[off+4:end], castagnoliTable) == binary.LittleEndian.Uint32(data[off:]) && pos < nextFirst {
				recs = append(recs, walRecord{seg: names[i], off: int64(off), payload: data[off+16 : end], pos: pos})
			}
			off = end
		}
	}
	return recs, nil
}

// flip damages one record of a sealed segment of the stopped agent: one
// at or below checkpoint cp (already in DuckDB) when preferFlushed and
// there is one, else one above it. The tokens of a record above cp are
// marked at risk. It reports whether it flipped and what.
func (s *soak) flip(cp uint64, preferFlushed bool) (bool, string) {
	recs, err := sealedRecords(s.walDir)
	if err != nil {
		s.t.Fatalf("reading the WAL segments in %s: %v", s.walDir, err)
	}
	var flushed, pending []walRecord
	for _, r := range recs {
		if r.pos <= cp {
			flushed = append(flushed, r)
		} else {
			pending = append(pending, r)
		}
	}
	pool := pending
	if (preferFlushed && len(flushed) > 0) || len(pending) == 0 {
		pool = flushed
	}
	if len(pool) == 0 {
		s.flipsSkipped++
		return false, "no sealed WAL segment to flip bytes in"
	}
	r := pool[s.rng.IntN(len(pool))]
	if s.flippedSegs == nil {
		s.flippedSegs = map[string]bool{}
	}
	s.flippedSegs[r.seg] = true
	path := filepath.Join(s.walDir, r.seg)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	nflip := 1 + s.rng.IntN(3)
	for range nflip {
		at := r.off + 16 + int64(s.rng.IntN(len(r.payload)))
		b := []byte{0}
		if _, err := f.ReadAt(b, at); err != nil {
			s.t.Fatal(err)
		}
		b[0] ^= byte(1 + s.rng.IntN(255))
		if _, err := f.WriteAt(b, at); err != nil {
			s.t.Fatal(err)
		}
	}
	f.Close()
	kind := "flushed"
	if r.pos <= cp {
		s.flipsFlushed++
	} else {
		kind = "unflushed"
		s.flipsPending++
		s.markAtRisk(r)
	}
	s.checkVerify(r.seg)
	return true, fmt.Sprintf("flipped %d byte(s) in %s record at position %d (checkpoint %d) in sealed segment %s",
		nflip, kind, r.pos, cp, r.seg)
}

// damagedRecord is a WAL record whose bytes were flipped before DuckDB had
// it, and the tokens it held.
type damagedRecord struct {
	pos    uint64
	seg    string
	tokens []soakTok
}

type soakTok struct {
	l    *sourceLedger
	good bool
	seq  int
}

// markAtRisk notes the tokens a damaged, unflushed record held.
func (s *soak) markAtRisk(r walRecord) {
	d := damagedRecord{pos: r.pos, seg: r.seg}
	for _, m := range soakToken.FindAllSubmatch(r.payload, -1) {
		l := s.ld.byLetter[m[1][0]]
		seq, _ := strconv.Atoi(string(m[3]))
		l.mu.Lock()
		if m[2][0] == 'G' {
			l.riskGood[seq] = true
		} else {
			l.riskBad[seq] = true
		}
		l.mu.Unlock()
		d.tokens = append(d.tokens, soakTok{l: l, good: m[2][0] == 'G', seq: seq})
	}
	s.lostRecords = append(s.lostRecords, d)
}

// checkVerify runs `fpagent wal verify` on the damaged WAL: it must report
// the damage.
func (s *soak) checkVerify(seg string) {
	tmp, err := os.MkdirTemp("", "fpagent-soak-verify-")
	if err != nil {
		s.t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	out, err := exec.Command(agentBin, "wal", "verify", "-tmp", tmp, s.walDir).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !bytes.Contains(out, []byte("DAMAGE")) || !bytes.Contains(out, []byte(seg)) {
		s.t.Errorf("fpagent wal verify %s after flipping bytes in %s: %v, want exit 1 reporting DAMAGE:\n%s", s.walDir, seg, err, out)
	}
}

// fillDisk fills the tmpfs under the WAL with a ballast file until writes
// fail, keeps it full for hold, then deletes the ballast.
func (s *soak) fillDisk(hold time.Duration) {
	if s.mnt == "" {
		return
	}
	before := s.stats()
	ballast := filepath.Join(s.mnt, "ballast")
	f, err := os.OpenFile(ballast, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	fill := func() {
		for _, size := range []int{1 << 20, 4 << 10} {
			buf := make([]byte, size)
			for {
				if _, err := f.Write(buf); err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						s.t.Fatalf("writing the ballast %s: %v", ballast, err)
					}
					break
				}
			}
		}
	}
	fill()
	for end := time.Now().Add(hold); time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
		fill() // the agent frees flushed segments: take that room too
	}
	f.Close()
	if err := os.Remove(ballast); err != nil {
		s.t.Fatal(err)
	}
	after := s.stats()
	s.diskFulls++
	bp, we := after.Backpressure-before.Backpressure, after.WAL.WriteErrors-before.WAL.WriteErrors
	if bp+we > 0 {
		s.diskFullBit++
	}
	s.logf("disk full for %s: %d stores pushed back, %d WAL write errors; ballast deleted", hold.Round(100*time.Millisecond), bp, we)
}

func (s *soak) restartBroker(down time.Duration) {
	s.mq.restart(down)
	s.brokerRestarts++
	s.logf("mosquitto restarted after %s down", down.Round(time.Millisecond))
}

// burst sends malformed input at once: an HTTP request of 20 malformed
// lines (acknowledged with 400), 10 malformed MQTT messages, and malformed
// lines over TCP and UDP (best effort).
func (s *soak) burst() {
	ld := s.ld
	c := &http.Client{Transport: ld.keepAlive, Timeout: 15 * time.Second}
	ld.sendHTTP(c, s.rng, 0, 0, 20)
	if pc := ld.mqttConnect(fmt.Sprintf("soak-burst-%d", s.bursts)); pc != nil {
		var msgs []mqttMsg
		for k := range 10 {
			m := mqttMsg{bad: ld.mqtt.allocBad(), kind: k % 5}
			ld.mqttPayload(&m)
			msgs = append(msgs, m)
		}
		ld.publish(pc, "soak/burst", msgs)
		pc.Disconnect(100)
	}
	var tcpLines, udpLines strings.Builder
	for k := range 10 {
		tcpLines.WriteString(ld.tcp.badLine(ld.tcp.allocBad(), k))
		udpLines.WriteString(ld.udp.badLine(ld.udp.allocBad(), k))
	}
	if conn, err := net.DialTimeout("tcp", s.a.TCP, time.Second); err == nil {
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, tcpLines.String())
		conn.Close()
	}
	if conn, err := net.Dial("udp", s.a.UDP); err == nil {
		conn.Write([]byte(udpLines.String()))
		conn.Close()
	}
	s.bursts++
	s.logf("malformed burst: 20 lines over HTTP, 10 MQTT messages, 10 lines each over TCP and UDP")
}

// ---- leak check ----

type leakSample struct{ goroutines, fds, walFiles int }

func (s *soak) leakSample() leakSample {
	if err := s.ld.pause(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := s.stats()
		if st.Inputs["tcp"].Connections == 0 && st.Inputs["http"].Connections == 0 && st.PendingWrites == 0 {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("30s after the load paused: tcp connections %d, http connections %d, pending writes %d",
				st.Inputs["tcp"].Connections, st.Inputs["http"].Connections, st.PendingWrites)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // let finished handlers and timers go
	var ls leakSample
	ls.goroutines = int(s.metric("go_goroutines"))
	pid := s.a.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		s.t.Fatal(err)
	}
	ls.fds = len(fds)
	segs, _ := filepath.Glob(filepath.Join(s.walDir, "*.wal"))
	ls.walFiles = len(segs)
	return ls
}

// metric reads one unlabelled metric from /metrics.
func (s *soak) metric(name string) float64 {
	resp, err := http.Get(s.a.Admin + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				s.t.Fatalf("/metrics %s: %q: %v", name, v, err)
			}
			return f
		}
	}
	s.t.Fatalf("/metrics has no %s", name)
	return 0
}

// leakStretch runs the load for d without kills (a broker restart, a full
// disk and a malformed burst included) and compares the agent's goroutines
// and open descriptors before and after, at rest.
func (s *soak) leakStretch(d time.Duration) {
	s.logf("quiet stretch of %s: no kills; goroutines and descriptors compared at rest before and after", d)
	st0 := s.stats()
	before := s.leakSample()
	reqs0, tcp0, pub0 := s.ld.httpRequests.Load(), s.ld.tcpConns.Load(), s.ld.mqttPublishes.Load()
	s.ld.resume()
	s.wait(d / 4)
	s.restartBroker(time.Second)
	s.wait(d / 4)
	s.fillDisk(2 * time.Second)
	s.wait(d / 4)
	s.burst()
	s.wait(d / 4)
	after := s.leakSample()
	st1 := s.stats()
	reqs, conns, pubs := s.ld.httpRequests.Load()-reqs0, s.ld.tcpConns.Load()-tcp0, s.ld.mqttPublishes.Load()-pub0
	s.ld.resume()
	s.leak = fmt.Sprintf("goroutines %d -> %d (slack %d), open fds %d -> %d (slack %d; WAL segments %d -> %d) "+
		"across %d HTTP requests, %d TCP connections (agent accepted %d), %d MQTT publishes, one broker restart, one full disk",
		before.goroutines, after.goroutines, soakGoroutineSlack, before.fds, after.fds, soakFDSlack, before.walFiles, after.walFiles,
		reqs, conns, st1.Inputs["tcp"].ConnectionsAccepted-st0.Inputs["tcp"].ConnectionsAccepted, pubs)
	s.logf("leak check: %s", s.leak)
	if after.goroutines > before.goroutines+soakGoroutineSlack {
		s.t.Errorf("goroutine leak? %s", s.leak)
	}
	if after.fds > before.fds+soakFDSlack+max(0, after.walFiles-before.walFiles) {
		s.t.Errorf("file-descriptor leak? %s", s.leak)
	}
}

// ---- the end ----

// settle waits until the agent has taken what the broker holds for it and
// flushed everything to DuckDB.
func (s *soak) settle() {
	ld := s.ld
	want := int64(0)
	for seq, st := range ld.mqtt.good {
		if st == stAcked && !ld.mqtt.riskGood[seq] {
			want++
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	var last uint64
	stable := 0
	for {
		st := s.stats()
		got, err := s.a.sqlCount(`SELECT count(*) FROM readings WHERE measurement = 'soak' AND (tags->>'src') = 'mqtt'`)
		if rec := st.Inputs["mqtt"].ReceivedPoints; rec == last && st.PendingWrites == 0 {
			stable++
		} else {
			stable, last = 0, rec
		}
		if err == nil && got >= want && stable >= 4 {
			return
		}
		if time.Now().After(deadline) {
			s.logf("not settled after 3 minutes: %d of %d acknowledged MQTT points in DuckDB (%v), pending writes %d; the ledger tells the rest",
				got, want, err, st.PendingWrites)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// checkCounters checks received = persisted + rejected + dropped for every
// input of the last run.
func (s *soak) checkCounters() {
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := s.stats()
		var bad []string
		for _, name := range []string{"http", "tcp", "udp", "mqtt"} {
			c, ok := st.Inputs[name]
			if !ok {
				bad = append(bad, name+": missing from /stats")
				continue
			}
			if c.ReceivedPoints != c.PersistedPoints+c.RejectedPoints+c.DroppedPoints {
				bad = append(bad, fmt.Sprintf("%s: received %d != persisted %d + rejected %d + dropped %d",
					name, c.ReceivedPoints, c.PersistedPoints, c.RejectedPoints, c.DroppedPoints))
			}
		}
		if len(bad) == 0 {
			for _, name := range []string{"http", "mqtt", "tcp", "udp"} {
				c := st.Inputs[name]
				s.logf("counters of the last run, %-4s: received %d = persisted %d + rejected %d + dropped %d",
					name, c.ReceivedPoints, c.PersistedPoints, c.RejectedPoints, c.DroppedPoints)
			}
			return
		}
		if time.Now().After(deadline) {
			s.t.Errorf("/stats counters do not add up:\n%s", strings.Join(bad, "\n"))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ledgerRow is the outcome for one source.
type ledgerRow struct {
	acked, found, missing, dup, lost, unexpected int
	sentUnacked, sentUnackedFound                int
	expected, expectedFound                      int // TCP: lines of connections no kill came near
}

func tally(states []uint8, counts []uint8, risk map[int]bool, expected map[int]bool) ledgerRow {
	var r ledgerRow
	for seq, st := range states {
		n := int(counts[seq])
		if n > 1 {
			r.dup++
		}
		if n > 0 {
			r.found++
		}
		switch st {
		case stAcked:
			r.acked++
			if n == 0 {
				if risk[seq] {
					r.lost++
				} else {
					r.missing++
				}
			}
		case stSent:
			r.sentUnacked++
			if n > 0 {
				r.sentUnackedFound++
			}
		default:
			if n > 0 {
				r.unexpected++
			}
		}
		if expected[seq] {
			r.expected++
			if n > 0 {
				r.expectedFound++
			} else if !risk[seq] {
				r.missing++
			}
		}
	}
	return r
}

// ledger reads the DuckDB file of the stopped agent and checks it against
// what was sent.
func (s *soak) ledger() {
	t := s.t
	ld := s.ld
	db := openDB(t, s.a.dbPath())
	goodFound := map[string][]uint8{}
	badFound := map[string][]uint8{}
	for name, l := range ld.byName {
		goodFound[name] = make([]uint8, len(l.good))
		badFound[name] = make([]uint8, len(l.bad))
	}
	bump := func(c []uint8, i int) {
		if c[i] < 255 {
			c[i]++
		}
	}
	var unexpected, mismatched []string
	note := func(list *[]string, format string, args ...any) {
		if len(*list) < 10 {
			*list = append(*list, fmt.Sprintf(format, args...))
		}
	}
	nUnexpected, nMismatched := 0, 0

	rows, err := db.Query(`SELECT measurement, coalesce(tags->>'src', ''), epoch_ns(ts), coalesce(fields->>'id', '') FROM readings`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var meas, src, id string
		var ts int64
		if err := rows.Scan(&meas, &src, &ts, &id); err != nil {
			t.Fatal(err)
		}
		l := ld.byName[src]
		seq := ts - soakBaseTime
		if meas != "soak" || l == nil || seq < 0 || seq >= int64(len(l.good)) {
			nUnexpected++
			note(&unexpected, "%s src=%q ts=%d id=%q", meas, src, ts, id)
			continue
		}
		if want := fmt.Sprintf("%cG%08d", l.letter, seq); id != want {
			nMismatched++
			note(&mismatched, "src=%s ts=%d has id %q, want %q", src, ts, id, want)
		}
		bump(goodFound[src], int(seq))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()

	var unknownDL []string
	nUnknownDL := 0
	dlCopies := map[string][]string{} // token -> when and whence each copy was received
	dl, err := db.Query(`SELECT source, origin, reason, payload, strftime(received, '%H:%M:%S.%f') FROM dead_letters`)
	if err != nil {
		t.Fatal(err)
	}
	for dl.Next() {
		var source, origin, reason, received string
		var payload []byte
		if err := dl.Scan(&source, &origin, &reason, &payload, &received); err != nil {
			t.Fatal(err)
		}
		for _, m := range soakToken.FindAll(payload, 1) {
			dlCopies[string(m)] = append(dlCopies[string(m)], received+" "+origin)
		}
		m := soakToken.FindAllSubmatch(payload, -1)
		l := ld.byName[source]
		ok := len(m) == 1 && l != nil && m[0][1][0] == l.letter && m[0][2][0] == 'B'
		if ok {
			seq, _ := strconv.Atoi(string(m[0][3]))
			if ok = seq < len(l.bad); ok {
				bump(badFound[source], seq)
			}
		}
		if !ok {
			nUnknownDL++
			note(&unknownDL, "source %s origin %s reason %q payload %q", source, origin, reason, cut(payload, 120))
		}
	}
	if err := dl.Err(); err != nil {
		t.Fatal(err)
	}
	dl.Close()

	// TCP lines of connections the client closed with no kill near them.
	expectedTCP, expectedTCPBad := map[int]bool{}, map[int]bool{}
	const grace = 10 * time.Second
	for _, c := range ld.cleanTCP {
		near := false
		for _, k := range s.kills {
			near = near || (!k.Before(c.open) && k.Before(c.closed.Add(grace)))
		}
		if near {
			continue
		}
		for _, g := range c.good {
			for i := g[0]; i < g[0]+g[1]; i++ {
				expectedTCP[i] = true
			}
		}
		for _, b := range c.bad {
			expectedTCPBad[b] = true
		}
	}

	res := map[string]ledgerRow{}
	resBad := map[string]ledgerRow{}
	for name, l := range ld.byName {
		var exp, expBad map[int]bool
		if name == "tcp" {
			exp, expBad = expectedTCP, expectedTCPBad
		}
		res[name] = tally(l.good, goodFound[name], l.riskGood, exp)
		resBad[name] = tally(l.bad, badFound[name], l.riskBad, expBad)
	}

	var out strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&out, format+"\n", args...) }
	mode := "short"
	if s.plan.long {
		mode = "long"
	}
	w("## fpagent soak ledger (%s mode, seed %d, %s)", mode, s.plan.seed, time.Since(s.began).Round(time.Second))
	w("")
	w("Faults: %d SIGKILLs; %d with bytes flipped in a sealed WAL segment (%d in records already in DuckDB, %d in unflushed records, %d skipped: no sealed segment); "+
		"%d disk-full episodes (%d pushed the agent back); %d broker restarts; %d malformed bursts.",
		len(s.kills), s.flipsFlushed+s.flipsPending+s.flipsSkipped, s.flipsFlushed, s.flipsPending, s.flipsSkipped,
		s.diskFulls, s.diskFullBit, s.brokerRestarts, s.bursts)
	w("Load: %d HTTP requests (%d retries, %d answered 503/429), %d MQTT publishes (%d not acknowledged by the broker in time), %d TCP connections.",
		ld.httpRequests.Load(), ld.httpRetries.Load(), ld.http503.Load(), ld.mqttPublishes.Load(), ld.mqttUnacked.Load(), ld.tcpConns.Load())
	w("")
	w("Acknowledged points (HTTP 204 or 400 partial write, MQTT PUBACK from the broker):")
	w("")
	w("| source | acknowledged | found | missing | duplicated | lost to injected damage | sent, not acknowledged (stored anyway) |")
	w("|---|---:|---:|---:|---:|---:|---:|")
	for _, name := range []string{"http", "mqtt"} {
		r := res[name]
		w("| %s | %d | %d | %d | %d | %d | %d (%d) |", name, r.acked, r.found, r.missing, r.dup, r.lost, r.sentUnacked, r.sentUnackedFound)
	}
	w("")
	w("Best effort (no acknowledgement; a kill loses what was in flight):")
	w("")
	w("| source | written | found | not found | duplicated | lines of TCP connections no kill came near: found / written |")
	w("|---|---:|---:|---:|---:|---:|")
	for _, name := range []string{"tcp", "udp"} {
		r := res[name]
		extra := "-"
		if name == "tcp" {
			extra = fmt.Sprintf("%d / %d", r.expectedFound, r.expected)
		}
		w("| %s | %d | %d | %d | %d | %s |", name, r.sentUnacked, r.found, r.sentUnacked-r.sentUnackedFound, r.dup, extra)
	}
	w("")
	w("Dead letters (malformed input sent, by source):")
	w("")
	w("| source | acknowledged | found | missing | duplicated | lost to injected damage | sent, not acknowledged (stored anyway) |")
	w("|---|---:|---:|---:|---:|---:|---:|")
	for _, name := range []string{"http", "mqtt", "tcp", "udp"} {
		r := resBad[name]
		w("| %s | %d | %d | %d | %d | %d | %d (%d) |", name, r.acked, r.found, r.missing, r.dup, r.lost, r.sentUnacked, r.sentUnackedFound)
	}
	w("")
	if len(s.lostRecords) > 0 {
		w("WAL records damaged before they reached DuckDB (their acknowledged contents are the 'lost to injected damage' column):")
		for _, r := range s.lostRecords {
			var desc []string
			for _, name := range []string{"http", "mqtt", "tcp", "udp"} {
				var good, bad, goodFoundN, badFoundN int
				for _, tk := range r.tokens {
					switch {
					case tk.l.name != name:
					case tk.good:
						good++
						goodFoundN += min(1, int(goodFound[name][tk.seq]))
					default:
						bad++
						badFoundN += min(1, int(badFound[name][tk.seq]))
					}
				}
				if good+bad > 0 {
					desc = append(desc, fmt.Sprintf("%s: %d points (%d found anyway), %d malformed lines (%d found anyway)",
						name, good, goodFoundN, bad, badFoundN))
				}
			}
			w("- position %d in %s: %s", r.pos, r.seg, strings.Join(desc, "; "))
		}
		w("")
	}
	var dups []string
	for tok, copies := range dlCopies {
		if len(copies) > 1 {
			dups = append(dups, tok+": received "+strings.Join(copies, ", and "))
		}
	}
	if len(dups) > 0 {
		sort.Strings(dups)
		w("Malformed input dead-lettered more than once (UTC receive times, then origin):")
		for i, d := range dups {
			if i == 15 {
				w("- ... and %d more", len(dups)-15)
				break
			}
			w("- %s", d)
		}
		w("")
	}
	w("Rows that match nothing sent: %d; rows whose id does not match their time: %d; dead letters that match nothing sent: %d.",
		nUnexpected, nMismatched, nUnknownDL)
	w("Leak check: %s.", s.leak)
	w("Peak RSS (VmHWM, highest of every agent process): %d MB (bound %d MB).", s.peakHWM/1024, s.plan.rssMB)
	if n := len(s.restarts); n > 0 {
		r := append([]time.Duration(nil), s.restarts...)
		slices.Sort(r)
		w("Start to ready after a SIGKILL: median %s, 90th percentile %s, longest %s (%d restarts).",
			r[n/2].Round(time.Millisecond), r[n*9/10].Round(time.Millisecond), r[n-1].Round(time.Millisecond), n)
	}
	w("")
	w("Agent warnings and errors over every run (count, level, message):")
	w("")
	for _, line := range logSummary(s.a.Log(), 20) {
		w("    %s", line)
	}
	ledgerText := out.String()
	t.Logf("\n%s", ledgerText)
	if path := os.Getenv("FPAGENT_SOAK_LEDGER"); path != "" {
		if err := os.WriteFile(path, []byte(ledgerText), 0o644); err != nil {
			t.Errorf("writing the ledger to FPAGENT_SOAK_LEDGER=%s: %v", path, err)
		}
	}

	// The verdict.
	for _, name := range []string{"http", "mqtt"} {
		r := res[name]
		if r.missing > 0 || r.dup > 0 {
			t.Errorf("%s: %d acknowledged points missing, %d stored more than once", name, r.missing, r.dup)
		}
		if r.acked == 0 {
			t.Errorf("%s: nothing was acknowledged: the load did not run", name)
		}
		b := resBad[name]
		if b.missing > 0 {
			t.Errorf("%s: %d acknowledged malformed lines missing from dead_letters", name, b.missing)
		}
		if b.dup > 0 {
			// Every malformed line is sent once (a retry carries a fresh
			// token), so a second row is the agent's doing.
			t.Errorf("%s: %d malformed lines dead-lettered more than once (see the list above); for MQTT this is a message "+
				"the agent stored but whose PUBACK the broker never got (connection lost or agent killed right after the "+
				"store), delivered again: points survive redelivery by their identity (key, time), dead letters have none",
				name, b.dup)
		}
	}
	for _, name := range []string{"tcp", "udp"} {
		if r, b := res[name], resBad[name]; r.dup > 0 || b.dup > 0 {
			t.Errorf("%s: %d points and %d dead letters stored more than once", name, r.dup, b.dup)
		}
	}
	if r, b := res["tcp"], resBad["tcp"]; r.missing > 0 || b.missing > 0 {
		t.Errorf("tcp: %d lines and %d malformed lines of connections that the client closed, with no kill within %s, are missing",
			r.missing, b.missing, grace)
	}
	for name, r := range res {
		if r.unexpected > 0 || resBad[name].unexpected > 0 {
			t.Errorf("%s: %d points and %d dead letters stored that were never sent", name, r.unexpected, resBad[name].unexpected)
		}
	}
	if nUnexpected > 0 || nMismatched > 0 || nUnknownDL > 0 {
		t.Errorf("%d rows match nothing sent, %d rows have the wrong id for their time, %d dead letters match nothing sent:\n%s",
			nUnexpected, nMismatched, nUnknownDL, strings.Join(append(append(unexpected, mismatched...), unknownDL...), "\n"))
	}
	if s.peakHWM/1024 > int64(s.plan.rssMB) {
		t.Errorf("peak RSS %d MB is over the bound of %d MB", s.peakHWM/1024, s.plan.rssMB)
	}
	if s.mnt != "" && s.diskFulls > 0 && s.diskFullBit == 0 {
		t.Errorf("%d disk-full episodes and the agent was never pushed back: the WAL is not on the filled tmpfs?", s.diskFulls)
	}
	if l := s.a.Log(); strings.Contains(l, "panic:") || strings.Contains(l, "fatal error:") || strings.Contains(l, "DATA RACE") {
		t.Errorf("the agent panicked:\n%s", grepLines(l, "panic", 20))
	}
	if len(ld.anomalies) > 0 {
		t.Errorf("%d unexpected answers to the load:\n%s", len(ld.anomalies), strings.Join(ld.anomalies, "\n"))
	}
}

func cut(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

var logMsgRE = regexp.MustCompile(`level=(WARN|ERROR) msg=("(?:[^"\\]|\\.)*"|\S+)`)

// logSummary counts the agent's WARN and ERROR messages (text log format),
// most frequent first, at most n of them.
func logSummary(log string, n int) []string {
	counts := map[string]int{}
	for _, m := range logMsgRE.FindAllStringSubmatch(log, -1) {
		counts[m[1]+" "+m[2]]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if counts[keys[i]] != counts[keys[j]] {
			return counts[keys[i]] > counts[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var out []string
	for i, k := range keys {
		if i == n {
			out = append(out, fmt.Sprintf("... and %d more kinds", len(keys)-n))
			break
		}
		out = append(out, fmt.Sprintf("%6d %s", counts[k], k))
	}
	if len(out) == 0 {
		out = append(out, "none")
	}
	return out
}

func grepLines(s, sub string, n int) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) && len(out) < n {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
