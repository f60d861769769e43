package e2e

import (
	"github.com/fpagent/fpagent/wal"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDefaultsNoConfig starts the agent in an empty directory with no config
// at all, on its defaults, as the README's first command does.
func TestDefaultsNoConfig(t *testing.T) {
	if ports := []string{"127.0.0.1:8187", "127.0.0.1:8186", "127.0.0.1:8094"}; anyBusy(ports) {
		t.Skipf("a default port is busy on this machine (%v)", ports)
	}
	dir := t.TempDir()
	a := &agent{t: t, Dir: dir, Admin: "http://127.0.0.1:8187", HTTP: "http://127.0.0.1:8186", TCP: "127.0.0.1:8094", UDP: "127.0.0.1:8089"}
	a.cmd = nil
	startNoConfig(a)
	for _, path := range []string{"/health", "/ready", "/stats", "/metrics"} {
		resp, err := http.Get(a.Admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
	}
	resp, err := http.Post(a.HTTP+"/api/v2/write?bucket=b", "text/plain", strings.NewReader("room,site=a temp=21.5 1700000000000000000\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write: %s", resp.Status)
	}
	out, err := exec.Command(agentBin, "query", "-addr", a.Admin, "-flush", "-format", "csv", "SELECT count(*) AS n FROM readings").CombinedOutput()
	if err != nil {
		t.Fatalf("fpagent query: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "n\n1" {
		t.Fatalf("fpagent query -flush printed %q, want the CSV n\\n1", got)
	}
	a.stop()
	if _, err := os.Stat(filepath.Join(dir, "fpagent-data", "fpagent.duckdb")); err != nil {
		t.Fatalf("no DuckDB file under ./fpagent-data: %v", err)
	}
	db := openDB(t, filepath.Join(dir, "fpagent-data", "fpagent.duckdb"))
	if n := queryInt(t, db, `SELECT count(*) FROM readings WHERE measurement = 'room' AND (tags->>'db') = 'b'`); n != 1 {
		t.Fatalf("readings after stop: %d", n)
	}
	l, err := wal.Open(filepath.Join(dir, "fpagent-data", "wal"), wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if recs, bytes := l.Behind(0); recs != 0 {
		t.Fatalf("the WAL holds %d records (%d bytes) after a clean stop: %+v", recs, bytes, l.Stats())
	}
}

func anyBusy(addrs []string) bool {
	for _, addr := range addrs {
		c, err := (&net.Dialer{Timeout: 200 * time.Millisecond}).Dial("tcp", addr)
		if err == nil {
			c.Close()
			return true
		}
	}
	return false
}

func startNoConfig(a *agent) {
	a.t.Helper()
	a.Config = ""
	a.cmd = exec.Command(agentBin)
	a.startCmd()
}
