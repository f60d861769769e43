package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// pacer spreads points over time at a fixed rate; a zero rate means as fast
// as the agent takes them.
type pacer struct {
	start time.Time
	rate  float64 // points per second
}

// wait sleeps until point n is due and returns when it was due (now, when
// the pacer is unlimited or late).
func (p pacer) wait(ctx context.Context, n int64) time.Time {
	if p.rate <= 0 {
		return time.Now()
	}
	due := p.start.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	return due
}

// reserver hands out consecutive ranges of point numbers to the writers.
type reserver struct {
	next  atomic.Int64
	total int64
}

// take reserves up to n points and returns the first and how many; zero
// when everything has been handed out.
func (r *reserver) take(n int64) (first, count int64) {
	first = r.next.Add(n) - n
	if first >= r.total {
		return first, 0
	}
	return first, min(n, r.total-first)
}

// load is one scenario's traffic.
type load struct {
	gen     lineGen
	points  int64 // points to send (for MQTT: messages × points per message)
	workers int   // connections or concurrent clients
	batch   int   // lines per HTTP body, per UDP datagram, per MQTT message, per TCP write
	pace    pacer
	warmup  time.Duration // HTTP: requests due this early are timed apart
	// MQTT: publishers wait while they are more than ahead points past
	// what progress (the agent's persisted points) says, so that the broker
	// does not pile up what the agent has yet to take. 0: no limit.
	ahead    int64
	progress func(context.Context) (int64, error)
	paho     bool // MQTT: publish with paho instead of the lean raw publisher
}

// result of sending a load.
type sendResult struct {
	sent      int64           // points the clients sent (and, but for UDP, the agent acknowledged)
	latencies []time.Duration // HTTP: per request, until its 204
	// warmupLatencies are those of the requests due in the warm-up.
	warmupLatencies []time.Duration
	refused         int64 // HTTP answers other than 204, retried
	datagrams       int64 // UDP datagrams sent
}

