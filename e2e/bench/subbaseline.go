package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// subBaseline is the broker's own limit: the MQTT 1/msg load, published
// the same way, to mosquitto_sub as the only subscriber (QoS 1, persistent
// session, acknowledging as it reads, storing nothing). An agent that
// reaches this rate is not what holds the figure back.
type subBaseline struct {
	Messages int64
	Rates    []float64 // messages/s per run, from the first publish until the subscriber had them all
	SubCPU   []float64 // mosquitto_sub's CPU seconds per run
}

var errNoMosquittoSub = errors.New("-sub-baseline needs mosquitto_sub: apt-get install mosquitto-clients")

func runSubBaseline(e env, messages int64) (float64, float64, error) {
	sub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		return 0, 0, errNoMosquittoSub
	}
	dir, err := e.runDir("sub-baseline-")
	if err != nil {
		return 0, 0, err
	}
	br, err := startBroker(e.mosquitto, dir, e.brokerConf)
	if err != nil {
		return 0, 0, err
	}
	defer br.stop()
	port := br.Addr[strings.LastIndexByte(br.Addr, ':')+1:]
	cmd := exec.Command(sub, "-h", "127.0.0.1", "-p", port, "-q", "1", "-c", "-i", "bench-baseline-sub",
		"-t", "bench/#", "-C", fmt.Sprint(messages))
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("start mosquitto_sub: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Subscribed once the broker logs the client's connection (it logs
	// "New client connected ... as bench-baseline-sub"), or after 2 s.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && !strings.Contains(br.log(), "bench-baseline-sub"); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // SUBSCRIBE follows CONNECT
	gen, err := newLineGen(1000)
	if err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	start := time.Now()
	l := load{gen: gen, points: messages, workers: e.conns, batch: 1, pace: pacer{start: start}, paho: e.paho}
	if _, err := sendMQTT(ctx, br.Addr, l); err != nil {
		cmd.Process.Kill()
		return 0, 0, err
	}
	select {
	case err := <-exited:
		if err != nil {
			return 0, 0, fmt.Errorf("mosquitto_sub: %w", err)
		}
	case <-ctx.Done():
		cmd.Process.Kill()
		return 0, 0, fmt.Errorf("mosquitto_sub did not receive %d messages within %s", messages, e.timeout)
	}
	d := time.Since(start)
	if br.dropped() {
		return 0, 0, errors.New("mosquitto dropped messages: the baseline does not count")
	}
	ps := cmd.ProcessState
	return float64(messages) / d.Seconds(), (ps.UserTime() + ps.SystemTime()).Seconds(), nil
}
