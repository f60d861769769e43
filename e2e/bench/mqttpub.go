package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"
)

// rawPublisher is a minimal MQTT 3.1.1 client that only publishes at QoS 1.
// It exists because the load generator shares the machine with the agent:
// paho spends about 170 µs of CPU per message here (a write per packet and
// a token per publish), which on two cores leaves the agent too little to
// measure. This one batches packets into one write and counts PUBACKs.
type rawPublisher struct {
	conn    net.Conn
	w       *bufio.Writer
	window  chan struct{} // one slot per publish in flight
	readErr chan error
	nextID  uint16
}

// dialRaw connects to broker (tcp://host:port) with a clean session.
func dialRaw(broker, clientID string, window int) (*rawPublisher, error) {
	u, err := url.Parse(broker)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("broker address %q: want tcp://host:port", broker)
	}
	c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect the publisher to %s: %w", broker, err)
	}
	p := &rawPublisher{conn: c, w: bufio.NewWriterSize(c, 256<<10), window: make(chan struct{}, window),
		readErr: make(chan error, 1)}
	// CONNECT: protocol "MQTT" level 4, clean session, keepalive 60 s.
	var vh []byte
	vh = appendString(vh, "MQTT")
	vh = append(vh, 4, 0x02, 0, 60)
	vh = appendString(vh, clientID)
	pkt := appendFixedHeader(nil, 0x10, len(vh))
	pkt = append(pkt, vh...)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(pkt); err != nil {
		c.Close()
		return nil, fmt.Errorf("MQTT CONNECT to %s: %w", broker, err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("MQTT CONNACK from %s: %w", broker, err)
	}
	if ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("MQTT CONNACK from %s refused the connection: % x", broker, ack)
	}
	c.SetDeadline(time.Time{})
	go p.readAcks()
	return p, nil
}

// readAcks frees a window slot for every PUBACK.
func (p *rawPublisher) readAcks() {
	r := bufio.NewReaderSize(p.conn, 64<<10)
	var b [4]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			p.readErr <- err
			return
		}
		if b[0] != 0x40 || b[1] != 2 {
			p.readErr <- fmt.Errorf("unexpected MQTT packet % x from the broker (want PUBACK)", b)
			return
		}
		<-p.window
	}
}

// publish queues one QoS 1 PUBLISH, waiting for a free slot in the window;
// queued packets go out when the buffer fills or on flush.
func (p *rawPublisher) publish(ctx context.Context, topic string, payload []byte) error {
	select {
	case p.window <- struct{}{}:
	default:
		// The window is full: send what is queued, then wait for acks.
		if err := p.w.Flush(); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		select {
		case p.window <- struct{}{}:
		case err := <-p.readErr:
			return fmt.Errorf("publish: the broker connection failed: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Minute):
			return errors.New("publish: no PUBACK from the broker within 2m")
		}
	}
	p.nextID++
	if p.nextID == 0 {
		p.nextID = 1
	}
	var hdr [16]byte
	h := appendFixedHeader(hdr[:0], 0x32, 2+len(topic)+2+len(payload))
	h = appendString(h, topic)
	h = append(h, byte(p.nextID>>8), byte(p.nextID))
	p.w.Write(h)
	_, err := p.w.Write(payload)
	return err
}

// flush sends the queued packets now.
func (p *rawPublisher) flush() error { return p.w.Flush() }

// close sends what is queued, waits until every publish is acknowledged,
// and disconnects.
func (p *rawPublisher) close(ctx context.Context) error {
	defer p.conn.Close()
	if err := p.w.Flush(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	for range cap(p.window) {
		select {
		case p.window <- struct{}{}:
		case err := <-p.readErr:
			return fmt.Errorf("publish: the broker connection failed before every PUBACK came: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Minute):
			return errors.New("publish: no PUBACK from the broker within 2m")
		}
	}
	p.conn.Write([]byte{0xE0, 0}) // DISCONNECT
	return nil
}

// appendFixedHeader appends an MQTT fixed header: the packet type and flags,
// then the remaining length as a variable-length integer.
func appendFixedHeader(b []byte, typeFlags byte, remaining int) []byte {
	b = append(b, typeFlags)
	for {
		d := byte(remaining % 128)
		remaining /= 128
		if remaining > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if remaining == 0 {
			return b
		}
	}
}

// appendString appends an MQTT UTF-8 string: a two-byte length and the bytes.
func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}
