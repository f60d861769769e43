package socket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/lineproto"
	"github.com/fpagent/fpagent/storage"
)

// UDP defaults applied to zero option values.
const (
	DefaultUDPAddr          = "127.0.0.1:8089"
	DefaultMaxDatagramBytes = 64 << 10
	DefaultQueueDatagrams   = 1024
)

// UDPOptions configure a UDP listener. Zero values take the defaults.
type UDPOptions struct {
	Addr             string        // listen address; default DefaultUDPAddr
	ReadBufferBytes  int           // socket receive buffer (SO_RCVBUF, capped by the kernel's net.core.rmem_max); default: the system's
	MaxDatagramBytes int           // longer datagrams are truncated by the kernel and rejected; default 64 KiB
	QueueDatagrams   int           // datagrams waiting between the reader and the writer; more are dropped; default 1024
	BatchLines       int           // lines per batch; default 5000
	BatchDelay       time.Duration // a batch waits no longer than this for more lines; default 10 ms
	Precision        time.Duration // timestamp unit (see lineproto.ParsePrecision); default ns
	MaxRejectBytes   int           // bytes of a bad line kept with its reject; default lineproto.DefaultMaxRejectBytes
}

func (o *UDPOptions) setDefaults() error {
	if o.Addr == "" {
		o.Addr = DefaultUDPAddr
	}
	def(&o.MaxDatagramBytes, DefaultMaxDatagramBytes)
	def(&o.QueueDatagrams, DefaultQueueDatagrams)
	def(&o.BatchLines, DefaultBatchLines)
	def(&o.BatchDelay, DefaultBatchDelay)
	def(&o.Precision, time.Nanosecond)
	def(&o.MaxRejectBytes, lineproto.DefaultMaxRejectBytes)
	if o.ReadBufferBytes < 0 || o.MaxDatagramBytes < 0 || o.QueueDatagrams < 0 || o.BatchLines < 0 ||
		o.BatchDelay < 0 || o.Precision < 0 || o.MaxRejectBytes < 0 {
		return fmt.Errorf("udp input: negative option in %+v: use 0 for the default or a positive value", *o)
	}
	return nil
}

// UDP is a line-protocol listener for datagrams of one or more lines.
type UDP struct {
	opts     UDPOptions
	sink     inputs.Sink
	counters *inputs.Counters
	log      *slog.Logger
	ctx      context.Context
	cancel   context.CancelFunc
	conn     *net.UDPConn
	queue    chan datagram
	bufs     sync.Pool
	wg       sync.WaitGroup

	kernelDrops func() (uint64, error) // nil where the kernel's count cannot be read
	stopPoll    chan struct{}
	stopOnce    sync.Once // Stop may be called more than once
	polled      chan struct{}
	lastWarned  time.Time // of the last kernel-drop warning; the poller's own
}

// kernelDropsPoll is how often the kernel's drop count is read, and
// kernelDropsWarnEvery how often at most its growth is logged.
const (
	kernelDropsPoll      = time.Second
	kernelDropsWarnEvery = time.Minute
)

type datagram struct {
	buf  *[]byte
	peer netip.AddrPort
	at   time.Time
}

// NewUDP returns a UDP listener writing to sink; Start starts it. counters
// are this input's (nil: counted privately); a nil log discards.
func NewUDP(opts UDPOptions, sink inputs.Sink, counters *inputs.Counters, log *slog.Logger) (*UDP, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if counters == nil {
		counters = new(inputs.Counters) // counted, but seen by no one
	}
	ctx, cancel := context.WithCancel(context.Background())
	u := &UDP{opts: opts, sink: sink, counters: counters, log: discardLogger(log).With("input", "udp"),
		ctx: ctx, cancel: cancel, queue: make(chan datagram, opts.QueueDatagrams)}
	// One byte more than the limit tells a truncated datagram.
	size := opts.MaxDatagramBytes + 1
	u.bufs.New = func() any { b := make([]byte, size); return &b }
	return u, nil
}

// Start listens and serves datagrams in the background.
func (u *UDP) Start() error {
	addr, err := net.ResolveUDPAddr("udp", u.opts.Addr)
	if err != nil {
		return fmt.Errorf("udp input: bad address %q: %w", u.opts.Addr, err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return fmt.Errorf("udp input: cannot listen on %s: %w (set another address or free the port)", u.opts.Addr, err)
	}
	if u.opts.ReadBufferBytes > 0 {
		if err := conn.SetReadBuffer(u.opts.ReadBufferBytes); err != nil {
			_ = conn.Close()
			return fmt.Errorf("udp input: cannot set read buffer to %d bytes: %w", u.opts.ReadBufferBytes, err)
		}
	}
	u.conn = conn
	u.log.Info("listening for line protocol", "addr", conn.LocalAddr().String())
	u.wg.Add(2)
	go u.read()
	go u.write()
	u.stopPoll, u.polled = make(chan struct{}), make(chan struct{})
	if kc, err := newUDPDropCounter(conn); err != nil {
		u.log.Info("datagrams the kernel drops for a full receive buffer are not counted", "reason", err)
		close(u.polled)
	} else {
		u.kernelDrops = kc.drops
		go u.pollKernelDrops()
	}
	return nil
}

// pollKernelDrops keeps the KernelDrops counter current and warns when the
// kernel drops datagrams, which the agent never sees otherwise.
func (u *UDP) pollKernelDrops() {
	defer close(u.polled)
	t := time.NewTicker(kernelDropsPoll)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			u.readKernelDrops()
		case <-u.stopPoll:
			return
		}
	}
}

