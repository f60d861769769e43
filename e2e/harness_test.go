// Package e2e drives the real fpagent binary from outside: real sockets, real
// HTTP clients, a real MQTT broker, and the DuckDB file read back after the
// agent stops.
package e2e

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/fpagent/fpagent/internal/testport"
)

// agentBin is the binary under test, built once by TestMain.
var agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fpagent-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin = filepath.Join(dir, "fpagent")
	build := exec.Command("go", "build", "-o", agentBin, "../cmd/fpagent")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building fpagent:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agent is one running fpagent process.
type agent struct {
	t      testing.TB
	Dir    string // working directory; data lives in Dir/data unless the config says otherwise
	Config string // path of the config file
	Admin  string // http://127.0.0.1:port of the admin API
	HTTP   string // http://127.0.0.1:port of the write API
	TCP    string // 127.0.0.1:port
	UDP    string // 127.0.0.1:port
	// ReadyPath is what start waits to answer 200: /ready unless set (an
	// edge whose output cannot reach its target is alive but not ready).
	ReadyPath string
	cmd       *exec.Cmd
	logMu     sync.Mutex
	log       bytes.Buffer
	exited    chan struct{}
	exitErr   error
}

// agentPorts are the listen addresses an agent config is built with.
type agentPorts struct{ Admin, HTTP, TCP, UDP int }

func newPorts(t testing.TB) agentPorts {
	return agentPorts{Admin: testport.Free(t), HTTP: testport.Free(t), TCP: testport.Free(t), UDP: testport.Free(t)}
}

// baseConfig is a config for an agent in dir with the given ports; extra is
// YAML appended to it (it may override top-level sections only by leaving
// them out here: pass the whole section in extra and set skip).
func baseConfig(dir string, p agentPorts, storageExtra, inputsExtra string) string {
	return fmt.Sprintf(`data_dir: %s
log: {level: info, format: text}
storage:
  flush_interval: 200ms
%s
admin:
  listen: 127.0.0.1:%d
inputs:
  http: {listen: "127.0.0.1:%d"}
  tcp: {listen: "127.0.0.1:%d"}
  udp: {listen: "127.0.0.1:%d"}
%s`, filepath.Join(dir, "data"), indent(storageExtra, "  "), p.Admin, p.HTTP, p.TCP, p.UDP, indent(inputsExtra, "  "))
}

func indent(s, prefix string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}

// startAgent writes config into dir and starts fpagent on it, waiting until
// /ready answers 200.
func startAgent(t testing.TB, dir string, p agentPorts, config string) *agent {
	t.Helper()
	a := newAgent(t, dir, p, config)
	a.start()
	return a
}

