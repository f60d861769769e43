// Package mqtt subscribes to MQTT topics and stores the readings of each
// message, acknowledging a QoS 1 or 2 message only once its readings are
// durable (the sink returned nil), and in the order messages arrived. A crash
// therefore leaves every unstored message with the broker, which delivers it
// again on reconnect (persistent session, the default).
//
// Flow: paho calls the handler for each message, one at a time, in arrival
// order. The handler takes one of MaxInflight slots (blocking when all are
// taken, which stalls paho's reading and so the broker's flow) and queues the
// message. One goroutine drains the queue into a batch, parses each message,
// writes the batch with one WriteBatch (one fsync for many messages), then
// acks the batch's messages in order and frees their slots. When the sink
// pushes back, the same batch is retried after the hinted delay, unacked. A
// message that cannot be read becomes a reject in the batch (dead-lettered
// with its topic and reason) and is then acked like any other, so it never
// stalls the subscription.
package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/lineproto"
	"github.com/fpagent/fpagent/storage"
)

// Source is the source label of MQTT readings and rejects.
const Source = "mqtt"

// Defaults applied to zero option values.
const (
	DefaultKeepalive       = 30 * time.Second
	DefaultConnectTimeout  = 10 * time.Second
	DefaultMaxInflight     = 1000
	DefaultMaxPayloadBytes = 1 << 20
	DefaultReconnectMin    = time.Second
	DefaultReconnectMax    = 30 * time.Second
	DefaultRetryDelay      = time.Second // after a failed write without a hint
	maxRetryDelay          = 30 * time.Second
	disconnectQuiesce      = time.Second
)

// Subscription is one topic filter and how to read its payloads.
type Subscription struct {
	Topic  string // filter; + is one level, # the rest
	QoS    byte   // 0, 1 or 2
	Format string // influx (default), json or value
	// TopicPattern names topic levels, e.g. sensors/{site}/{device}/{measurement}:
	// {measurement} names the readings, any other {name} becomes a tag,
	// other levels (+, literals) are skipped.
	TopicPattern string
	Measurement  string   // for json and value payloads, unless the pattern names one
	TagKeys      []string // json keys (flattened names, a_b) that become tags
	TimeKey      string   // json key holding the time; "" = the receive time
	TimeFormat   string   // unix, unix_ms, unix_us, unix_ns, rfc3339 or a Go layout; "" = unix for numbers, rfc3339 for strings
	TopicTag     string   // tag that receives the whole topic; "" = none
}

// Options configure the input. Zero values take the defaults above.
type Options struct {
	Brokers        []string // tcp://, ssl://, ws://, wss:// URLs; paho tries them in order
	ClientID       string   // "" = DefaultClientID()
	Username       string
	Password       string
	CleanSession   bool // false (default): the broker keeps the session and queues while the agent is away
	Keepalive      time.Duration
	ConnectTimeout time.Duration
	// MaxInflight bounds the messages received and not yet acknowledged;
	// it is also the most messages in one batch.
	MaxInflight     int
	MaxPayloadBytes int // larger payloads are dead-lettered
	MaxRejectBytes  int // how much of a bad payload its reject keeps; 0 = lineproto.DefaultMaxRejectBytes
	ReconnectMin    time.Duration
	ReconnectMax    time.Duration
	RetryDelay      time.Duration // wait after a failed write that carries no hint
	TLS             TLSOptions
	Subscriptions   []Subscription
}

// DefaultClientID is a client id that stays the same across restarts of the
// agent on this host, so that its persistent session (and the messages the
// broker queued for it) is found again: fpagent-<hostname>.
func DefaultClientID() (string, error) {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "", fmt.Errorf("cannot derive a client id from the host name (%v); set inputs.mqtt.client_id", err)
	}
	var b strings.Builder
	b.WriteString("fpagent-")
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String(), nil
}

