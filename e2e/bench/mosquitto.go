package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// broker is a mosquitto process on a free port.
type broker struct {
	Addr    string // tcp://127.0.0.1:port
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// findMosquitto looks for Debian's mosquitto.
func findMosquitto() (string, error) {
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", errors.New("mosquitto is not installed (apt-get install mosquitto), or leave mqtt out of -inputs")
}

// startBroker runs mosquitto with its defaults but one: max_queued_messages
// 0 (no bound) instead of 1000. The publishers flood the broker faster than
// a subscriber drains it, and past 1,000 queued messages mosquitto drops
// QoS 1 messages whatever the subscriber does (DESIGN.md, MQTT facts).
// extra holds more configuration lines, separated by semicolons.
func startBroker(bin, dir, extra string) (*broker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	text := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n", port)
	for line := range strings.SplitSeq(extra, ";") {
		if line = strings.TrimSpace(line); line != "" {
			text += line + "\n"
		}
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	b := &broker{Addr: fmt.Sprintf("tcp://127.0.0.1:%d", port), logPath: filepath.Join(dir, "mosquitto.log")}
	logf, err := os.Create(b.logPath)
	if err != nil {
		return nil, err
	}
	b.cmd = exec.Command(bin, "-c", conf)
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	b.exited = make(chan struct{})
	go func() { b.cmd.Wait(); logf.Close(); close(b.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return b, nil
		}
		select {
		case <-b.exited:
			return nil, fmt.Errorf("mosquitto exited at start:\n%s", b.log())
		default:
		}
		if time.Now().After(deadline) {
			b.stop()
			return nil, fmt.Errorf("mosquitto did not listen on %d within 10s:\n%s", port, b.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *broker) log() string {
	s, _ := os.ReadFile(b.logPath)
	return string(s)
}

// dropped tells whether mosquitto logged dropping messages.
func (b *broker) dropped() bool { return strings.Contains(b.log(), "dropped") }

func (b *broker) stop() {
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-b.exited
	}
}
