package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fpagent/fpagent/internal/testport"
)

// TestMain lets a test run this very binary as the agent (FPAGENT_TEST_MAIN=1),
// so that signals and exit codes are tested on a real process without a build.
func TestMain(m *testing.M) {
	if os.Getenv("FPAGENT_TEST_MAIN") == "1" {
		os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
	}
	// Every agent a test starts must stop everything it started. paho's
	// Disconnect of a client that never connected leaves a goroutine that
	// waits for the connect attempt under way; it ends with that attempt.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/eclipse/paho%2emqtt%2egolang.(*client).Disconnect.func1"))
}

// The agent process: READY=1 once ready, SIGHUP applies log.level, SIGTERM
// stops cleanly with exit 0 and STOPPING=1.
func TestProcessSignalsAndNotify(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the agent as a process")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	nconn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nconn.Close()
	notes := make(chan string, 32)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := nconn.Read(buf)
			if err != nil {
				close(notes)
				return
			}
			notes <- string(buf[:n])
		}
	}()

	cfgText := func(level string) string {
		return fmt.Sprintf("data_dir: %s\nlog: {level: %s}\nadmin: {listen: %s}\ninputs:\n  http: {listen: %s}\n  tcp: {listen: %s}\n  udp: {listen: %s}\n",
			filepath.Join(dir, "data"), level, testport.Addr(t), testport.Addr(t), testport.Addr(t), testport.Addr(t))
	}
	text := cfgText("info")
	cfgPath := writeFile(t, dir, "agent.yaml", text)

	cmd, lines := startAgentProcess(t, cfgPath, sock)
	defer cmd.Process.Kill()
	waitFor := func(ch <-chan string, what string) string {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case s, ok := <-ch:
				if !ok {
					t.Fatalf("closed while waiting for %q", what)
				}
				if strings.Contains(s, what) {
					return s
				}
			case <-timeout:
				t.Fatalf("no %q within 20s", what)
			}
		}
	}
	waitFor(notes, "READY=1")

	changed := strings.Replace(text, "level: info", "level: debug", 1) + "storage: {batch_size: 7}\n"
	if err := os.WriteFile(cfgPath, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if line := waitFor(lines, "log.level info -> debug"); !strings.Contains(line, "changed_but_need_restart=storage.batch_size") {
		t.Errorf("the reload line does not name storage.batch_size as needing a restart: %s", line)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(notes, "STOPPING=1")
	waitFor(lines, "storage flushed and closed")
	done := make(chan error, 1)
	go func() {
		for range lines {
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
}

// A second SIGTERM while the first one's shutdown is under way (here: the
// admin API waiting for a long query) kills the process at once.
func TestSecondSignalKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the agent as a process")
	}
	dir := t.TempDir()
	admin := testport.Addr(t)
	cfgPath := writeFile(t, dir, "agent.yaml", fmt.Sprintf(
		"data_dir: %s\nadmin: {listen: %s, query_timeout: 30s}\ninputs:\n  http: {enabled: false}\n  tcp: {enabled: false}\n  udp: {enabled: false}\n",
		filepath.Join(dir, "data"), admin))
	cmd, lines := startAgentProcess(t, cfgPath, "")
	defer cmd.Process.Kill()
	wait := func(what string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case s, ok := <-lines:
				if !ok {
					t.Fatalf("exited while waiting for %q", what)
				}
				if strings.Contains(s, what) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q within 20s", what)
			}
		}
	}
	wait("msg=ready")
	go func() {
		resp, err := http.Get("http://" + admin + "/api/v1/query?q=" + url.QueryEscape("SELECT count(*) FROM range(1000000000000) a, range(1000) b"))
		if err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond) // the query is running
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wait("stopping on signal")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines {
		}
	}()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("exit after two signals: %v, want death by signal", err)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("exit after two signals: %v, want death by SIGTERM", err)
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Fatalf("took %s to die after the second signal", el)
	}
}

// startAgentProcess runs this test binary as the agent on cfgPath, with
// NOTIFY_SOCKET set to sock, and streams its stderr lines.
func startAgentProcess(t *testing.T, cfgPath, sock string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-config", cfgPath)
	cmd.Env = append(os.Environ(), "FPAGENT_TEST_MAIN=1", "NOTIFY_SOCKET="+sock)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return cmd, lines
}
