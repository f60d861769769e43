package mqtt

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"
)

// brokerConn is the connection to a tcp:// broker as paho sees it. Reads go
// through a buffer: paho reads every packet with three or more small reads.
// Writes are coalesced: paho writes every packet with its own write, and
// the agent acknowledges a durable batch of messages with one PUBACK each,
// so a write per PUBACK cost ~10 µs of CPU apiece on loopback (18% of the
// agent's CPU at one point per message). Write copies the packet into a
// buffer and a goroutine writes what has gathered in one go, in order.
//
// Write returns before the bytes are on the wire, as a write to a socket
// does before they reach the peer; a failed write is returned by the next
// Write, by Close and by Read, so that paho's reader ends the session. Pending bytes are bounded (maxPending): Write waits for room.
type brokerConn struct {
	net.Conn
	r *bufio.Reader

	mu      sync.Mutex
	room    *sync.Cond // signalled when the writer took the buffer, or failed
	buf     []byte     // written by paho, not yet handed to the socket
	err     error      // the first write error; sticky
	closing bool
	wake    chan struct{} // cap 1: there is something to write
	done    chan struct{} // closed when the writer goroutine has ended
}

const maxPending = 64 << 10

// closeFlushTimeout bounds how long Close waits to write out what paho
// wrote just before (a DISCONNECT, say).
const closeFlushTimeout = time.Second

func newBrokerConn(c net.Conn) *brokerConn {
	bc := &brokerConn{
		Conn: c,
		r:    bufio.NewReaderSize(c, 32<<10),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	bc.room = sync.NewCond(&bc.mu)
	go bc.writer()
	return bc
}

// Read reads through the buffer. After a failed write it returns that
// error: paho ends the session on a read error, but not on one that says
// the connection was closed, which it takes for its own doing.
func (c *brokerConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil {
		c.mu.Lock()
		werr := c.err
		c.mu.Unlock()
		if werr != nil {
			return n, fmt.Errorf("write to broker: %w", werr)
		}
	}
	return n, err
}

func (c *brokerConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && !c.closing && len(c.buf) > 0 && len(c.buf)+len(p) > maxPending {
		c.room.Wait()
	}
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return 0, err
	case c.closing:
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.buf = append(c.buf, p...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// writer hands what paho wrote to the socket, all that gathered at once.
func (c *brokerConn) writer() {
	defer close(c.done)
	var out []byte
	for range c.wake {
		// Let paho's goroutine go on writing the rest of a run of PUBACKs
		// before the buffer is taken.
		runtime.Gosched()
		c.mu.Lock()
		out, c.buf = c.buf, out[:0]
		closing := c.closing
		c.room.Broadcast()
		c.mu.Unlock()
		if len(out) > 0 {
			if _, err := c.Conn.Write(out); err != nil {
				c.fail(err)
				return
			}
		}
		if closing {
			return
		}
	}
}

func (c *brokerConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.room.Broadcast()
	c.mu.Unlock()
	// Wake paho's reader, which then returns the write error (see Read).
	c.Conn.SetReadDeadline(time.Now())
}

// Close writes out what is pending (within closeFlushTimeout), then closes
// the connection.
func (c *brokerConn) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		<-c.done
		return c.Conn.Close()
	}
	c.closing = true
	c.room.Broadcast()
	c.mu.Unlock()
	c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.done
	cerr := c.Conn.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil && !errors.Is(c.err, net.ErrClosed) {
		return c.err
	}
	return cerr
}
