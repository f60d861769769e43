package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// baseTime is the timestamp of message 0; message i carries baseTime+i, so
// that every message is one point with an identity of its own.
const baseTime = 1700000000000000000

// mqttSection is the inputs.mqtt config for an agent subscribed at broker.
func mqttSection(broker, clientID, extra string, subs ...string) string {
	s := fmt.Sprintf("mqtt:\n  enabled: true\n  brokers: [%q]\n  client_id: %s\n", broker, clientID)
	if extra != "" {
		s += indent(extra, "  ") + "\n"
	}
	s += "  subscriptions:\n"
	for _, sub := range subs {
		s += "    - " + sub + "\n"
	}
	return s
}

// publisher is a paho client that publishes QoS 1 messages to mosquitto.
type publisher struct {
	t testing.TB
	c paho.Client
}

func newPublisher(t testing.TB, broker, id string) *publisher {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher %s: connect to %s: %v", id, broker, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return &publisher{t: t, c: c}
}

// send publishes payloads to topic at QoS 1 and returns which were PUBACKed
// (the broker has them) within timeout.
func (p *publisher) send(topic string, payloads [][]byte, timeout time.Duration) []bool {
	toks := make([]paho.Token, len(payloads))
	for i, pl := range payloads {
		toks[i] = p.c.Publish(topic, 1, false, pl)
	}
	ok := make([]bool, len(payloads))
	deadline := time.Now().Add(timeout)
	for i, tok := range toks {
		ok[i] = tok.WaitTimeout(time.Until(deadline)) && tok.Error() == nil
	}
	return ok
}

func lpMessage(measurement string, i int) []byte {
	return []byte(fmt.Sprintf("%s,pub=e2e v=%di %d", measurement, i, baseTime+i))
}

// sqlCount asks the running agent's SQL API for a count.
func (a *agent) sqlCount(q string) (int64, error) {
	var res struct {
		Rows [][]any `json:"rows"`
	}
	resp, err := http.Get(a.Admin + "/api/v1/query?q=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s: %s", q, resp.Status, body)
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return 0, err
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		return 0, fmt.Errorf("%s: unexpected rows %v", q, res.Rows)
	}
	switch v := res.Rows[0][0].(type) {
	case float64:
		return int64(v), nil
	case string:
		var n int64
		_, err := fmt.Sscan(v, &n)
		return n, err
	}
	return 0, fmt.Errorf("%s: unexpected value %v", q, res.Rows[0][0])
}

