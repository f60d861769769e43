package socket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/lineproto"
	"github.com/fpagent/fpagent/storage"
)

// TCP defaults applied to zero option values.
const (
	DefaultTCPAddr        = "127.0.0.1:8094"
	DefaultMaxConnections = 256
	DefaultMaxLineBytes   = 64 << 10
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultReadBytes      = 64 << 10
)

// TCPOptions configure a TCP listener. Zero values take the defaults.
type TCPOptions struct {
	Addr           string        // listen address; default DefaultTCPAddr
	MaxConnections int           // connections beyond it are refused (closed) and counted; default 256
	MaxLineBytes   int           // longer lines are rejected and skipped to the next newline; default 64 KiB
	IdleTimeout    time.Duration // a connection with no complete line for this long is closed; default 5 min
	BatchLines     int           // lines per batch; default 5000
	BatchDelay     time.Duration // a batch waits no longer than this for more lines; default 10 ms
	RetryDelay     time.Duration // wait before retrying a batch the sink pushed back without a hint; default 100 ms
	Precision      time.Duration // timestamp unit (see lineproto.ParsePrecision); default ns
	ReadBytes      int           // bytes read per read call; default 64 KiB
	MaxRejectBytes int           // bytes of a bad line kept with its reject; default lineproto.DefaultMaxRejectBytes
}

func (o *TCPOptions) setDefaults() error {
	if o.Addr == "" {
		o.Addr = DefaultTCPAddr
	}
	def(&o.MaxConnections, DefaultMaxConnections)
	def(&o.MaxLineBytes, DefaultMaxLineBytes)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	def(&o.BatchLines, DefaultBatchLines)
	def(&o.BatchDelay, DefaultBatchDelay)
	def(&o.RetryDelay, DefaultRetryDelay)
	def(&o.Precision, time.Nanosecond)
	def(&o.ReadBytes, DefaultReadBytes)
	def(&o.MaxRejectBytes, lineproto.DefaultMaxRejectBytes)
	if o.MaxConnections < 0 || o.MaxLineBytes < 0 || o.IdleTimeout < 0 || o.BatchLines < 0 || o.BatchDelay < 0 ||
		o.RetryDelay < 0 || o.Precision < 0 || o.ReadBytes < 0 || o.MaxRejectBytes < 0 {
		return fmt.Errorf("tcp input: negative option in %+v: use 0 for the default or a positive value", *o)
	}
	return nil
}

func def[T int | time.Duration](v *T, d T) {
	if *v == 0 {
		*v = d
	}
}

// TCP is a line-protocol listener for newline-delimited TCP streams.
type TCP struct {
	opts     TCPOptions
	sink     inputs.Sink
	counters *inputs.Counters
	log      *slog.Logger
	ctx      context.Context // ends when Stop gives up waiting: aborts retries
	cancel   context.CancelFunc
	ln       net.Listener
	bufs     sync.Pool

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	stopping atomic.Bool
	wg       sync.WaitGroup
}

// NewTCP returns a TCP listener writing to sink; Start starts it. counters
// are this input's (nil: counted privately); a nil log discards.
func NewTCP(opts TCPOptions, sink inputs.Sink, counters *inputs.Counters, log *slog.Logger) (*TCP, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if counters == nil {
		counters = new(inputs.Counters) // counted, but seen by no one
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &TCP{opts: opts, sink: sink, counters: counters, log: discardLogger(log).With("input", "tcp"),
		ctx: ctx, cancel: cancel, conns: make(map[net.Conn]struct{})}
	// A buffer holds one read and the line it may cut, whole.
	size := opts.ReadBytes + opts.MaxLineBytes + 1
	t.bufs.New = func() any { b := make([]byte, 0, size); return &b }
	return t, nil
}

// Start listens and serves connections in the background.
func (t *TCP) Start() error {
	ln, err := net.Listen("tcp", t.opts.Addr)
	if err != nil {
		return fmt.Errorf("tcp input: cannot listen on %s: %w (set another address or free the port)", t.opts.Addr, err)
	}
	t.ln = ln
	t.log.Info("listening for line protocol", "addr", ln.Addr().String())
	t.wg.Add(1)
	go t.accept()
	return nil
}

// Addr is the address listened on, once started.
func (t *TCP) Addr() net.Addr { return t.ln.Addr() }

// Stop stops accepting, stops reading every connection, and waits until what
// was read is stored. If ctx ends first, batches still pushed back are
// dropped (and counted) and Stop returns ctx.Err().
func (t *TCP) Stop(ctx context.Context) error {
	t.mu.Lock()
	t.stopping.Store(true)
	for c := range t.conns {
		// Wakes the reader; what it read is still parsed and stored.
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}
	t.mu.Unlock()
	if t.ln != nil {
		_ = t.ln.Close()
	}
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		t.cancel()
		return nil
	case <-ctx.Done():
		t.cancel()
		<-done
		return ctx.Err()
	}
}

