package main

import (
	"bytes"
	"context"
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
)

// These tests install packages, add a system user and cross-build DuckDB:
// they need root and Debian's tools. Without them a test is skipped with
// the reason, except under CI=true, where a missing tool is a failure.

func inCI() bool { return os.Getenv("CI") == "true" }

// need skips (or, in CI, fails) t unless every tool is on PATH.
func need(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("missing %s (apt-get install %s)", strings.Join(missing, ", "), strings.Join(aptPackages(missing), " "))
		if inCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// aptPackages names the Debian packages that provide tools.
func aptPackages(tools []string) []string {
	pkgs := map[string]string{
		"aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu", "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu",
		"qemu-aarch64": "qemu-user", "lintian": "lintian", "rpm": "rpm", "systemd-analyze": "systemd",
		"dpkg-deb": "dpkg", "dpkg": "dpkg", "setpriv": "util-linux", "adduser": "adduser",
		"deb-systemd-helper": "init-system-helpers",
	}
	var out []string
	for _, t := range tools {
		if p, ok := pkgs[t]; ok {
			out = append(out, p)
		} else {
			out = append(out, t)
		}
	}
	return out
}

// needRoot skips (or, in CI, fails) t unless it runs as root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if inCI() {
			t.Fatal("the packaging tests install packages and need root")
		}
		t.Skip("not root: the packaging tests install packages and add a system user")
	}
}

// long skips t under -short: it builds DuckDB-linked binaries.
func long(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping the build of DuckDB-linked binaries and packages")
	}
}

// artifacts are built once per test run and shared by the tests.
type artifacts struct {
	dir         string
	root        string
	v1, v2      options
	bin         map[string]string // "amd64" -> binary of v1
	binV2amd64  string
	pkgs        map[string]string // "deb/amd64" -> package of v1
	debV2, rpm2 string            // amd64 packages of v2
	staged      string            // the files staged for the amd64 .deb of v1
}

var (
	built    artifacts
	buildErr error
	once     sync.Once
	tmpRoot  string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fpagent-packaging-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build returns the packages, building them on first use: v1 (0.1.0) for
// amd64 and arm64, v2 (0.2.0) for amd64 to upgrade to. gzip keeps the test
// within its time; the packages are otherwise what a release builds.
func build(t *testing.T) *artifacts {
	t.Helper()
	long(t)
	need(t, "go", "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++")
	once.Do(func() { buildErr = buildAll(t) })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return &built
}

func buildAll(t *testing.T) error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	root, err := findRoot(wd)
	if err != nil {
		return err
	}
	mk := func(version, out string) (options, error) {
		o := options{Version: version, Release: "1", Commit: "0123456789abcdef0123456789abcdef01234567",
			Date: "2026-01-02T03:04:05Z", Archs: []string{"amd64", "arm64"}, Formats: []string{"deb", "rpm"},
			Root: root, Out: out, Maintainer: defaultMaintainer, Compression: "gzip",
			CCArm64: "aarch64-linux-gnu-gcc", CXXArm64: "aarch64-linux-gnu-g++"}
		return o, o.complete()
	}
	a := artifacts{dir: tmpRoot, root: root, bin: map[string]string{}, pkgs: map[string]string{}}
	if a.v1, err = mk("0.1.0", filepath.Join(tmpRoot, "v1")); err != nil {
		return err
	}
	if a.v2, err = mk("0.2.0", filepath.Join(tmpRoot, "v2")); err != nil {
		return err
	}
	logw := &testLog{t: t}
	start := time.Now()
	b1 := &builder{opts: a.v1, log: logw}
	if err := os.MkdirAll(a.v1.Out, 0o755); err != nil {
		return err
	}
	for _, arch := range a.v1.Archs {
		bin, err := b1.binary(arch)
		if err != nil {
			return err
		}
		a.bin[arch] = bin
		for _, f := range a.v1.Formats {
			p, err := b1.pkg(f, arch, bin)
			if err != nil {
				return err
			}
			a.pkgs[f+"/"+arch] = p
		}
	}
	a.staged = filepath.Join(a.v1.Out, "build", "staging-deb-amd64")
	b2 := &builder{opts: a.v2, log: logw}
	if err := os.MkdirAll(a.v2.Out, 0o755); err != nil {
		return err
	}
	if a.binV2amd64, err = b2.binary("amd64"); err != nil {
		return err
	}
	if a.debV2, err = b2.pkg("deb", "amd64", a.binV2amd64); err != nil {
		return err
	}
	if a.rpm2, err = b2.pkg("rpm", "amd64", a.binV2amd64); err != nil {
		return err
	}
	t.Logf("built 3 binaries and 6 packages in %s", time.Since(start).Round(time.Second))
	built = a
	return nil
}