// State is the input's connection state, for /ready, /stats and /metrics.
type State struct {
	Connected  bool      `json:"connected"` // connected and subscribed
	Reason     string    `json:"reason"`    // what it is doing, or why it is not connected
	Broker     string    `json:"broker"`    // the broker it is connected or connecting to
	Since      time.Time `json:"since"`     // when Connected last changed
	Connects   uint64    `json:"connects"`  // successful connects
	Reconnects uint64    `json:"reconnects"`
	Inflight   int       `json:"inflight"` // messages received and not yet acknowledged
}

// item is one received message waiting to be stored and acked.
type item struct {
	msg  Message
	recv time.Time
	size int // of the payload
}

// batch is the messages of one WriteBatch.
type batch struct {
	items []item
	bytes int // payload bytes
}

func (b *batch) reset() { b.items, b.bytes = b.items[:0], 0 }

func (b *batch) add(it item) {
	b.items = append(b.items, it)
	b.bytes += it.size
}

// full reports whether b may take no more messages: MaxInflight of them, or
// maxBatchBytes of payload.
func (b *batch) full() bool { return len(b.items) == cap(b.items) || b.bytes >= maxBatchBytes }

// maxBatchBytes ends a batch once its payloads reach it. One fsync for more
// gains little, and the WAL and storage keep their buffers for reuse only up
// to 4 MiB: at 100 points per message a batch took up to ~590 messages
// (5.5 MB), and each one then allocated, grew and copied its buffers anew
// (growslice and memmove were a fifth of the agent's CPU).
const maxBatchBytes = 1 << 20

// Input is the MQTT input. Start it once; Stop it once.
type Input struct {
	opt      Options
	subs     []*subscription
	sink     inputs.Sink
	counters *inputs.Counters
	log      *slog.Logger
	parser   parser
	client   client

	slots    chan struct{} // MaxInflight slots; a message holds one until acked
	queue    chan item
	window   window        // the broker's window as the drain loop sees it
	stopping chan struct{} // closed by Stop: take no more messages
	done     chan struct{} // closed when the drain loop has returned
	stopOnce sync.Once
	writeCtx context.Context // cancelled when Stop's ctx ends
	cancel   context.CancelFunc

	mu    sync.Mutex
	state State
	conn  atomic.Bool
}

// New checks o and builds the input; it does not connect yet.
func New(o Options, sink inputs.Sink, counters *inputs.Counters, log *slog.Logger) (*Input, error) {
	return newInput(o, sink, counters, log, newPahoClient)
}

