package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// buildAgent compiles cmd/fpagent into dir, with -trimpath and the commit
// stamped in, and returns the binary's path.
func buildAgent(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "fpagent")
	ldflags := ""
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		commit := strings.TrimSpace(string(out))
		// Uncommitted changes to what goes into the binary make it another build.
		dirty, err := exec.Command("git", "-C", root, "status", "--porcelain", "--",
			"cmd", "inputs", "internal", "storage", "wal", "go.mod", "go.sum").Output()
		if err == nil && len(bytes.TrimSpace(dirty)) > 0 {
			commit += "-dirty"
		}
		ldflags = "-X github.com/fpagent/fpagent/internal/version.Commit=" + commit
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, "./cmd/fpagent")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/fpagent in %s: %v\n%s", root, err, out.String())
	}
	return bin, nil
}

// moduleRoot is the directory of fpagent's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v (is go on PATH?)", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the fpagent module: run the bench from the repository, or pass -bin")
	}
	return filepath.Dir(mod), nil
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free UDP port: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// agentConfig is what a scenario changes in the agent's config.
type agentConfig struct {
	DataDir               string
	Sync                  string // always | interval
	Input                 string // tcp | http | udp | mqtt: the one input enabled
	Broker                string // tcp://127.0.0.1:port for mqtt
	Client                string // MQTT client id
	Storage               string // extra storage keys, one per line
	Extra                 string // more top-level YAML (outputs:)
	Admin, HTTP, TCP, UDP int
}

// yaml renders the config. Everything not named here is the default of
// agent.yaml.example, except the admin query_timeout, which bounds
// POST /api/v1/flush and must outlast a large backlog.
func (c agentConfig) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %q\nlog: {level: warn}\nstorage:\n  sync: %s\n", c.DataDir, c.Sync)
	for line := range strings.SplitSeq(c.Storage, "\n") {
		// "a: 1; b: 2" from -storage leaves " b: 2", which YAML would nest.
		if line = strings.TrimSpace(line); line != "" {
			fmt.Fprintf(&b, "  %s\n", line)
		}
	}
	fmt.Fprintf(&b, "admin:\n  listen: 127.0.0.1:%d\n  query_timeout: 10m\ninputs:\n", c.Admin)
	fmt.Fprintf(&b, "  http: {enabled: %t, listen: \"127.0.0.1:%d\"}\n", c.Input == "http", c.HTTP)
	fmt.Fprintf(&b, "  tcp: {enabled: %t, listen: \"127.0.0.1:%d\"}\n", c.Input == "tcp", c.TCP)
	fmt.Fprintf(&b, "  udp: {enabled: %t, listen: \"127.0.0.1:%d\"}\n", c.Input == "udp", c.UDP)
	if c.Input == "mqtt" {
		fmt.Fprintf(&b, "  mqtt:\n    enabled: true\n    brokers: [%q]\n    client_id: %s\n", c.Broker, c.Client)
		b.WriteString("    subscriptions:\n      - {topic: \"bench/#\", qos: 1, format: influx}\n")
	}
	b.WriteString(c.Extra)
	return b.String()
}

// newAgentConfig picks free ports for a config in dir.
func newAgentConfig(dir, sync, input string) (agentConfig, error) {
	c := agentConfig{DataDir: filepath.Join(dir, "data"), Sync: sync, Input: input}
	var err error
	for _, p := range []*int{&c.Admin, &c.HTTP, &c.TCP} {
		if *p, err = freePort(); err != nil {
			return c, err
		}
	}
	c.UDP, err = freeUDPPort()
	return c, err
}

// agentProc is one running fpagent.
type agentProc struct {
	cfg     agentConfig
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	exitErr error
	started time.Time
	client  *http.Client
}

func (a *agentProc) adminURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", a.cfg.Admin, path)
}

// startAgent writes cfg next to the data directory and starts bin on it; it
// does not wait for /ready (see waitReady).
func startAgent(bin, dir string, cfg agentConfig) (*agentProc, error) {
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(cfg.yaml()), 0o644); err != nil {
		return nil, err
	}
	// Uncompressed: the MQTT gate polls /metrics often (gatePoll), and
	// gzipping each answer took the agent half as long again as the rest.
	client := &http.Client{Timeout: 15 * time.Minute, Transport: &http.Transport{DisableCompression: true}}
	a := &agentProc{cfg: cfg, logPath: filepath.Join(dir, "agent.log"), client: client}
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	a.cmd = exec.Command(bin, "-config", path)
	a.cmd.Dir = dir
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.started = time.Now()
	if err := a.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	a.exited = make(chan struct{})
	go func() {
		a.exitErr = a.cmd.Wait()
		logf.Close()
		close(a.exited)
	}()
	return a, nil
}

func (a *agentProc) pid() int { return a.cmd.Process.Pid }