// testLog sends the builder's progress to the log of the test that started it.
type testLog struct{ t *testing.T }

func (l *testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// sh runs a command and returns its combined output; a failure fails t.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := shErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func shErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = nil // a dpkg conffile prompt fails instead of waiting
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// freePort returns a TCP port on 127.0.0.1 that is free for TCP and UDP now
// and that it has not returned before: the kernel may hand one ephemeral
// port to two listeners opened and closed one after the other, and an agent
// given one port for two inputs refuses its config. It is internal/testport.Free
// of the agent's module, which this module does not depend on.
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			if !portsGiven[port] {
				portsGiven[port] = true
				return port
			}
		}
	}
	t.Fatal("no free port on 127.0.0.1")
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// ports are the listeners a test agent uses instead of the defaults, so that
// it does not meet another agent on this machine.
type ports struct{ http, admin, tcp, udp int }

func newPorts(t *testing.T) ports {
	return ports{freePort(t), freePort(t), freePort(t), freePort(t)}
}

// rewrite puts p in place of the default listeners of an agent.yaml.
func (p ports) rewrite(t *testing.T, cfg string) string {
	t.Helper()
	for from, to := range map[string]int{"127.0.0.1:8186": p.http, "127.0.0.1:8187": p.admin, "127.0.0.1:8094": p.tcp, "127.0.0.1:8089": p.udp} {
		if n := strings.Count(cfg, from); n != 1 {
			t.Fatalf("config has %d occurrences of %s, want 1", n, from)
		}
		cfg = strings.Replace(cfg, from, fmt.Sprintf("127.0.0.1:%d", to), 1)
	}
	return cfg
}

// httpDo sends a request and returns the status and body.
func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// notifySocket listens where a Type=notify service would send READY=1.
type notifySocket struct {
	dir  string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
}

// newNotifySocket makes a socket that the fpagent user can write to.
func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "fpagent-notify-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{dir: dir, conn: conn}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); os.RemoveAll(dir) })
	return n
}

func (n *notifySocket) path() string { return filepath.Join(n.dir, "notify.sock") }

// has reports whether a datagram carried the line.
func (n *notifySocket) has(line string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		for _, l := range strings.Split(m, "\n") {
			if l == line {
				return true
			}
		}
	}
	return false
}

// agentProc is a running fpagent.
type agentProc struct {
	cmd    *exec.Cmd
	out    *bytes.Buffer
	done   chan error
	notify *notifySocket
}

// start runs cmd with NOTIFY_SOCKET and waits for READY=1, as systemd does
// for Type=notify.
func startAgent(t *testing.T, cmd *exec.Cmd, timeout time.Duration) *agentProc {
	t.Helper()
	ns := newNotifySocket(t)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+ns.path())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, out: &out, done: make(chan error, 1), notify: ns}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(timeout)
	for !ns.has("READY=1") {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("fpagent exited before READY=1: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no READY=1 after %s\n%s", timeout, out.String())
		}
	}
	return p
}

// stop sends SIGTERM and expects exit 0 within timeout, after STOPPING=1.
func (p *agentProc) stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("fpagent did not exit cleanly: %v\n%s", err, p.out.String())
		}
	case <-time.After(timeout):
		t.Fatalf("fpagent still running %s after SIGTERM\n%s", timeout, p.out.String())
	}
	if !p.notify.has("STOPPING=1") {
		t.Errorf("no STOPPING=1 sent before exit")
	}
}