func newInput(o Options, sink inputs.Sink, counters *inputs.Counters, log *slog.Logger,
	dial func(*Options, events) (client, error)) (*Input, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if counters == nil {
		counters = new(inputs.Counters)
	}
	if len(o.Brokers) == 0 {
		return nil, errors.New("no broker; list one such as tcp://127.0.0.1:1883")
	}
	if len(o.Subscriptions) == 0 {
		return nil, errors.New("no subscription; list a topic filter such as sensors/#")
	}
	if o.ClientID == "" {
		id, err := DefaultClientID()
		if err != nil {
			return nil, err
		}
		o.ClientID = id
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Keepalive, DefaultKeepalive)
	def(&o.ConnectTimeout, DefaultConnectTimeout)
	def(&o.ReconnectMin, DefaultReconnectMin)
	def(&o.ReconnectMax, DefaultReconnectMax)
	def(&o.RetryDelay, DefaultRetryDelay)
	if o.MaxInflight <= 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.MaxPayloadBytes <= 0 {
		o.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if o.MaxRejectBytes <= 0 {
		o.MaxRejectBytes = lineproto.DefaultMaxRejectBytes
	}
	in := &Input{opt: o, sink: sink, counters: counters, log: log.With("input", Source),
		parser:   parser{maxRejectBytes: o.MaxRejectBytes},
		slots:    make(chan struct{}, o.MaxInflight),
		queue:    make(chan item, o.MaxInflight),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
	}
	in.writeCtx, in.cancel = context.WithCancel(context.Background())
	for i, s := range o.Subscriptions {
		c, err := compileSubscription(s)
		if err != nil {
			return nil, fmt.Errorf("subscriptions[%d]: %w", i, err)
		}
		in.subs = append(in.subs, c)
	}
	c, err := dial(&in.opt, events{
		onConnect: in.onConnect, onLost: in.onLost, onReconnecting: in.onReconnecting,
		onBroker: in.onBroker, onMessage: in.onMessage,
	})
	if err != nil {
		return nil, err
	}
	in.client = c
	in.state = State{Reason: "not started", Since: time.Now()}
	return in, nil
}

// ClientID is the client id the input connects with.
func (in *Input) ClientID() string { return in.opt.ClientID }

// Start starts the drain loop and connecting; it returns at once. The
// client keeps retrying until the broker answers; see State.
func (in *Input) Start() error {
	in.setState(func(s *State) { s.Reason = "connecting" })
	go in.drain()
	in.client.Connect()
	return nil
}

// Stop stops taking messages, waits until the batch in flight is written
// and acknowledged (or ctx ends: then what is unacked stays with the broker),
// then disconnects. The session stays subscribed at the broker, so that it
// keeps queuing for the next start.
func (in *Input) Stop(ctx context.Context) error {
	var err error
	in.stopOnce.Do(func() {
		close(in.stopping)
		select {
		case <-in.done:
		case <-ctx.Done():
			in.cancel()
			<-in.done
			err = fmt.Errorf("stopping the MQTT input: %w; unacknowledged messages stay with the broker", ctx.Err())
		}
		in.cancel()
		in.client.Disconnect(disconnectQuiesce)
		in.conn.Store(false)
		in.counters.Connections.Store(0)
		in.setState(func(s *State) { s.Connected, s.Reason, s.Since = false, "stopped", time.Now() })
	})
	return err
}

// Connected reports whether the input is connected and subscribed.
func (in *Input) Connected() bool { return in.conn.Load() }

// State returns a copy of the connection state.
func (in *Input) State() State {
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.state
	s.Inflight = len(in.slots)
	return s
}

// Ready is the input's part of /ready: connected and subscribed, or why not.
func (in *Input) Ready() (bool, string) {
	s := in.State()
	if s.Connected {
		return true, ""
	}
	msg := "mqtt: " + s.Reason
	if s.Broker != "" {
		msg += " (" + s.Broker + ")"
	}
	return false, msg
}

func (in *Input) setState(f func(*State)) {
	in.mu.Lock()
	f(&in.state)
	in.mu.Unlock()
}

func (in *Input) onBroker(b string) {
	in.setState(func(s *State) { s.Broker = b })
}

// onConnect subscribes on every connect, so that a broker that lost the
// session (restarted without persistence, or clean_session) gets the
// subscriptions again. It runs in its own goroutine (paho starts one).
func (in *Input) onConnect() {
	in.counters.ConnectionsAccepted.Add(1)
	in.setState(func(s *State) {
		s.Connects++
		if s.Connects > 1 {
			s.Reconnects++
		}
		s.Reason = "subscribing"
	})
	filters := make(map[string]byte, len(in.subs))
	for _, s := range in.subs {
		if q, ok := filters[s.Topic]; !ok || s.QoS > q {
			filters[s.Topic] = s.QoS
		}
	}
	delay := in.opt.ReconnectMin
	for {
		err := in.client.Subscribe(filters, in.opt.ConnectTimeout)
		if err == nil {
			break
		}
		in.log.Error("cannot subscribe; retrying", "err", err, "retry_in", delay)
		in.setState(func(s *State) { s.Reason = "subscribe failed: " + err.Error() })
		select {
		case <-in.stopping:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, in.opt.ReconnectMax)
	}
	in.conn.Store(true)
	in.counters.Connections.Store(1)
	var st State
	in.setState(func(s *State) {
		s.Connected, s.Since = true, time.Now()
		s.Reason = fmt.Sprintf("subscribed to %d topic filters", len(filters))
		st = *s
	})
	in.log.Info("connected and subscribed", "broker", st.Broker, "client_id", in.opt.ClientID,
		"filters", len(filters), "clean_session", in.opt.CleanSession, "reconnects", st.Reconnects)
}

func (in *Input) onLost(err error) {
	in.conn.Store(false)
	in.counters.Connections.Store(0)
	in.setState(func(s *State) {
		s.Connected, s.Since = false, time.Now()
		s.Reason = "connection lost: " + err.Error() + "; reconnecting"
	})
	in.log.Warn("connection to the broker lost; reconnecting (unacknowledged messages will be delivered again)", "err", err)
}

func (in *Input) onReconnecting() {
	in.setState(func(s *State) {
		if !strings.HasPrefix(s.Reason, "connection lost") {
			s.Reason = "reconnecting"
		}
	})
}

// onMessage is paho's handler: it waits for a slot and queues the message.
// Blocking here stops paho reading, which is how the broker is slowed.
func (in *Input) onMessage(m Message) {
	select {
	case <-in.stopping:
		return // not acked: the broker delivers it again next session
	default:
	}
	select {
	case in.slots <- struct{}{}:
	case <-in.stopping:
		return
	}
	in.queue <- item{msg: m, recv: time.Now(), size: len(m.Payload())} // never blocks: the queue has a place per slot
}

// drain takes queued messages in batches, stores and acks them, until Stop.
func (in *Input) drain() {
	defer close(in.done)
	bt := batch{items: make([]item, 0, in.opt.MaxInflight)}
	// Every format's points are normalized, their keys made by SeriesKey
	// (FuzzParse checks it).
	b := storage.Batch{Source: Source, Normalized: true}
	for {
		bt.reset()
		select {
		case it := <-in.queue:
			bt.add(it)
		case <-in.stopping:
			// Store what was already taken, then stop.
			for {
				in.takeQueued(&bt)
				if len(bt.items) == 0 {
					return
				}
				in.store(&b, bt.items)
				bt.reset()
			}
		}
		in.gather(&bt)
		in.store(&b, bt.items)
	}
}

// A broker sends a subscriber a window of unacknowledged QoS 1 messages
// (mosquitto: max_inflight_messages) and refills it, one message after the
// other, as the acknowledgements come in. A batch taken as soon as the
// first message of a refill arrives holds only part of it, and the rest
// waits for the next fsync: at one point per message through mosquitto,
// 12-15 messages per fsync. So gather learns the window (the most messages
// a recent batch held) and waits, up to gatherMax, until a batch is that
// large: 43-57 messages per fsync. Since it takes everything queued first,
// a larger window is learned at once; a smaller one after windowMemory
// batches.
const (
	gatherMax    = 500 * time.Microsecond
	windowMemory = 16
)

// takeQueued adds to b what is queued now, until b is full.
func (in *Input) takeQueued(b *batch) {
	for !b.full() {
		select {
		case it := <-in.queue:
			b.add(it)
		default:
			return
		}
	}
}

// gather adds to b what is queued and, while b is smaller than the window
// learned, what arrives within gatherMax.
func (in *Input) gather(b *batch) {
	var timer *time.Timer
	for {
		in.takeQueued(b)
		if b.full() || len(b.items) >= in.window.size() {
			break
		}
		if timer == nil {
			timer = time.NewTimer(gatherMax)
			defer timer.Stop()
		}
		select {
		case it := <-in.queue:
			b.add(it)
			continue
		case <-timer.C:
		case <-in.stopping:
		}
		break
	}
	in.window.note(len(b.items))
}

// window is the largest batch of the last windowMemory batches.
type window struct {
	recent [windowMemory]int
	next   int
}

func (w *window) note(n int) {
	w.recent[w.next] = n
	w.next = (w.next + 1) % len(w.recent)
}

func (w *window) size() int {
	return max(1, slices.Max(w.recent[:]))
}

// store parses batch into b, writes it until it is durable (or Stop gives
// up), then acks each message in order and frees its slot.
func (in *Input) store(b *storage.Batch, batch []item) {
	clear(b.Points)
	clear(b.Rejects)
	b.Points, b.Rejects = b.Points[:0], b.Rejects[:0]
	for _, it := range batch {
		in.parse(b, it)
	}
	stored := in.write(b)
	if stored {
		in.counters.PersistedPoints.Add(uint64(len(b.Points)))
		in.counters.RejectedPoints.Add(uint64(len(b.Rejects)))
		for _, it := range batch {
			it.msg.Ack()
			<-in.slots
		}
		return
	}
	// Given up at Stop: nothing is acked, so the broker keeps QoS 1 and 2
	// messages for the next session; QoS 0 ones are lost and counted.
	in.counters.DroppedPoints.Add(uint64(len(b.Points) + len(b.Rejects)))
	for range batch {
		<-in.slots
	}
}

// parse appends one message's readings, or its reject, to b.
func (in *Input) parse(b *storage.Batch, it item) {
	topic, payload := it.msg.Topic(), it.msg.Payload()
	in.counters.Payloads.Add(1)
	in.counters.ReceivedBytes.Add(uint64(len(payload)))
	var points, rejects int
	sub := in.match(topic)
	switch {
	case len(payload) > in.opt.MaxPayloadBytes:
		in.counters.Oversize.Add(1)
		in.addReject(b, it, fmt.Sprintf("payload of %d bytes is over max_payload_size (%d bytes)", len(payload), in.opt.MaxPayloadBytes))
		rejects = 1
	case sub == nil:
		// Delivered for a subscription this config no longer has (a
		// persistent session made by an earlier config).
		in.addReject(b, it, "no subscription of this agent matches the topic (left in the broker's session by an earlier configuration?)")
		rejects = 1
	default:
		points, rejects = in.parser.parse(b, sub, topic, payload, it.recv)
	}
	in.counters.ReceivedPoints.Add(uint64(points + rejects))
}

func (in *Input) addReject(b *storage.Batch, it item, reason string) {
	p := it.msg.Payload()
	if len(p) > in.opt.MaxRejectBytes {
		p = p[:in.opt.MaxRejectBytes]
	}
	b.Rejects = append(b.Rejects, storage.Reject{Time: it.recv.UnixNano(), Source: Source,
		Origin: it.msg.Topic(), Reason: reason, Payload: append([]byte(nil), p...)})
}

// match returns the first subscription whose filter matches topic.
func (in *Input) match(topic string) *subscription {
	for _, s := range in.subs {
		if s.matches(topic) {
			return s
		}
	}
	return nil
}

// write writes b until the sink takes it. It retries the same batch after
// backpressure (after the hinted delay) and after failures (with a growing
// delay): the messages are not acked meanwhile, so nothing is lost. It gives
// up, returning false, only when Stop's deadline passes.
func (in *Input) write(b *storage.Batch) bool {
	delay := in.opt.RetryDelay
	for {
		err := in.sink.WriteBatch(in.writeCtx, b)
		if err == nil {
			return true
		}
		var wait time.Duration
		if errors.Is(err, storage.ErrBackpressure) {
			in.counters.Backpressure.Add(1)
			wait = storage.RetryAfter(err, in.opt.RetryDelay)
			in.log.Warn("storage pushes back; holding the batch unacknowledged and retrying", "messages", len(b.Points)+len(b.Rejects), "retry_in", wait, "err", err)
		} else {
			in.counters.WriteErrors.Add(1)
			wait = delay
			delay = min(2*delay, maxRetryDelay)
			in.log.Error("cannot store a batch; holding it unacknowledged and retrying", "points", len(b.Points), "rejects", len(b.Rejects), "retry_in", wait, "err", err)
		}
		if in.writeCtx.Err() != nil {
			return false
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-in.writeCtx.Done():
			t.Stop()
			return false
		}
	}
}
