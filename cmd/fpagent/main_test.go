package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fpagent/fpagent/internal/config"
	"github.com/fpagent/fpagent/wal"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = dispatch(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every broken config exits 2 with a message naming the key or the line.
func TestCheckBrokenConfigs(t *testing.T) {
	dir := t.TempDir()
	f := func(name, content string, want ...string) {
		t.Helper()
		path := writeFile(t, dir, name+".yaml", content)
		code, _, stderr := runCmd("check", "-config", path)
		if code != exitUsage {
			t.Errorf("%s: exit %d, want %d", name, code, exitUsage)
		}
		for _, w := range want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: %q does not mention %q", name, stderr, w)
			}
		}
	}
	f("unknown-key", "data_dir: x\nbogus: 1\n", "line 2", "bogus")
	f("nested-unknown-key", "inputs:\n  tcp:\n    listn: 127.0.0.1:1\n", "line 3", "inputs.tcp.listn", `did you mean "listen"`)
	f("wrong-type", "storage:\n  batch_size: many\n", "line 2", "storage.batch_size")
	f("negative-size", "storage:\n  max_wal_size: -1MiB\n", "line 2", "storage.max_wal_size", "negative")
	f("bad-duration", "storage:\n  flush_interval: 5 minutes\n", "line 2", "storage.flush_interval")
	f("unknown-sync", "storage:\n  sync: often\n", "line 2", "storage.sync")
	f("port-70000", "admin:\n  listen: 127.0.0.1:70000\n", "line 2", "admin.listen", "70000")
	f("empty", "", "empty")
	f("tabs", "log:\n\tlevel: debug\n", "line 2", "tab")
	code, _, stderr := runCmd("check", "-config", dir) // a directory cannot be read as a file
	if code != exitUsage || !strings.Contains(stderr, dir) {
		t.Errorf("unreadable file: exit %d, %q", code, stderr)
	}
	code, _, stderr = runCmd("check", "-config", filepath.Join(dir, "missing.yaml"))
	if code != exitUsage || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing file: exit %d, %q", code, stderr)
	}
	// The agent itself refuses the same way, before touching anything.
	code, _, stderr = runCmd("-config", filepath.Join(dir, "port-70000.yaml"))
	if code != exitUsage || !strings.Contains(stderr, "admin.listen") {
		t.Errorf("run with a bad config: exit %d, %q", code, stderr)
	}
}