func (t *TCP) accept() {
	defer t.wg.Done()
	var backoff time.Duration
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t.log.Warn("accept failed; retrying", "err", err, "after", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		t.mu.Lock()
		if t.stopping.Load() || len(t.conns) >= t.opts.MaxConnections {
			t.mu.Unlock()
			t.counters.ConnectionsRefused.Add(1)
			t.log.Warn("connection refused: at the connection limit", "peer", c.RemoteAddr().String(),
				"max_connections", t.opts.MaxConnections)
			_ = c.Close()
			continue
		}
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		t.counters.ConnectionsAccepted.Add(1)
		t.counters.Connections.Add(1)
		go t.serve(c)
	}
}

// chunk is complete lines read from a connection, and the rejects of
// over-long lines cut out of them.
type chunk struct {
	buf       *[]byte
	firstLine int
	rejects   []storage.Reject
}

// serve runs a connection: this goroutine reads and cuts lines, another
// parses and writes them. The channel between them holds one chunk, so that
// while a batch is retried the reader stops and TCP flow control slows the
// sender.
func (t *TCP) serve(c net.Conn) {
	peer := c.RemoteAddr().String()
	log := t.log.With("peer", peer)
	chunks := make(chan chunk, 1)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if err := t.write(chunks, peer); err != nil {
			// The sink failed for good, or Stop gave up: close so that the
			// sender sees it, and count what is left as dropped.
			_ = c.Close()
			for ck := range chunks {
				n := countLines(*ck.buf) + uint64(len(ck.rejects))
				t.counters.ReceivedPoints.Add(n)
				t.counters.DroppedPoints.Add(n)
				t.bufs.Put(ck.buf)
			}
		}
	}()
	err := t.read(c, chunks, peer)
	close(chunks)
	<-writerDone
	_ = c.Close()
	t.mu.Lock()
	delete(t.conns, c)
	stopping := t.stopping.Load()
	t.mu.Unlock()
	t.counters.Connections.Add(-1)
	var ne net.Error
	switch {
	case err == nil, stopping, errors.Is(err, net.ErrClosed):
	case errors.As(err, &ne) && ne.Timeout():
		log.Info("closing idle connection", "idle_timeout", t.opts.IdleTimeout)
	default:
		log.Info("connection ended", "err", err)
	}
	t.wg.Done()
}