// newAgent writes config into dir and returns the agent, not started.
func newAgent(t testing.TB, dir string, p agentPorts, config string) *agent {
	t.Helper()
	a := &agent{t: t, Dir: dir, Config: filepath.Join(dir, "agent.yaml"),
		Admin: fmt.Sprintf("http://127.0.0.1:%d", p.Admin), HTTP: fmt.Sprintf("http://127.0.0.1:%d", p.HTTP),
		TCP: fmt.Sprintf("127.0.0.1:%d", p.TCP), UDP: fmt.Sprintf("127.0.0.1:%d", p.UDP)}
	if err := os.WriteFile(a.Config, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *agent) start() {
	a.t.Helper()
	a.cmd = exec.Command(agentBin, "-config", a.Config)
	a.startCmd()
}

// startCmd starts a.cmd in a.Dir and waits until the agent is ready.
func (a *agent) startCmd() {
	a.t.Helper()
	a.cmd.Dir = a.Dir
	w := writerFunc(func(b []byte) (int, error) {
		a.logMu.Lock()
		defer a.logMu.Unlock()
		return a.log.Write(b)
	})
	a.cmd.Stdout, a.cmd.Stderr = w, w
	started := strings.Count(a.Log(), startedLine) // from earlier starts of this agent
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.exited = make(chan struct{})
	go func() {
		a.exitErr = a.cmd.Wait()
		close(a.exited)
	}()
	a.t.Cleanup(func() {
		select {
		case <-a.exited:
		default:
			a.cmd.Process.Kill()
			<-a.exited
		}
		if a.t.Failed() {
			a.t.Logf("agent log:\n%s", a.Log())
		}
	})
	a.waitReady(60*time.Second, started)
}

// startedLine is what the agent logs once every input listens.
const startedLine = "fpagent started"

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// Log returns what the agent printed so far.
func (a *agent) Log() string {
	a.logMu.Lock()
	defer a.logMu.Unlock()
	return a.log.String()
}

// waitReady waits until ReadyPath answers 200. /ready does once the inputs
// listen, but /health as soon as the admin API is up: for it, waitReady also
// waits until the log holds more than started start-up lines.
func (a *agent) waitReady(timeout time.Duration, started int) {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-a.exited:
			a.t.Fatalf("agent exited before it was ready: %v\n%s", a.exitErr, a.Log())
		default:
		}
		path := a.ReadyPath
		if path == "" {
			path = "/ready"
		}
		resp, err := http.Get(a.Admin + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && (path == "/ready" || strings.Count(a.Log(), startedLine) > started) {
				return
			}
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("agent not ready after %s (last: %v)\n%s", timeout, err, a.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (a *agent) stop() {
	a.t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(90 * time.Second):
		a.cmd.Process.Kill()
		a.t.Fatalf("agent did not stop within 90s of SIGTERM\n%s", a.Log())
	}
	if a.exitErr != nil {
		a.t.Fatalf("agent exited with %v after SIGTERM\n%s", a.exitErr, a.Log())
	}
}

// kill sends SIGKILL and waits for the process to go.
func (a *agent) kill() {
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
}

// getJSON fetches an admin endpoint into v.
func (a *agent) getJSON(path string, v any) {
	a.t.Helper()
	resp, err := http.Get(a.Admin + path)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		a.t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		a.t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

// openDB opens the DuckDB file of a stopped agent.
func openDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", path+"?access_mode=read_only")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func (a *agent) dbPath() string { return filepath.Join(a.Dir, "data", "fpagent.duckdb") }

func queryInt(t testing.TB, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// mosquitto is a broker process for the tests that need a real one.
type mosquitto struct {
	Addr   string // tcp://127.0.0.1:port
	Port   int
	conf   string
	cmd    *exec.Cmd
	t      testing.TB
	exited chan struct{}
	log    *lockedBuffer
}

// lockedBuffer is a log a child process writes while tests read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mosquittoPath finds Debian's mosquitto; tests skip without it unless CI
// is set, where .ci/run installs it and its absence is a failure.
func mosquittoPath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("mosquitto is not installed; .ci/run installs it with apt")
	}
	t.Skip("mosquitto is not installed (apt-get install mosquitto)")
	return ""
}

// startMosquitto runs a broker on a free port with persistence in dir and
// no bound on queued messages (see DESIGN.md: mosquitto drops past
// max_queued_messages otherwise).
func startMosquitto(t testing.TB, dir string, port int) *mosquitto {
	t.Helper()
	mosquittoPath(t) // skips or fails early when it is missing
	// Run as root, mosquitto drops to its own user: it must be able to write
	// its persistence file here, or it silently keeps sessions in memory only.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	// ...and reach it: a t.TempDir() sits in a directory only root may
	// enter, where mosquitto logs "Error saving in-memory database" and
	// loses its queues on a restart (use brokerDir).
	for d := filepath.Dir(dir); d != filepath.Dir(d); d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			t.Fatalf("mosquitto's persistence directory %s is under %s (mode %v), which its user cannot enter; use brokerDir(t)", dir, d, fi.Mode().Perm())
		}
	}
	if port == 0 {
		port = testport.Free(t)
	}
	m := &mosquitto{t: t, Port: port, Addr: fmt.Sprintf("tcp://127.0.0.1:%d", port), conf: filepath.Join(dir, "mosquitto.conf"), log: &lockedBuffer{}}
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence true
persistence_location %s/
autosave_interval 1
max_queued_messages 0
max_inflight_messages 0
log_dest stderr
`, port, dir)
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m.start()
	t.Cleanup(m.stop)
	return m
}

func (m *mosquitto) start() {
	m.t.Helper()
	m.cmd = exec.Command(mosquittoPath(m.t), "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.exited = make(chan struct{})
	go func() { m.cmd.Wait(); close(m.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("mosquitto did not listen on %d: %v", m.Port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops the broker (SIGTERM: it saves its persistence file).
func (m *mosquitto) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	select {
	case <-m.exited:
		return
	default:
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
	}
}

// restart stops the broker, waits, and starts it again on the same port.
func (m *mosquitto) restart(down time.Duration) {
	m.stop()
	time.Sleep(down)
	m.start()
}