func TestCheckExampleAndDefaults(t *testing.T) {
	code, stdout, stderr := runCmd("check", "-config", "../../agent.yaml.example")
	if code != exitOK || !strings.Contains(stdout, "valid") || !strings.Contains(stdout, "max_wal_size: 10MiB") {
		t.Fatalf("check agent.yaml.example: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = runCmd("check")
	if code != exitOK || !strings.Contains(stdout, "data_dir: ./fpagent-data") {
		t.Fatalf("check without a file: exit %d\n%s", code, stdout)
	}
	// What check prints is itself a valid config.
	path := writeFile(t, t.TempDir(), "effective.yaml", stdout)
	if code, _, stderr := runCmd("check", path); code != exitOK {
		t.Fatalf("the effective config does not check: %s", stderr)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"check", "-h"}, {"query", "-h"}, {"wal", "verify", "-h"}, {"demo", "-h"}, {"version", "-h"},
	} {
		code, _, stderr := runCmd(args...)
		if code != exitOK || !strings.Contains(stderr, "Usage:") || len(stderr) < 80 {
			t.Errorf("%v: exit %d, %q", args, code, stderr)
		}
	}
	if code, stdout, _ := runCmd("help"); code != exitOK || !strings.Contains(stdout, "wal verify") {
		t.Errorf("help: exit %d %q", code, stdout)
	}
	if code, _, _ := runCmd("bogus"); code != exitUsage {
		t.Errorf("unknown command: exit %d", code)
	}
	if code, _, _ := runCmd("query", "-format", "xml", "SELECT 1"); code != exitUsage {
		t.Errorf("query -format xml: exit %d", code)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := runCmd("version")
	if code != exitOK || !strings.Contains(stdout, "fpagent ") || !strings.Contains(stdout, "duckdb:     v1.") || !strings.Contains(stdout, "go1.") {
		t.Fatalf("version: exit %d %q", code, stdout)
	}
}

func TestQueryClient(t *testing.T) {
	var gotAuth, gotBody string
	flushes := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		if r.URL.Path == "/api/v1/flush" {
			flushes++
			fmt.Fprint(w, `{"status": "flushed"}`)
			return
		}
		b := new(bytes.Buffer)
		_, _ = b.ReadFrom(r.Body)
		gotBody = b.String()
		switch {
		case strings.Contains(gotBody, "DROP"):
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error": "query refused: DROP statements are not allowed", "status": 400}`)
		case strings.Contains(gotBody, `"format":"csv"`):
			fmt.Fprint(w, "n\n3\n")
		default:
			fmt.Fprint(w, `{"columns":["key","n","fields"],"types":[],"rows":[["cpu,host=a",12345678901234567890,{"v":1}],["b",null,null]],"row_count":2,"truncated":true,"max_rows":2,"elapsed_seconds":0.001}`)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	code, stdout, stderr := runCmd("query", "-addr", addr, "-token", "tok", "SELECT * FROM readings")
	want := "key        | n                    | fields\n" +
		"-----------+----------------------+--------\n" +
		"cpu,host=a | 12345678901234567890 | {\"v\":1}\n" +
		"b          | NULL                 | NULL\n"
	if code != exitOK || !strings.HasPrefix(stdout, want) || !strings.Contains(stdout, "cut at admin.query_max_rows 2") {
		t.Fatalf("table: exit %d\n%s\nwant prefix\n%s%s", code, stdout, want, stderr)
	}
	if gotAuth != "Bearer tok" || !strings.Contains(gotBody, `"q":"SELECT * FROM readings"`) {
		t.Fatalf("request: auth %q body %q", gotAuth, gotBody)
	}
	if code, stdout, _ := runCmd("query", "-addr", addr, "-format", "csv", "-flush", "SELECT 3 AS n"); code != exitOK || stdout != "n\n3\n" || flushes != 1 {
		t.Fatalf("csv with -flush: exit %d %q, %d flushes", code, stdout, flushes)
	}
	code, _, stderr = runCmd("query", "-addr", addr, "DROP TABLE readings")
	if code != exitFailure || !strings.Contains(stderr, "DROP statements are not allowed") {
		t.Fatalf("refused: exit %d %q", code, stderr)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	code, _, stderr = runCmd("query", "-addr", dead, "SELECT 1")
	if code != exitFailure || !strings.Contains(stderr, "is it running") {
		t.Fatalf("no agent: exit %d %q", code, stderr)
	}
}

func TestWALVerify(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	l, err := wal.Open(dir, wal.Options{MaxSegmentSize: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := l.Append([]byte(fmt.Sprintf("record %03d %s", i, strings.Repeat("x", 100)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd("wal", "verify", dir)
	if code != exitOK || !strings.Contains(stdout, "records: 100") || !strings.Contains(stdout, "positions 1 to 100") || !strings.Contains(stdout, "OK") {
		t.Fatalf("sound WAL: exit %d\n%s%s", code, stdout, stderr)
	}
	// Given the data directory above the WAL, it reads <dir>/wal.
	parent := filepath.Dir(dir)
	if filepath.Base(dir) == "wal" {
		if code, stdout, _ := runCmd("wal", "verify", parent); code != exitOK || !strings.Contains(stdout, "records: 100") {
			t.Fatalf("data directory: exit %d\n%s", code, stdout)
		}
	}
	segs, _, err := listSegments(dir)
	if err != nil || len(segs) < 3 {
		t.Fatalf("want several segments, got %d (%v)", len(segs), err)
	}

	// A flipped byte inside the first segment is damage: exit 1, and the
	// directory itself is left as it was.
	victim := filepath.Join(dir, segs[0].name)
	data, _ := os.ReadFile(victim)
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(victim, data, 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = runCmd("wal", "verify", dir)
	if code != exitFailure || !strings.Contains(stdout, "DAMAGE") {
		t.Fatalf("damaged WAL: exit %d\n%s", code, stdout)
	}
	after, _ := os.ReadFile(victim)
	if !bytes.Equal(after, data) {
		t.Fatal("wal verify changed the directory it checked")
	}

	// A torn tail (a crash mid-write) is reported, and is not an error.
	dir2 := t.TempDir()
	l, err = wal.Open(dir2, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := l.Append([]byte(fmt.Sprintf("record %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	segs, _, _ = listSegments(dir2)
	last := filepath.Join(dir2, segs[len(segs)-1].name)
	data, _ = os.ReadFile(last)
	if err := os.WriteFile(last, data[:len(data)-3], 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = runCmd("wal", "verify", dir2)
	if code != exitOK || !strings.Contains(stdout, "torn tail") || !strings.Contains(stdout, "records: 9") {
		t.Fatalf("torn tail: exit %d\n%s", code, stdout)
	}

	if code, _, _ := runCmd("wal", "verify", filepath.Join(dir, "nope")); code != exitUsage {
		t.Fatalf("missing directory: exit %d", code)
	}
}

func TestDemo(t *testing.T) {
	code, stdout, stderr := runCmd("demo", "-records", "30", "-dir", t.TempDir())
	if code != exitOK || !strings.Contains(stdout, "verified: 30 of 30") || !strings.Contains(stdout, "demo passed") {
		t.Fatalf("demo: exit %d\n%s%s", code, stdout, stderr)
	}
}

// testConfig is a config with every listener on a free loopback port.
func testConfig(t *testing.T, dataDir string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dataDir
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Inputs.HTTP.Listen = "127.0.0.1:0"
	cfg.Inputs.TCP.Listen = "127.0.0.1:0"
	cfg.Inputs.UDP.Listen = "127.0.0.1:0"
	cfg.ShutdownTimeout = config.Duration(20 * time.Second)
	return cfg
}

func waitReady(t *testing.T, a *agent) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + a.adminAddr + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 20s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A second agent on the same data directory fails fast, naming the first;
// once the first stops, a new one starts on what it left.
func TestAgentLifecycleAndSecondAgent(t *testing.T) {
	dir := t.TempDir()
	var log1 bytes.Buffer
	a := newAgent("", testConfig(t, dir), &log1)
	if code, err := a.start(); err != nil {
		t.Fatalf("start: %d %v", code, err)
	}
	waitReady(t, a)
	var tcpAddr string
	for _, in := range a.inputs {
		if in.name == "tcp" {
			tcpAddr = in.addr()
		}
	}
	conn, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "cpu,host=a usage=1 1700000000000000000\n")
	conn.Close()

	var log2 bytes.Buffer
	b := newAgent("", testConfig(t, dir), &log2)
	start := time.Now()
	code, err := b.start()
	b.shutdown()
	if code != exitDataDir || err == nil || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second agent: exit %d, %v", code, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("second agent took %s to fail", el)
	}

	deadline := time.Now().Add(10 * time.Second)
	for a.counters.Snapshot()["tcp"].PersistedPoints < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the TCP line was not persisted: %+v", a.counters.Snapshot())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !a.shutdown() {
		t.Fatalf("unclean shutdown:\n%s", log1.String())
	}
	for _, want := range []string{"input stopped", "storage flushed and closed", "took="} {
		if !strings.Contains(log1.String(), want) {
			t.Errorf("shutdown log lacks %q:\n%s", want, log1.String())
		}
	}

	c := newAgent("", testConfig(t, dir), &bytes.Buffer{})
	if code, err := c.start(); err != nil {
		t.Fatalf("restart: %d %v", code, err)
	}
	waitReady(t, c)
	var n int
	if err := c.store.DB().QueryRow("SELECT count(*) FROM readings").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after restart: %d readings, %v", n, err)
	}
	if !c.shutdown() {
		t.Fatal("unclean shutdown after restart")
	}
}

func TestDataDirErrors(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "not-a-dir", "x")
	a := newAgent("", testConfig(t, file), &bytes.Buffer{})
	code, err := a.start()
	a.shutdown()
	if code != exitDataDir || err == nil || !strings.Contains(err.Error(), "data_dir") || !strings.Contains(err.Error(), file) {
		t.Fatalf("data_dir is a file: exit %d, %v", code, err)
	}

	// Less free space than one WAL segment: refused before anything is created.
	cfg := testConfig(t, filepath.Join(dir, "data"))
	cfg.Storage.MaxWALSize = 1 << 60
	cfg.Storage.DiskBudget = 1 << 60
	a = newAgent("", cfg, &bytes.Buffer{})
	code, err = a.start()
	a.shutdown()
	if _, ok := freeBytes(dir); ok && (code != exitDataDir || err == nil || !strings.Contains(err.Error(), "free")) {
		t.Fatalf("disk too small: exit %d, %v", code, err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "data"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".fpagent-probe") {
			t.Fatalf("probe file left behind: %s", e.Name())
		}
	}

	// A port in use names the key.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg = testConfig(t, filepath.Join(dir, "data2"))
	cfg.Admin.Listen = ln.Addr().String()
	a = newAgent("", cfg, &bytes.Buffer{})
	code, err = a.start()
	a.shutdown()
	if code != exitFailure || err == nil || !strings.Contains(err.Error(), "admin.listen") || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("port in use: exit %d, %v", code, err)
	}
	// ...and leaves nothing that stops the next start.
	cfg.Admin.Listen = "127.0.0.1:0"
	a = newAgent("", cfg, &bytes.Buffer{})
	if _, err := a.start(); err != nil {
		t.Fatalf("start after a failed start: %v", err)
	}
	a.shutdown()
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8187": true, "[::1]:8187": true, "localhost:1": true, "127.1.2.3:0": true,
		":8187": false, "0.0.0.0:8187": false, "[::]:1": false, "192.168.1.5:8187": false, "example.com:80": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v", addr, got)
		}
	}
}