// read reads c until it ends, sending complete lines to chunks. It returns
// nil at EOF.
func (t *TCP) read(c net.Conn, chunks chan<- chunk, peer string) error {
	maxLine := t.opts.MaxLineBytes
	lc := lineCutter{maxLine: maxLine, line: 1}
	var tail []byte // an incomplete line carried to the next read
	lastLine := time.Now()
	for {
		bp := t.bufs.Get().(*[]byte)
		buf := append((*bp)[:0], tail...)
		if err := c.SetReadDeadline(lastLine.Add(t.opts.IdleTimeout)); err != nil {
			return err
		}
		var n int
		var err error
		if t.stopping.Load() {
			// Stop's deadline may have come before ours: do not wait.
			err = os.ErrDeadlineExceeded
		} else {
			n, err = c.Read(buf[len(buf):cap(buf)])
		}
		buf = buf[:len(buf)+n]
		t.counters.ReceivedBytes.Add(uint64(n))
		if err != nil {
			if (len(buf) > 0 || lc.skipping) && (errors.Is(err, io.EOF) || isTimeout(err)) {
				// The last line needs no newline.
				buf = append(buf, '\n')
			} else {
				buf = buf[:0]
			}
		}
		var ck chunk
		ck.firstLine = lc.line
		var complete []byte
		complete, tail = lc.cut(buf, tail[:0], func(line int, payload []byte) {
			t.counters.Oversize.Add(1)
			ck.rejects = append(ck.rejects, storage.Reject{
				Time: time.Now().UnixNano(), Source: "tcp", Origin: peer, Line: line,
				Reason:  fmt.Sprintf("line longer than max_line_bytes (%d); skipped to the next newline", maxLine),
				Payload: bytes.Clone(payload[:min(len(payload), t.opts.MaxRejectBytes)]),
			})
		})
		buf = complete
		if lc.line > ck.firstLine {
			lastLine = time.Now()
		}
		if len(buf) > 0 || len(ck.rejects) > 0 {
			*bp = buf
			ck.buf = bp
			chunks <- ck
			// Time blocked here, while the sink pushed back, is not idle time.
			lastLine = time.Now()
		} else {
			t.bufs.Put(bp)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// lineCutter cuts a stream into whole lines, and cuts out the lines over
// maxLine bytes, skipping them to their newline.
type lineCutter struct {
	maxLine  int
	line     int  // number of the next line
	skipping bool // discarding the rest of an over-long line
}

// cut takes buf, the tail of the last call followed by new bytes, and
// returns its whole lines (a prefix of buf, over-long lines emptied in place
// so that line numbers hold) and its incomplete last line, appended to tail.
// reject is called with the number and the start of each over-long line.
func (lc *lineCutter) cut(buf, tail []byte, reject func(line int, payload []byte)) (complete, newTail []byte) {
	start := 0
	for start < len(buf) {
		i := bytes.IndexByte(buf[start:], '\n')
		if lc.skipping {
			if i < 0 {
				buf = buf[:start]
				break
			}
			// Keep the newline: it ends the rejected line.
			copy(buf[start:], buf[start+i:])
			buf = buf[:len(buf)-i]
			lc.skipping = false
			continue
		}
		end := start + i
		if i < 0 {
			end = len(buf)
		}
		if end-start > lc.maxLine {
			reject(lc.line+bytes.Count(buf[:start], []byte{'\n'}), buf[start:start+lc.maxLine])
			if i < 0 {
				buf = buf[:start]
				lc.skipping = true
				break
			}
			copy(buf[start:], buf[end:])
			buf = buf[:len(buf)-(end-start)]
			continue
		}
		if i < 0 {
			break
		}
		start = end + 1
	}
	cut := bytes.LastIndexByte(buf, '\n') + 1
	lc.line += bytes.Count(buf[:cut], []byte{'\n'})
	return buf[:cut], append(tail, buf[cut:]...)
}

// write parses the chunks into batches and stores them, flushing on size
// and on BatchDelay. It returns the sink's error when a batch failed other
// than by backpressure.
func (t *TCP) write(chunks <-chan chunk, peer string) error {
	b := batcher{sink: t.sink, counters: t.counters, log: t.log.With("peer", peer)}
	b.batch.Normalized = true // it holds lineproto.Parse's points only
	meta := lineproto.Meta{Source: "tcp", Origin: peer, Precision: t.opts.Precision, MaxRejectBytes: t.opts.MaxRejectBytes}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	flush := func() error {
		timer.Stop()
		return b.flush(t.ctx, true, t.opts.RetryDelay)
	}
	for {
		select {
		case ck, ok := <-chunks:
			if !ok {
				return flush()
			}
			wasEmpty := b.size() == 0
			meta.Received, meta.FirstLine = time.Now(), ck.firstLine
			b.batch.Rejects = append(b.batch.Rejects, ck.rejects...)
			n, r := lineproto.Parse(&b.batch, *ck.buf, meta)
			t.bufs.Put(ck.buf)
			t.counters.ReceivedPoints.Add(uint64(n + r + len(ck.rejects)))
			if b.size() >= t.opts.BatchLines {
				if err := flush(); err != nil {
					return err
				}
			} else if wasEmpty && b.size() > 0 {
				timer.Reset(t.opts.BatchDelay)
			}
		case <-timer.C:
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