// logTail returns the end of the agent's log, for error messages.
func (a *agentProc) logTail() string {
	b, _ := os.ReadFile(a.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// waitReady polls /ready until it answers 200 and returns when it did.
func (a *agentProc) waitReady(timeout time.Duration) (time.Time, error) {
	return a.waitFor("/ready", timeout)
}

// waitFor waits until the admin endpoint path answers 200: /ready, or
// /health for an agent whose output is meant to be failing.
func (a *agentProc) waitFor(path string, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-a.exited:
			return time.Time{}, fmt.Errorf("the agent exited before it was ready (%v):\n%s", a.exitErr, a.logTail())
		default:
		}
		resp, err := a.client.Get(a.adminURL(path))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now(), nil
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("the agent was not ready after %s (last: %v):\n%s", timeout, err, a.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit: the agent flushes the WAL
// into DuckDB and closes the file.
func (a *agentProc) stop(timeout time.Duration) error {
	select {
	case <-a.exited:
		return fmt.Errorf("the agent had already exited (%v):\n%s", a.exitErr, a.logTail())
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(timeout):
		a.kill()
		return fmt.Errorf("the agent did not stop within %s of SIGTERM:\n%s", timeout, a.logTail())
	}
	if a.exitErr != nil {
		return fmt.Errorf("the agent exited with %v after SIGTERM:\n%s", a.exitErr, a.logTail())
	}
	return nil
}

// kill sends SIGKILL and waits for the process to go.
func (a *agentProc) kill() {
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
}

// agentStats is the part of /stats the bench reads.
type agentStats struct {
	Checkpoint      uint64                `json:"checkpoint"`
	WALLastPosition uint64                `json:"wal_last_position"`
	BacklogBytes    int64                 `json:"backlog_bytes"`
	StoredPoints    uint64                `json:"stored_points_total"`
	FlushedTotal    uint64                `json:"flushed_total"`
	Backpressure    uint64                `json:"backpressure_total"`
	Inputs          map[string]inputStats `json:"inputs"`
}

type inputStats struct {
	ReceivedPoints  uint64 `json:"received_points"`
	PersistedPoints uint64 `json:"persisted_points"`
	RejectedPoints  uint64 `json:"rejected_points"`
	DroppedPoints   uint64 `json:"dropped_points"`
	Payloads        uint64 `json:"payloads"`
	Backpressure    uint64 `json:"backpressure"`
	Throttled       uint64 `json:"throttled"`
}

// persisted is the sum of the inputs' persisted points.
func (s agentStats) persisted() uint64 {
	var n uint64
	for _, in := range s.Inputs {
		n += in.PersistedPoints
	}
	return n
}

// persistedPoints reads the inputs' persisted points from /metrics, which,
// unlike /stats, asks DuckDB nothing, so that it may be polled often.
func (a *agentProc) persistedPoints(ctx context.Context) (int64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.adminURL("/metrics"), nil)
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return sumMetric(resp.Body, "fpagent_input_persisted_points_total")
}

// sumMetric adds up the samples of metric in a Prometheus text exposition.
func sumMetric(r io.Reader, metric string) (int64, error) {
	var sum float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, metric)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", metric, line, err)
		}
		sum += v
	}
	return int64(sum), sc.Err()
}

func (a *agentProc) stats(ctx context.Context) (agentStats, error) {
	var st agentStats
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.adminURL("/stats"), nil)
	resp, err := a.client.Do(req)
	if err != nil {
		return st, fmt.Errorf("GET /stats: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, fmt.Errorf("GET /stats: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /stats: %s: %s", resp.Status, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("GET /stats: %w: %.200s", err, body)
	}
	return st, nil
}

// flush asks the agent to move everything its WAL holds into DuckDB now.
func (a *agentProc) flush(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.adminURL("/api/v1/flush"), nil)
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("POST /api/v1/flush: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /api/v1/flush: %s: %s", resp.Status, body)
	}
	return nil
}

// count runs a count query through the agent's SQL API.
func (a *agentProc) count(ctx context.Context, q string) (int64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.adminURL("/api/v1/query?q="+url.QueryEscape(q)), nil)
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", q, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s: %s", q, resp.Status, body)
	}
	var res struct {
		Rows [][]json.Number `json:"rows"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&res); err != nil || len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		return 0, fmt.Errorf("%s: unexpected answer (%v): %.200s", q, err, body)
	}
	return strconv.ParseInt(res.Rows[0][0].String(), 10, 64)
}

// waitCaughtUp polls /stats until DuckDB holds everything the WAL does and
// at least want points were flushed, and returns the last stats.
func (a *agentProc) waitCaughtUp(ctx context.Context, want uint64) (agentStats, error) {
	for {
		st, err := a.stats(ctx)
		if err != nil {
			return st, err
		}
		if st.Checkpoint >= st.WALLastPosition && st.FlushedTotal >= want {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("DuckDB did not catch up: checkpoint %d of WAL position %d, %d of %d points flushed: %w",
				st.Checkpoint, st.WALLastPosition, st.FlushedTotal, want, ctx.Err())
		case <-time.After(pollPeriod):
		}
	}
}

// dbBytes is the size of the DuckDB file and its WAL under dataDir.
func dbBytes(dataDir string) int64 {
	var n int64
	for _, name := range []string{"fpagent.duckdb", "fpagent.duckdb.wal"} {
		if fi, err := os.Stat(filepath.Join(dataDir, name)); err == nil {
			n += fi.Size()
		}
	}
	return n
}
