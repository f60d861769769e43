package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/fpagent/fpagent/internal/config"
	"github.com/fpagent/fpagent/internal/testport"
)

// With good and bad input mixed, every input's counters add up, /stats and
// /metrics agree, and the whole /metrics page (storage, inputs, admin, Go,
// process) passes promlint.
func TestMetricsAndAccounting(t *testing.T) {
	a := newAgent("", testConfig(t, t.TempDir()), &bytes.Buffer{})
	if code, err := a.start(); err != nil {
		t.Fatalf("start: %d %v", code, err)
	}
	defer a.shutdown()
	waitReady(t, a)
	addr := map[string]string{}
	for _, in := range a.inputs {
		addr[in.name] = in.addr()
	}
	conn, err := net.Dial("tcp", addr["tcp"])
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "cpu,host=a usage=1 1700000000000000000\nthis is not line protocol\ncpu,host=b usage=2 1700000000000000000\nmem free=3i\n=bad\n")
	conn.Close()
	uconn, err := net.Dial("udp", addr["udp"])
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(uconn, "disk,dev=sda used=1\nbroken line\n")
	uconn.Close()

	resp, err := http.Post("http://"+addr["http"]+"/write?db=test", "text/plain",
		strings.NewReader("net,if=eth0 rx=1i 1700000000000000000\nnot valid\nnet,if=eth1 rx=2i 1700000000000000000\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 == 5 {
		t.Fatalf("http write: %s", resp.Status)
	}

	type counts struct {
		Received  uint64 `json:"received_points"`
		Persisted uint64 `json:"persisted_points"`
		Rejected  uint64 `json:"rejected_points"`
		Dropped   uint64 `json:"dropped_points"`
	}
	var stats struct {
		Inputs map[string]counts `json:"inputs"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + a.adminAddr + "/stats")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&stats)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		tcp, udp, web := stats.Inputs["tcp"], stats.Inputs["udp"], stats.Inputs["http"]
		if tcp.Received == 5 && udp.Received == 2 && web.Received == 3 && tcp.Persisted+tcp.Rejected+tcp.Dropped == 5 &&
			udp.Persisted+udp.Rejected+udp.Dropped == 2 && web.Persisted+web.Rejected+web.Dropped == 3 {
			if tcp.Persisted != 3 || tcp.Rejected != 2 || udp.Persisted != 1 || udp.Rejected != 1 || web.Persisted != 2 || web.Rejected != 1 {
				t.Fatalf("counts: %+v", stats.Inputs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counters do not add up: %+v", stats.Inputs)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The latest record of a key, through the admin API, from the real store.
	resp, err = http.Get("http://" + a.adminAddr + "/api/v1/records/cpu,host=b")
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(rec), `"usage":2`) || !strings.Contains(string(rec), `"host":"b"`) {
		t.Fatalf("record: %d %s", resp.StatusCode, rec)
	}
	if resp, err := http.Get("http://" + a.adminAddr + "/api/v1/records/nope"); err != nil || resp.StatusCode != 404 {
		t.Fatalf("missing record: %v %v", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}

	resp, err = http.Get("http://" + a.adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`fpagent_input_received_points_total{input="tcp"} 5`,
		`fpagent_input_rejected_points_total{input="tcp"} 2`,
		"fpagent_ready 1", "fpagent_build_info", "go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !strings.Contains(string(body), "\nfpagent_") {
		t.Error("/metrics has no fpagent_ metrics")
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// With the broker down, the agent still starts (systemd's READY=1 does not
// wait for it) while /ready says why it is not ready; it stops cleanly.
func TestMQTTBrokerDown(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Inputs.MQTT.Enabled = true
	cfg.Inputs.MQTT.Brokers = []string{"tcp://" + testport.Addr(t)}
	cfg.Inputs.MQTT.ClientID = "fpagent-test-broker-down"
	cfg.Inputs.MQTT.ConnectTimeout = 200 * config.Duration(time.Millisecond)
	a := newAgent("", cfg, &bytes.Buffer{})
	if code, err := a.start(); err != nil {
		t.Fatalf("start: %d %v", code, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for ok, _ := a.started(); !ok; ok, _ = a.started() {
		if time.Now().After(deadline) {
			t.Fatal("not started within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get("http://" + a.adminAddr + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "mqtt") {
		t.Fatalf("/ready with the broker down: %d %s", resp.StatusCode, body)
	}
	if !a.shutdown() {
		t.Fatal("unclean shutdown")
	}
}