// runWorkers runs f in n goroutines and returns the first error.
func runWorkers(n int, f func(w int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = f(w)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sendTCP writes the points over l.workers connections, l.batch lines per
// write, and closes them. TCP has no acknowledgement: the caller waits for
// the agent's persisted counter.
func sendTCP(ctx context.Context, addr string, l load) (sendResult, error) {
	return sendSocket(ctx, "tcp", addr, l)
}

// sendUDP sends datagrams of l.batch lines from l.workers sockets. Datagrams
// the kernel or the agent drop are not seen here: the caller compares what
// the agent persisted with what was sent.
func sendUDP(ctx context.Context, addr string, l load) (sendResult, error) {
	return sendSocket(ctx, "udp", addr, l)
}

// sendSocket writes l.batch lines at a time over l.workers sockets of the
// network ("tcp" or "udp"); it counts the writes as datagrams.
func sendSocket(ctx context.Context, network, addr string, l load) (sendResult, error) {
	r := &reserver{total: l.points}
	var writes atomic.Int64
	err := runWorkers(l.workers, func(int) error {
		c, err := net.Dial(network, addr)
		if err != nil {
			return fmt.Errorf("connect to the %s input %s: %w", network, addr, err)
		}
		defer c.Close()
		buf := make([]byte, 0, l.batch*lineSize)
		for ctx.Err() == nil {
			first, n := r.take(int64(l.batch))
			if n == 0 {
				break
			}
			l.pace.wait(ctx, first)
			buf = l.gen.appendLines(buf[:0], first, int(n))
			// A UDP send to a port with nobody behind it may report the
			// ICMP answer to an earlier one: the agent counts what arrived.
			if _, err := c.Write(buf); err != nil && !(network == "udp" && errors.Is(err, syscall.ECONNREFUSED)) {
				return fmt.Errorf("write to the %s input: %w", network, err)
			}
			writes.Add(1)
		}
		return ctx.Err()
	})
	res := sendResult{sent: min(r.next.Load(), r.total)}
	if network == "udp" {
		res.datagrams = writes.Load()
	}
	return res, err
}

// sendHTTP posts bodies of l.batch lines to /api/v2/write from l.workers
// clients and records each request's latency until its 204, which the agent
// sends once the points are durable. With a rate, latency counts from when
// the request was due, so a slow answer that delays the next request is not
// hidden (coordinated omission); those due in the warm-up, while the agent's
// heap and pools grow from nothing, are kept apart. A 429 or 503 (backpressure) is retried
// after its Retry-After and counted.
func sendHTTP(ctx context.Context, base string, l load) (sendResult, error) {
	r := &reserver{total: l.points}
	tr := &http.Transport{MaxIdleConnsPerHost: l.workers, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	url := base + "/api/v2/write?org=bench&bucket=bench&precision=ns"
	lat := make([][]time.Duration, l.workers)
	warm := make([][]time.Duration, l.workers)
	var refused atomic.Int64
	err := runWorkers(l.workers, func(w int) error {
		buf := make([]byte, 0, l.batch*lineSize)
		for ctx.Err() == nil {
			first, n := r.take(int64(l.batch))
			if n == 0 {
				break
			}
			buf = l.gen.appendLines(buf[:0], first, int(n))
			due := l.pace.wait(ctx, first)
			for {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(buf))
				req.Header.Set("Content-Type", "text/plain; charset=utf-8")
				resp, err := client.Do(req)
				if err != nil {
					return fmt.Errorf("POST /api/v2/write: %w", err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusNoContent {
					if due.Sub(l.pace.start) < l.warmup {
						warm[w] = append(warm[w], time.Since(due))
					} else {
						lat[w] = append(lat[w], time.Since(due))
					}
					break
				}
				if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
					return fmt.Errorf("POST /api/v2/write: %s: %.300s", resp.Status, body)
				}
				refused.Add(1)
				wait := time.Second
				if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
					wait = time.Duration(s) * time.Second
				}
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		return ctx.Err()
	})
	res := sendResult{sent: min(r.next.Load(), r.total), refused: refused.Load()}
	for w := range lat {
		res.latencies = append(res.latencies, lat[w]...)
		res.warmupLatencies = append(res.warmupLatencies, warm[w]...)
	}
	return res, err
}

// sendMQTT publishes messages of l.batch lines at QoS 1 to the broker from
// l.workers clients, each keeping up to 1,000 publishes in flight, and
// returns once the broker acknowledged them all.
func sendMQTT(ctx context.Context, broker string, l load) (sendResult, error) {
	per := int64(l.batch)
	r := &reserver{total: l.points / per}
	stamp := time.Now().UnixNano()
	publish := publishRaw
	if l.paho {
		publish = publishPaho
	}
	g := startGate(ctx, l, r)
	defer g.stop()
	err := runWorkers(l.workers, func(w int) error {
		return publish(ctx, broker, fmt.Sprintf("bench-pub-%d-%d", w, stamp), l, r, g)
	})
	return sendResult{sent: min(r.next.Load(), r.total) * per}, err
}

// gate holds publishers back while they are more than l.ahead points past
// what the agent has persisted, polled every gatePoll. A broker takes QoS 1
// messages as fast as publishers send them and queues what its subscriber
// has yet to take: flooding it makes it hold hundreds of MB (mosquitto: 587
// MB of RSS and 70% of a core at 100 points per message) and measures the
// broker's queue as much as the agent.
type gate struct {
	ahead     int64 // points; 0: open
	per       int64
	r         *reserver
	persisted atomic.Int64
	done      chan struct{}
	stopped   chan struct{}
}

// gatePoll is how often the gate reads the agent's /metrics: each read
// costs the agent about a millisecond of CPU (1.5 gzipped), 2% of a core
// at this interval, and 200,000 points of slack last over 300 ms even at
// 600,000 points/s.
const gatePoll = 50 * time.Millisecond

func startGate(ctx context.Context, l load, r *reserver) *gate {
	g := &gate{ahead: l.ahead, per: int64(l.batch), r: r, done: make(chan struct{}), stopped: make(chan struct{})}
	if g.ahead <= 0 || l.progress == nil {
		g.ahead = 0
		close(g.stopped)
		return g
	}
	go func() {
		defer close(g.stopped)
		t := time.NewTicker(gatePoll)
		defer t.Stop()
		for {
			if n, err := l.progress(ctx); err == nil {
				g.persisted.Store(n)
			}
			select {
			case <-t.C:
			case <-g.done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return g
}

func (g *gate) stop() {
	close(g.done)
	<-g.stopped
}

// wait returns once the next message is no more than g.ahead points ahead
// of the agent; before it waits it calls flush, so that nothing the agent
// needs to catch up sits in a publisher's buffer.
func (g *gate) wait(ctx context.Context, flush func() error) error {
	if g.ahead == 0 {
		return nil
	}
	flushed := false
	for g.r.next.Load()*g.per-g.persisted.Load() > g.ahead {
		if !flushed {
			if err := flush(); err != nil {
				return err
			}
			flushed = true
		}
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// publishRaw publishes the messages r hands out with the raw publisher.
func publishRaw(ctx context.Context, broker, clientID string, l load, r *reserver, g *gate) error {
	per := int64(l.batch)
	p, err := dialRaw(broker, clientID, 1000)
	if err != nil {
		return err
	}
	var buf []byte
	for ctx.Err() == nil {
		if err := g.wait(ctx, p.flush); err != nil {
			return err
		}
		msg, n := r.take(1)
		if n == 0 {
			break
		}
		if l.pace.rate > 0 {
			// Nothing may wait in the buffer while the pacer sleeps.
			if err := p.flush(); err != nil {
				return err
			}
			l.pace.wait(ctx, msg*per)
		}
		buf = l.gen.appendLines(buf[:0], msg*per, int(per))
		if err := p.publish(ctx, "bench/a", buf); err != nil {
			return err
		}
	}
	return p.close(ctx)
}

// publishPaho publishes the messages r hands out with paho, the client
// most Go programs use.
func publishPaho(ctx context.Context, broker, clientID string, l load, r *reserver, g *gate) error {
	per := int64(l.batch)
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("connect the publisher to %s: %v", broker, tok.Error())
	}
	defer cl.Disconnect(250)
	toks := make([]paho.Token, 0, 1000)
	settle := func() error {
		for _, t := range toks {
			if !t.WaitTimeout(2*time.Minute) || t.Error() != nil {
				return fmt.Errorf("publish to %s: no PUBACK within 2m (%v)", broker, t.Error())
			}
		}
		toks = toks[:0]
		return nil
	}
	var buf []byte
	for ctx.Err() == nil {
		if err := g.wait(ctx, func() error { return nil }); err != nil { // paho sends as it goes
			return err
		}
		msg, n := r.take(1)
		if n == 0 {
			break
		}
		l.pace.wait(ctx, msg*per)
		buf = l.gen.appendLines(buf[:0], msg*per, int(per))
		// paho keeps the payload until it is sent: give it its own copy.
		toks = append(toks, cl.Publish("bench/a", 1, false, bytes.Clone(buf)))
		if len(toks) == cap(toks) {
			if err := settle(); err != nil {
				return err
			}
		}
	}
	if err := settle(); err != nil {
		return err
	}
	return ctx.Err()
}
