package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/fpagent/fpagent/internal/config"
	"github.com/fpagent/fpagent/storage"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// An agent with an influx output forwards what it stores; the output shows
// in /stats and /metrics (which still passes promlint), and /ready turns
// 503, naming the output, while its target fails.
func TestOutputWiring(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	failing := true
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			http.Error(w, "down for maintenance", http.StatusInternalServerError)
			return
		}
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, r.URL.String()+" "+string(b))
		w.WriteHeader(http.StatusNoContent)
	}))
	defer target.Close()

	cfg := testConfig(t, t.TempDir())
	parsed, err := config.Parse([]byte(fmt.Sprintf("outputs:\n  influx:\n    - {name: central, url: %q, database: fleet, gzip: false, retry_min: 20ms, retry_max: 50ms}\n", target.URL)), "test")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Outputs = parsed.Outputs
	a := newAgent("", cfg, &bytes.Buffer{})
	if code, err := a.start(); err != nil {
		t.Fatalf("start: %d %v", code, err)
	}
	stopped := false
	defer func() {
		if !stopped {
			a.shutdown()
		}
	}()
	var httpAddr string
	for _, in := range a.inputs {
		if in.name == "http" {
			httpAddr = in.addr()
		}
	}
	resp, err := http.Post("http://"+httpAddr+"/write", "text/plain", strings.NewReader("room,site=a temp=21.5 1700000000000000000\n"))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write: %v %v", resp, err)
	}
	resp.Body.Close()

	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, "http://"+a.adminAddr+"/ready")
		if code == http.StatusServiceUnavailable && strings.Contains(body, `output \"central\" failing`) && strings.Contains(body, "500") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready while the target fails: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	waitReady(t, a)
	mu.Lock()
	got := strings.Join(bodies, "\n")
	mu.Unlock()
	if !strings.Contains(got, "/write?db=fleet room,site=a temp=21.5 1700000000000000000") {
		t.Fatalf("the target received %q", got)
	}

	// The forwarder marks itself healthy when the send returns and saves
	// its cursor after that, so the figures settle a moment later.
	type outputStats struct {
		Type       string `json:"type"`
		SentPoints uint64 `json:"sent_points"`
		Retries    uint64 `json:"retries"`
		Healthy    bool   `json:"healthy"`
		LagRecords uint64 `json:"lag_records"`
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, "http://"+a.adminAddr+"/stats")
		var st struct {
			Outputs map[string]outputStats `json:"outputs"`
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
		o := st.Outputs["central"]
		if o.Type == "influx" && o.SentPoints == 1 && o.Retries > 0 && o.Healthy && o.LagRecords == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/stats outputs after 10 s: %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, metrics := get(t, "http://"+a.adminAddr+"/metrics")
	for _, want := range []string{
		`fpagent_output_sent_points_total{output="central",type="influx"} 1`,
		`fpagent_output_up{output="central",type="influx"} 1`,
		`fpagent_output_lag_records{output="central",type="influx"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	problems, err := promlint.New(strings.NewReader(metrics)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	stopped = true
	if !a.shutdown() {
		t.Fatal("unclean shutdown")
	}
}

func TestExportDue(t *testing.T) {
	dir := t.TempDir()
	done := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	if err := os.MkdirAll(filepath.Dir(storage.ExportFile(dir, done)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(storage.ExportFile(dir, done), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		now  string
		day  string
		want bool
	}{
		{"2026-11-26T00:04:59Z", "2026-11-25", false}, // within the grace
		{"2026-11-26T00:05:00Z", "2026-11-25", true},
		{"2026-11-26T17:00:00Z", "2026-11-25", true},      // started late in the day
		{"2026-11-25T12:00:00Z", "2026-11-24", false},     // already exported
		{"2026-11-27T01:30:00+02:00", "2026-11-25", true}, // 23:30 UTC on the 26th
	} {
		now, _ := time.Parse(time.RFC3339, c.now)
		day, due := exportDue(dir, now)
		if day.Format(time.DateOnly) != c.day || due != c.want {
			t.Errorf("exportDue at %s = %s, %v; want %s, %v", c.now, day.Format(time.DateOnly), due, c.day, c.want)
		}
	}
}
