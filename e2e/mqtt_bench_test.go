package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fpagent/fpagent/internal/testport"
)

// The MQTT benchmarks publish through mosquitto on its default settings
// into the real agent and its DuckDB, and report messages and points per
// second the agent takes, from its start, to persist (acknowledge) a backlog
// the broker holds for its persistent session, and to have it in DuckDB
// (agent start-up included, so the figures are a lower bound). Run them one at a time:
//
//	go test ./e2e -run '^$' -bench 'MQTT' -benchtime 1x -count 3
//
// One default is changed: max_queued_messages 0 (no bound) instead of 1000.
// The publishers flood the broker faster than any subscriber drains it, and
// with the default mosquitto drops what is queued past 1000 messages
// ("Outgoing messages are being dropped"), whatever the subscriber does.
// Everything else (max_inflight_messages 20, no persistence) is mosquitto's
// default. The benchmarks fail if any message is lost.
//
// For diagnosis, MQTT_BENCH_EXTRA adds lines to mosquitto's config (e.g.
// "max_inflight_messages 1000") and MQTT_BENCH_STORAGE to the agent's
// storage section (e.g. "sync: none").
func BenchmarkMQTTOnePointPerMessage(b *testing.B) {
	benchMQTT(b, 200_000, 1)
}

func BenchmarkMQTTHundredPointsPerMessage(b *testing.B) {
	benchMQTT(b, 20_000, 100)
}

func benchMQTT(b *testing.B, messages, pointsPer int) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := b.TempDir()
		broker := startDefaultMosquitto(b, brokerDirTB(b))
		p := newPorts(b)
		cfg := baseConfig(dir, p, os.Getenv("MQTT_BENCH_STORAGE"), mqttSection(broker, fmt.Sprintf("bench-%d", time.Now().UnixNano()), "",
			`{topic: "bench/#", qos: 1, format: influx}`))
		payloads := benchPayloads(messages, pointsPer)
		want := uint64(messages * pointsPer)

		// Drain: the broker holds the whole backlog for the agent's
		// session before it starts, so that the figure is the agent's
		// (subscribe, parse, WAL fsync, ack), not the publishers'.
		a := startAgent(b, dir, p, cfg) // creates the session and its subscription
		a.stop()
		pubStart := time.Now()
		publishFlood(b, broker, payloads)
		pubTook := time.Since(pubStart)
		b.StartTimer()
		start := time.Now()
		a.start()
		acked, first, firstN := waitPersisted(b, a, want, 120*time.Second)
		ackedAt := time.Since(start)
		steady := time.Since(first)
		b.StopTimer()
		var ws struct {
			Batches uint64 `json:"stored_batches_total"`
			WAL     struct {
				Fsyncs       uint64  `json:"fsyncs_total"`
				FsyncSeconds float64 `json:"fsync_seconds_total"`
			} `json:"wal"`
		}
		a.getJSON("/stats", &ws)
		b.Logf("store: %d batches, %d WAL fsyncs taking %.2fs in all", ws.Batches, ws.WAL.Fsyncs, ws.WAL.FsyncSeconds)
		a.waitCount(`SELECT count(*) FROM points`, int64(want), 120*time.Second)
		inDB := time.Since(start)
		if acked != want {
			b.Fatalf("published %d messages (%d points), the agent persisted %d points", messages, want, acked)
		}
		b.Logf("published %d messages in %s (%.0f msgs/s, the publishers' and mosquitto's pace); agent start to all persisted %s, to all in DuckDB %s",
			messages, pubTook.Round(time.Millisecond), float64(messages)/pubTook.Seconds(), ackedAt.Round(time.Millisecond), inDB.Round(time.Millisecond))
		// From the first persisted batch on, start-up excluded.
		b.ReportMetric(float64(want-firstN)/float64(pointsPer)/steady.Seconds(), "steady_msgs/s")
		b.ReportMetric(float64(want-firstN)/steady.Seconds(), "steady_points/s")
		b.ReportMetric(float64(messages)/ackedAt.Seconds(), "msgs/s")
		b.ReportMetric(float64(want)/ackedAt.Seconds(), "points/s")
		b.ReportMetric(float64(want)/inDB.Seconds(), "points_in_duckdb/s")
		a.stop()
	}
}

// benchPayloads makes messages of pointsPer line-protocol lines, every
// point with a time of its own.
func benchPayloads(messages, pointsPer int) [][]byte {
	out := make([][]byte, messages)
	var buf bytes.Buffer
	for m := 0; m < messages; m++ {
		buf.Reset()
		for j := 0; j < pointsPer; j++ {
			n := m*pointsPer + j
			fmt.Fprintf(&buf, "bench,host=h%d,sensor=s%d temp=%d.5,hum=%di %d\n", n%10, j, n%40, n%100, baseTime+n)
		}
		out[m] = bytes.Clone(buf.Bytes())
	}
	return out
}

// publishFlood publishes payloads at QoS 1 from four clients as fast as
// mosquitto acknowledges them, and returns how many it published.
func publishFlood(b testing.TB, broker string, payloads [][]byte) int {
	const clients = 4
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("bench-pub-%d-%d", c, time.Now().UnixNano())).
				SetCleanSession(true).SetAutoReconnect(false)
			cl := paho.NewClient(o)
			if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				errs <- fmt.Errorf("connect: %v", tok.Error())
				return
			}
			defer cl.Disconnect(100)
			toks := make([]paho.Token, 0, 1000)
			for i := c; i < len(payloads); i += clients {
				toks = append(toks, cl.Publish("bench/a", 1, false, payloads[i]))
				if len(toks) == cap(toks) {
					for _, t := range toks {
						if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
							errs <- fmt.Errorf("publish: %v", t.Error())
							return
						}
					}
					toks = toks[:0]
				}
			}
			for _, t := range toks {
				if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
					errs <- fmt.Errorf("publish: %v", t.Error())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return len(payloads)
}

// waitPersisted waits until the agent's MQTT input has persisted want
// points, or until the count stops growing for 3 seconds. It returns the
// count, and when and at what count it first saw points persisted.
func waitPersisted(b testing.TB, a *agent, want uint64, timeout time.Duration) (n uint64, first time.Time, firstN uint64) {
	deadline := time.Now().Add(timeout)
	var last uint64
	lastChange := time.Now()
	for {
		var st mqttStats
		a.getJSON("/stats", &st)
		n = st.Inputs["mqtt"].PersistedPoints
		if n > 0 && first.IsZero() {
			first, firstN = time.Now(), n
		}
		if n >= want || time.Now().After(deadline) || time.Since(lastChange) > 3*time.Second {
			return n, first, firstN
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startDefaultMosquitto runs mosquitto with a listener, anonymous access and
// no bound on queued messages: its defaults for everything else.
func startDefaultMosquitto(b testing.TB, dir string) string {
	b.Helper()
	bin := mosquittoPath(b)
	port := testport.Free(b)
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n%s", port, os.Getenv("MQTT_BENCH_EXTRA"))), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if strings.Contains(log.String(), "dropped") {
			b.Logf("mosquitto dropped messages:\n%s", log.String())
		}
	})
	addr := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		o := paho.NewClientOptions().AddBroker(addr).SetClientID("probe").SetConnectTimeout(time.Second)
		c := paho.NewClient(o)
		if tok := c.Connect(); tok.WaitTimeout(time.Second) && tok.Error() == nil {
			c.Disconnect(0)
			return addr
		}
		if time.Now().After(deadline) {
			b.Fatalf("mosquitto did not start:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func brokerDirTB(b testing.TB) string {
	dir, err := os.MkdirTemp("", "fpagent-mosquitto-")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