func (u *UDP) readKernelDrops() {
	d, err := u.kernelDrops()
	if err != nil {
		return // the socket is closing, or /proc is gone: keep the last count
	}
	prev := u.counters.KernelDrops.Swap(d)
	if d > prev && time.Since(u.lastWarned) >= kernelDropsWarnEvery {
		u.lastWarned = time.Now()
		buf := "the system's default"
		if u.opts.ReadBufferBytes > 0 {
			buf = fmt.Sprintf("%d bytes", u.opts.ReadBufferBytes)
		}
		u.log.Warn("the kernel dropped datagrams: the socket's receive buffer was full; raise inputs.udp.read_buffer (and net.core.rmem_max, which caps it)",
			"dropped", d-prev, "dropped_total", d, "read_buffer", buf)
	}
}

// Addr is the address listened on, once started.
func (u *UDP) Addr() net.Addr { return u.conn.LocalAddr() }

// Stop stops reading and waits until the queued datagrams are stored (or
// dropped, when the sink pushes back). If ctx ends first, Stop returns
// ctx.Err() and what is left is dropped and counted.
func (u *UDP) Stop(ctx context.Context) error {
	if u.stopPoll != nil {
		u.stopOnce.Do(func() {
			close(u.stopPoll)
			<-u.polled
			if u.kernelDrops != nil {
				u.readKernelDrops() // the last count, while the socket is still there
			}
		})
	}
	if u.conn != nil {
		_ = u.conn.Close()
	}
	done := make(chan struct{})
	go func() { u.wg.Wait(); close(done) }()
	select {
	case <-done:
		u.cancel()
		return nil
	case <-ctx.Done():
		u.cancel()
		<-done
		return ctx.Err()
	}
}

func (u *UDP) read() {
	defer u.wg.Done()
	defer close(u.queue)
	for {
		bp := u.bufs.Get().(*[]byte)
		n, peer, err := u.conn.ReadFromUDPAddrPort((*bp)[:cap(*bp)])
		if err != nil {
			u.bufs.Put(bp)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			u.log.Warn("read failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		u.counters.Payloads.Add(1)
		u.counters.ReceivedBytes.Add(uint64(n))
		*bp = (*bp)[:n]
		select {
		case u.queue <- datagram{buf: bp, peer: peer, at: time.Now()}:
		default:
			lines := countLines(*bp)
			u.counters.ReceivedPoints.Add(lines)
			u.counters.DroppedPoints.Add(lines)
			u.bufs.Put(bp)
		}
	}
}

// countLines counts the lines of a datagram dropped unparsed: its newlines,
// and one more for a last line without one.
func countLines(b []byte) uint64 {
	n := bytes.Count(b, []byte{'\n'})
	if len(b) > 0 && b[len(b)-1] != '\n' {
		n++
	}
	return uint64(n)
}

func (u *UDP) write() {
	defer u.wg.Done()
	b := batcher{sink: u.sink, counters: u.counters, log: u.log}
	b.batch.Normalized = true // it holds lineproto.Parse's points only
	meta := lineproto.Meta{Source: "udp", Precision: u.opts.Precision, MaxRejectBytes: u.opts.MaxRejectBytes}
	var lastPeer netip.AddrPort
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	flush := func() {
		timer.Stop()
		_ = b.flush(u.ctx, false, 0)
	}
	for {
		select {
		case d, ok := <-u.queue:
			if !ok {
				flush()
				return
			}
			if d.peer != lastPeer || meta.Origin == "" {
				lastPeer, meta.Origin = d.peer, d.peer.String()
			}
			wasEmpty := b.size() == 0
			data := *d.buf
			meta.Received = d.at
			if len(data) > u.opts.MaxDatagramBytes {
				// The kernel cut it: its last line is not whole, so it is
				// rejected rather than stored cut.
				u.counters.Oversize.Add(1)
				data = data[:u.opts.MaxDatagramBytes]
				cut := bytes.LastIndexByte(data, '\n') + 1
				b.batch.Rejects = append(b.batch.Rejects, storage.Reject{
					Time: d.at.UnixNano(), Source: "udp", Origin: meta.Origin,
					Line:    bytes.Count(data[:cut], []byte{'\n'}) + 1,
					Reason:  fmt.Sprintf("datagram longer than max_datagram_bytes (%d): the kernel cut this line", u.opts.MaxDatagramBytes),
					Payload: bytes.Clone(data[cut:min(len(data), cut+u.opts.MaxRejectBytes)]),
				})
				u.counters.ReceivedPoints.Add(1)
				data = data[:cut]
			}
			n, r := lineproto.Parse(&b.batch, data, meta)
			u.bufs.Put(d.buf)
			u.counters.ReceivedPoints.Add(uint64(n + r))
			if b.size() >= u.opts.BatchLines {
				flush()
			} else if wasEmpty && b.size() > 0 {
				timer.Reset(u.opts.BatchDelay)
			}
		case <-timer.C:
			flush()
		}
	}
}
