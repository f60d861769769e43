package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
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

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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
			filepath.Join(dir, "data"), level, freePort(t), freePort(t), freePort(t), freePort(t))
	}
	text := cfgText("info")
	cfgPath := writeFile(t, dir, "agent.yaml", text)

	cmd := exec.Command(os.Args[0], "-config", cfgPath)
	cmd.Env = append(os.Environ(), "FPAGENT_TEST_MAIN=1", "NOTIFY_SOCKET="+sock)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
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