// waitCount waits until the agent's DuckDB holds want rows for q.
func (a *agent) waitCount(q string, want int64, timeout time.Duration) int64 {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	var n int64
	for {
		var err error
		n, err = a.sqlCount(q)
		if err == nil && n >= want {
			return n
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s: %d after %s, want %d (last error %v)", q, n, timeout, want, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type mqttStats struct {
	Inputs map[string]struct {
		ReceivedPoints      uint64 `json:"received_points"`
		PersistedPoints     uint64 `json:"persisted_points"`
		RejectedPoints      uint64 `json:"rejected_points"`
		DroppedPoints       uint64 `json:"dropped_points"`
		Payloads            uint64 `json:"payloads"`
		Connections         int64  `json:"connections"`
		ConnectionsAccepted uint64 `json:"connections_accepted"`
		Oversize            uint64 `json:"oversize"`
	} `json:"inputs"`
}

// TestMQTTKilledAgentLosesNothing publishes 100,000 QoS 1 messages, each
// carrying its own timestamp, while the agent is SIGKILLed and restarted
// with the same client id at least five times. Mosquitto keeps the
// unacknowledged messages for the persistent session; afterwards DuckDB holds
// every message's point exactly once.
func TestMQTTKilledAgentLosesNothing(t *testing.T) {
	const total = 100_000
	n := total
	if testing.Short() {
		n = 10_000
	}
	dir := t.TempDir()
	mq := startMosquitto(t, brokerDir(t), 0)
	p := newPorts(t)
	cfg := baseConfig(dir, p, "", mqttSection(mq.Addr, "e2e-kill", "", `{topic: "kill/#", qos: 1, format: influx}`))
	a := startAgent(t, dir, p, cfg)

	pub := newPublisher(t, mq.Addr, "e2e-kill-pub")
	var published atomic.Int64
	pubDone := make(chan error, 1)
	go func() {
		// About 4,000 messages/s, so that the kills land mid-stream.
		const chunk = 1000
		for first := 0; first < n; first += chunk {
			start := time.Now()
			payloads := make([][]byte, 0, chunk)
			for i := first; i < first+chunk && i < n; i++ {
				payloads = append(payloads, lpMessage("kill", i))
			}
			for i, ok := range pub.send("kill/a", payloads, 30*time.Second) {
				if !ok {
					pubDone <- fmt.Errorf("message %d not acknowledged by mosquitto", first+i)
					return
				}
			}
			published.Add(int64(len(payloads)))
			time.Sleep(250*time.Millisecond - time.Since(start))
		}
		pubDone <- nil
	}()

	kills := 0
	for {
		time.Sleep(time.Duration(1500+kills*137%700) * time.Millisecond)
		if published.Load() >= int64(n) && kills >= 5 {
			break
		}
		a.kill()
		kills++
		a.start()
	}
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages published, agent SIGKILLed %d times", n, kills)
	a.waitCount(`SELECT count(*) FROM readings WHERE measurement = 'kill'`, int64(n), 90*time.Second)
	a.stop()

	db := openDB(t, a.dbPath())
	rows := queryInt(t, db, `SELECT count(*) FROM readings WHERE measurement = 'kill'`)
	distinct := queryInt(t, db, `SELECT count(DISTINCT epoch_ns(ts)) FROM readings WHERE measurement = 'kill'`)
	inRange := queryInt(t, db, `SELECT count(*) FROM readings WHERE measurement = 'kill' AND epoch_ns(ts) BETWEEN ? AND ?`, int64(baseTime), int64(baseTime+n-1))
	values := queryInt(t, db, `SELECT count(*) FROM readings WHERE measurement = 'kill' AND (fields->>'v')::BIGINT = epoch_ns(ts) - ?`, int64(baseTime))
	if rows != int64(n) || distinct != int64(n) || inRange != int64(n) || values != int64(n) {
		t.Fatalf("after %d kills: %d rows, %d distinct times, %d in range, %d with their own value; want %d each",
			kills, rows, distinct, inRange, values, n)
	}
	if dl := queryInt(t, db, `SELECT count(*) FROM dead_letters`); dl != 0 {
		t.Fatalf("%d dead letters", dl)
	}
	if strings.Contains(mq.log.String(), "dropped") {
		t.Fatalf("mosquitto dropped messages:\n%s", mq.log.String())
	}
}

// brokerDir is a directory for mosquitto's config and persistence file that
// the mosquitto user can write: started as root, mosquitto drops to that
// user, and cannot save into a test's 0700 temporary directory (it logs
// "Error saving in-memory database ... Permission denied" and restarts
// empty).
func brokerDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fpagent-mosquitto-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestMQTTBrokerOutage stops mosquitto for 10 seconds mid-stream. What it
// proves: the agent notices, reconnects by itself, resubscribes and
// continues; the messages mosquitto had accepted before it stopped (kept in
// its persistence file) and the messages published after it came back while
// the agent was still reconnecting (queued for the agent's persistent
// session) all arrive. Nothing can be published to a stopped broker: a
// publisher re-sends what mosquitto did not acknowledge, as QoS 1 publishers
// do, and the timestamps make the re-sent ones the same points.
func TestMQTTBrokerOutage(t *testing.T) {
	dir := t.TempDir()
	mq := startMosquitto(t, brokerDir(t), 0)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", mq.log)
		}
	})
	p := newPorts(t)
	cfg := baseConfig(dir, p, "", mqttSection(mq.Addr, "e2e-outage", "", `{topic: "out/#", qos: 1, format: influx}`))
	a := startAgent(t, dir, p, cfg)

	// Phase 1: a stream, with the broker stopped in the middle of it.
	const before, during = 5000, 2000
	pub := newPublisher(t, mq.Addr, "e2e-outage-pub1")
	var mu sync.Mutex
	var unacked []int
	streamDone := make(chan struct{})
	var brokerDown atomic.Bool
	go func() {
		defer close(streamDone)
		for first := 0; first < before; first += 250 {
			if brokerDown.Load() {
				// The rest is re-sent once the broker is back.
				mu.Lock()
				for i := first; i < before; i++ {
					unacked = append(unacked, i)
				}
				mu.Unlock()
				return
			}
			payloads := make([][]byte, 0, 250)
			for i := first; i < first+250; i++ {
				payloads = append(payloads, lpMessage("outage", i))
			}
			oks := pub.send("out/a", payloads, 2*time.Second)
			mu.Lock()
			for i, ok := range oks {
				if !ok {
					unacked = append(unacked, first+i)
				}
			}
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(700 * time.Millisecond)
	brokerDown.Store(true)
	mq.stop()
	t.Log("mosquitto stopped")
	if strings.Contains(mq.log.String(), "Error saving") {
		t.Fatalf("mosquitto could not save its persistence file:\n%s", mq.log)
	}
	downSince := time.Now()
	time.Sleep(2 * time.Second)
	var st mqttStats
	a.getJSON("/stats", &st)
	if c := st.Inputs["mqtt"].Connections; c != 0 {
		t.Errorf("/stats shows mqtt connections %d while the broker is down", c)
	}
	<-streamDone // what it sent while the broker was down was not acknowledged
	time.Sleep(10*time.Second - time.Since(downSince))
	mq.start()
	t.Logf("mosquitto started again after %s", time.Since(downSince).Round(100*time.Millisecond))

	// Phase 2: publish at once, while the agent is still in its reconnect
	// back-off: these go to the agent's session queue.
	pub2 := newPublisher(t, mq.Addr, "e2e-outage-pub2")
	a.getJSON("/stats", &st)
	agentWasConnected := st.Inputs["mqtt"].Connections
	payloads := make([][]byte, 0, during)
	for i := before; i < before+during; i++ {
		payloads = append(payloads, lpMessage("outage", i))
	}
	mu.Lock()
	resend := append([]int(nil), unacked...)
	mu.Unlock()
	for _, i := range resend {
		payloads = append(payloads, lpMessage("outage", i))
	}
	for i, ok := range pub2.send("out/a", payloads, 30*time.Second) {
		if !ok {
			t.Fatalf("message %d of phase 2 not acknowledged by mosquitto", i)
		}
	}
	t.Logf("phase 2: %d new messages and %d re-sent, published while the agent's mqtt connections = %d",
		during, len(resend), agentWasConnected)
	a.waitCount(`SELECT count(*) FROM readings WHERE measurement = 'outage'`, before+during, 60*time.Second)
	a.getJSON("/stats", &st)
	if s := st.Inputs["mqtt"]; s.Connections != 1 || s.ConnectionsAccepted < 2 {
		t.Errorf("after the outage: mqtt connections %d, connects %d; want 1 and at least 2", s.Connections, s.ConnectionsAccepted)
	}
	a.stop()
	db := openDB(t, a.dbPath())
	rows := queryInt(t, db, `SELECT count(*) FROM readings WHERE measurement = 'outage'`)
	distinct := queryInt(t, db, `SELECT count(DISTINCT epoch_ns(ts)) FROM readings WHERE measurement = 'outage'`)
	if rows != before+during || distinct != before+during {
		t.Fatalf("%d rows, %d distinct; want %d", rows, distinct, before+during)
	}
	if !strings.Contains(a.Log(), "connected and subscribed") || strings.Count(a.Log(), "connected and subscribed") < 2 {
		t.Errorf("the agent did not log a second subscribe:\n%s", a.Log())
	}
}

// TestMQTTBadMessages interleaves 1,000 bad messages (invalid JSON, invalid
// line protocol, binary, over max_payload_size, wrong types) with 10,000
// good ones: every good one is stored, every bad one dead-lettered with its
// topic, the subscription never stalls, and the counters add up.
func TestMQTTBadMessages(t *testing.T) {
	dir := t.TempDir()
	mq := startMosquitto(t, brokerDir(t), 0)
	p := newPorts(t)
	cfg := baseConfig(dir, p, "", mqttSection(mq.Addr, "e2e-bad", "max_payload_size: 1KiB",
		`{topic: "bad/lp", qos: 1, format: influx}`,
		`{topic: "bad/js/+", qos: 1, format: json, topic_pattern: "bad/js/{site}", measurement: badjs, time_key: t, time_format: unix_ns}`))
	a := startAgent(t, dir, p, cfg)
	pub := newPublisher(t, mq.Addr, "e2e-bad-pub")

	const good, bad = 10_000, 1_000
	type msg struct {
		topic   string
		payload []byte
	}
	var msgs []msg
	// Every bad message is distinct: identical input from one topic is one
	// dead letter (a redelivery), see storage's dead-letter identity.
	badKinds := []func(i int) msg{
		func(i int) msg { return msg{"bad/js/s1", []byte(fmt.Sprintf(`{"v": %d, "t": `, i))} },          // invalid JSON
		func(i int) msg { return msg{"bad/lp", []byte(fmt.Sprintf("badlp,n=%d v=\n", i))} },             // invalid line protocol
		func(i int) msg { return msg{"bad/lp", []byte{0x00, 0xff, 0xfe, 0x80, byte(i), byte(i >> 8)}} }, // binary
		func(i int) msg {
			return msg{"bad/lp", append([]byte(fmt.Sprintf("badlp,n=%d v=1 ", i)), bytes.Repeat([]byte("9"), 2048)...)}
		}, // over 1KiB
		func(i int) msg { return msg{"bad/js/s1", []byte(fmt.Sprintf(`{"v": %d, "t": "not a number"}`, i))} }, // wrong type
	}
	for i := 0; i < good; i++ {
		if i%2 == 0 {
			msgs = append(msgs, msg{"bad/lp", lpMessage("badlp", i)})
		} else {
			msgs = append(msgs, msg{"bad/js/s" + fmt.Sprint(i%3), []byte(fmt.Sprintf(`{"v": %d, "t": %d}`, i, baseTime+i))})
		}
		if i%10 == 9 {
			msgs = append(msgs, badKinds[(i/10)%len(badKinds)](i))
		}
	}
	for start := 0; start < len(msgs); start += 1000 {
		end := min(start+1000, len(msgs))
		toks := make([]paho.Token, 0, end-start)
		for _, m := range msgs[start:end] {
			toks = append(toks, pub.c.Publish(m.topic, 1, false, m.payload))
		}
		for _, tok := range toks {
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
	}
	// Counters add up once everything was received.
	deadline := time.Now().Add(60 * time.Second)
	var st mqttStats
	for {
		a.getJSON("/stats", &st)
		s := st.Inputs["mqtt"]
		if s.Payloads == good+bad && s.ReceivedPoints == s.PersistedPoints+s.RejectedPoints+s.DroppedPoints {
			if s.PersistedPoints != good || s.RejectedPoints != bad || s.DroppedPoints != 0 || s.Oversize != bad/5 {
				t.Fatalf("/stats inputs.mqtt: %+v; want %d persisted, %d rejected, 0 dropped, %d oversize", s, good, bad, bad/5)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscription stalled? /stats inputs.mqtt: %+v after 60s", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.stop()
	db := openDB(t, a.dbPath())
	lp := queryInt(t, db, `SELECT count(DISTINCT epoch_ns(ts)) FROM readings WHERE measurement = 'badlp'`)
	js := queryInt(t, db, `SELECT count(DISTINCT epoch_ns(ts)) FROM readings WHERE measurement = 'badjs' AND (tags->>'site') LIKE 's%'`)
	if lp+js != good || lp != good/2 {
		t.Fatalf("stored %d line-protocol and %d json readings; want %d and %d", lp, js, good/2, good/2)
	}
	dl := queryInt(t, db, `SELECT count(*) FROM dead_letters WHERE source = 'mqtt' AND origin LIKE 'bad/%' AND reason <> ''`)
	if dl != bad {
		rows, _ := db.Query(`SELECT origin, reason FROM dead_letters LIMIT 10`)
		var sample []string
		for rows != nil && rows.Next() {
			var o, r string
			rows.Scan(&o, &r)
			sample = append(sample, o+": "+r)
		}
		t.Fatalf("%d dead letters, want %d; sample:\n%s", dl, bad, strings.Join(sample, "\n"))
	}
	for _, reason := range []string{"invalid JSON", "not UTF-8", "over max_payload_size", "not a number"} {
		if n := queryInt(t, db, `SELECT count(*) FROM dead_letters WHERE contains(reason, ?)`, reason); n != bad/5 {
			t.Errorf("%d dead letters with reason %q, want %d", n, reason, bad/5)
		}
	}
}
