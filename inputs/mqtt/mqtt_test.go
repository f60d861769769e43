package mqtt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/sinktest"
	"github.com/fpagent/fpagent/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// paho's and mochi's background goroutines end shortly after Disconnect/Close.
		goleak.IgnoreTopFunction("time.Sleep"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		// paho's Disconnect may return (after its quiesce) before its own
		// goroutine has finished, as its doc warns.
		goleak.IgnoreAnyFunction("github.com/eclipse/paho%2emqtt%2egolang.(*client).Disconnect.func1"),
	)
}

// fakeClient stands in for paho: Connect calls onConnect (in a goroutine, as
// paho does), deliver calls onMessage one message at a time.
type fakeClient struct {
	ev      events
	mu      sync.Mutex
	subs    []map[string]byte
	subErr  error
	journal *journal
}

func (f *fakeClient) Connect() { go f.ev.onConnect() }

func (f *fakeClient) Subscribe(filters map[string]byte, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(f.subs, filters)
	return f.subErr
}

func (f *fakeClient) Disconnect(time.Duration) { f.journal.add("disconnect") }

func (f *fakeClient) subscribeCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// journal records acks and other events in order.
type journal struct {
	mu     sync.Mutex
	events []string
	nacks  atomic.Int64 // events that are acks: what waitAcks polls, cheaply
}

func (j *journal) add(e string) {
	j.mu.Lock()
	j.events = append(j.events, e)
	j.mu.Unlock()
	if strings.HasPrefix(e, "ack ") {
		j.nacks.Add(1)
	}
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.events)
}

func (j *journal) acks() []string {
	var out []string
	for _, e := range j.list() {
		if strings.HasPrefix(e, "ack ") {
			out = append(out, strings.TrimPrefix(e, "ack "))
		}
	}
	return out
}

// fakeMsg acks into the journal, after checking (when set) that its
// readings are already in the sink.
type fakeMsg struct {
	id      string
	topic   string
	payload []byte
	qos     byte
	j       *journal
	durable func() bool
	acked   atomic.Int32
	bad     *atomic.Int32 // acks that came before the message was durable
}

func (m *fakeMsg) Topic() string   { return m.topic }
func (m *fakeMsg) Payload() []byte { return m.payload }
func (m *fakeMsg) Qos() byte       { return m.qos }
func (m *fakeMsg) Duplicate() bool { return false }
func (m *fakeMsg) Ack() {
	if m.acked.Add(1) > 1 {
		m.j.add("double ack " + m.id)
	}
	if m.durable != nil && !m.durable() {
		m.bad.Add(1)
	}
	m.j.add("ack " + m.id)
}

type rig struct {
	t     *testing.T
	in    *Input
	fc    *fakeClient
	sink  *sinktest.Sink
	c     *inputs.Counters
	j     *journal
	early atomic.Int32
	n     int // messages made so far
}

func newRig(t *testing.T, o Options) *rig {
	t.Helper()
	r := &rig{t: t, sink: sinktest.New(), c: new(inputs.Counters), j: &journal{}}
	if o.Brokers == nil {
		o.Brokers = []string{"tcp://127.0.0.1:1"}
	}
	if o.Subscriptions == nil {
		o.Subscriptions = []Subscription{{Topic: "s/#", QoS: 1}}
	}
	if o.ClientID == "" {
		o.ClientID = "test"
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = 5 * time.Millisecond
	}
	in, err := newInput(o, r.sink, r.c, nil, func(_ *Options, ev events) (client, error) {
		r.fc = &fakeClient{ev: ev, journal: r.j}
		return r.fc, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r.in = in
	if err := in.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Stop(context.Background()) })
	r.waitConnected()
	return r
}

func (r *rig) waitConnected() {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !r.in.Connected() {
		if time.Now().After(deadline) {
			r.t.Fatalf("not connected: %+v", r.in.State())
		}
		time.Sleep(time.Millisecond)
	}
}

// msg makes a message whose one reading has time = its number, so that the
// sink can be asked whether it holds it.
func (r *rig) msg(topic, payload string) *fakeMsg {
	r.n++
	id := fmt.Sprint(r.n)
	if payload == "" {
		payload = "m v=1 " + id
	}
	m := &fakeMsg{id: id, topic: topic, payload: []byte(payload), qos: 1, j: r.j, bad: &r.early}
	ts := int64(r.n)
	good := !strings.Contains(payload, "BAD")
	m.durable = func() bool {
		if !good {
			for _, rj := range r.sink.Rejects() {
				if string(rj.Payload) == payload {
					return true
				}
			}
			return false
		}
		return r.sink.HasPointAt(ts)
	}
	return m
}

// deliver hands messages to the input in order, as paho does, in a
// goroutine; the returned counter says how many handler calls returned.
func (r *rig) deliver(msgs ...*fakeMsg) *atomic.Int64 {
	var n atomic.Int64
	go func() {
		for _, m := range msgs {
			r.fc.ev.onMessage(m)
			n.Add(1)
		}
	}()
	return &n
}

func (r *rig) waitAcks(n int) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	// Polling the count, not the journal: copying thousands of events every
	// millisecond under -race starved the goroutines under test on a busy
	// machine (CI: 1982 of 2000 acks after 10 s of a test that takes 2 s).
	for r.j.nacks.Load() < int64(n) {
		if time.Now().After(deadline) {
			r.t.Fatalf("%d acks after 10s, want %d; state %+v", len(r.j.acks()), n, r.in.State())
		}
		time.Sleep(time.Millisecond)
	}
}

func ids(msgs []*fakeMsg) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.id)
	}
	return out
}

func TestAcksInOrderOnlyAfterDurable(t *testing.T) {
	r := newRig(t, Options{MaxInflight: 64})
	r.sink.Delay(2 * time.Millisecond) // batches form while a write is in flight
	var msgs []*fakeMsg
	for i := 0; i < 2000; i++ {
		msgs = append(msgs, r.msg("s/a", ""))
	}
	r.deliver(msgs...)
	r.waitAcks(len(msgs))
	if got := r.j.acks(); !slices.Equal(got, ids(msgs)) {
		t.Fatalf("acks out of order: first %v", got[:10])
	}
	if n := r.early.Load(); n != 0 {
		t.Fatalf("%d messages acked before their readings were durable", n)
	}
	if calls := r.sink.Calls(); calls >= len(msgs) {
		t.Errorf("%d WriteBatch calls for %d messages: no batching", calls, len(msgs))
	}
	s := r.c.Snapshot()
	if s.Payloads != 2000 || s.ReceivedPoints != 2000 || s.PersistedPoints != 2000 || s.RejectedPoints != 0 || s.DroppedPoints != 0 {
		t.Fatalf("counters %+v", s)
	}
	for _, e := range r.j.list() {
		if strings.HasPrefix(e, "double") {
			t.Fatal(e)
		}
	}
}

func TestNoAckWhileSinkFails(t *testing.T) {
	r := newRig(t, Options{})
	r.sink.Fail(errors.New("disk on fire"))
	msgs := []*fakeMsg{r.msg("s/a", ""), r.msg("s/a", ""), r.msg("s/a", "")}
	r.deliver(msgs...)
	deadline := time.Now().Add(5 * time.Second)
	for r.sink.Calls() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if r.sink.Calls() < 3 {
		t.Fatalf("the failed batch was not retried: %d calls", r.sink.Calls())
	}
	if a := r.j.acks(); len(a) != 0 {
		t.Fatalf("acked %v while the sink failed", a)
	}
	if r.c.WriteErrors.Load() == 0 {
		t.Error("write errors not counted")
	}
	r.sink.Fail(nil)
	r.waitAcks(3)
	if got := r.j.acks(); !slices.Equal(got, ids(msgs)) {
		t.Fatalf("acks %v", got)
	}
	if n := len(r.sink.Points()); n != 3 {
		t.Fatalf("sink holds %d points, want 3 (the batch is retried whole, once stored)", n)
	}
}

func TestBackpressureHoldsAcksAndRetriesSameBatch(t *testing.T) {
	r := newRig(t, Options{})
	r.sink.PushBack(3, 20*time.Millisecond)
	msgs := []*fakeMsg{r.msg("s/a", ""), r.msg("s/a", "")}
	start := time.Now()
	r.deliver(msgs...)
	r.waitAcks(2)
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("acked after %s: the retry hint (3 x 20ms) was not waited out", took)
	}
	if r.early.Load() != 0 {
		t.Fatal("acked before durable")
	}
	if got := r.c.Backpressure.Load(); got != 3 {
		t.Errorf("backpressure counted %d times, want 3", got)
	}
	if n := len(r.sink.Points()); n != 2 {
		t.Fatalf("sink holds %d points, want 2", n)
	}
}

func TestBadMessagesDeadLetteredAndAcked(t *testing.T) {
	r := newRig(t, Options{MaxPayloadBytes: 64, Subscriptions: []Subscription{
		{Topic: "s/lp", QoS: 1, Format: "influx"},
		{Topic: "s/js", QoS: 1, Format: "json", Measurement: "j", TimeKey: "t", TimeFormat: "unix"},
		{Topic: "s/v", QoS: 1, Format: "value", Measurement: "v"},
	}})
	good := func(topic, payload string) *fakeMsg { return r.msg(topic, payload) }
	var msgs []*fakeMsg
	msgs = append(msgs,
		good("s/lp", ""),
		r.msg("s/lp", "BAD line protocol"),
		good("s/js", fmt.Sprintf(`{"x": 1, "t": "%s"}`, "1")),
		r.msg("s/js", `{"BAD": json`),
		r.msg("s/js", `{"BAD": {"nested": null}, "t": 1}`),
		r.msg("s/js", `{"BAD": 1, "t": "yesterday"}`),
		r.msg("s/v", "BAD\x00\xff\xfe binary"),
		r.msg("s/lp", "BAD "+strings.Repeat("x", 100)),
		r.msg("other/topic", "BAD not subscribed"),
		good("s/lp", ""),
	)
	msgs[2].durable = nil // its time is 1s, not its number
	r.deliver(msgs...)
	r.waitAcks(len(msgs))
	if got := r.j.acks(); !slices.Equal(got, ids(msgs)) {
		t.Fatalf("acks %v", got)
	}
	if r.early.Load() != 0 {
		t.Fatal("acked before durable")
	}
	rej := r.sink.Rejects()
	if len(rej) != 7 {
		t.Fatalf("%d rejects, want 7: %+v", len(rej), rej)
	}
	wantReasons := []string{"", "invalid JSON", "no fields", "not a number", "not UTF-8", "over max_payload_size", "no subscription"}
	for i, rj := range rej {
		if rj.Source != "mqtt" || rj.Origin == "" || !strings.Contains(rj.Reason, wantReasons[i]) {
			t.Errorf("reject %d: %+v, want reason with %q", i, rj, wantReasons[i])
		}
	}
	s := r.c.Snapshot()
	if s.ReceivedPoints != s.PersistedPoints+s.RejectedPoints+s.DroppedPoints || s.PersistedPoints != 3 || s.RejectedPoints != 7 || s.Oversize != 1 || s.Payloads != 10 {
		t.Fatalf("counters %+v", s)
	}
}

func TestMaxInflightBoundsUnackedMessages(t *testing.T) {
	r := newRig(t, Options{MaxInflight: 5})
	r.sink.Fail(errors.New("stuck"))
	var msgs []*fakeMsg
	for i := 0; i < 20; i++ {
		msgs = append(msgs, r.msg("s/a", ""))
	}
	returned := r.deliver(msgs...)
	time.Sleep(100 * time.Millisecond)
	if n := returned.Load(); n != 5 {
		t.Fatalf("%d handler calls returned with max_inflight 5 and nothing stored; want 5 (the 6th blocks paho)", n)
	}
	if st := r.in.State(); st.Inflight != 5 {
		t.Fatalf("inflight %d, want 5", st.Inflight)
	}
	r.sink.Fail(nil)
	r.waitAcks(20)
	if got := r.j.acks(); !slices.Equal(got, ids(msgs)) {
		t.Fatalf("acks %v", got)
	}
}

func TestQoS0Stored(t *testing.T) {
	r := newRig(t, Options{Subscriptions: []Subscription{{Topic: "s/#", QoS: 0}}})
	m := r.msg("s/a", "")
	m.qos = 0
	r.deliver(m)
	if !r.sink.WaitFor(1, 0, 5*time.Second) {
		t.Fatal("QoS 0 message not stored")
	}
	if got := r.fc.subs[0]["s/#"]; got != 0 {
		t.Fatalf("subscribed with QoS %d", got)
	}
}

func TestStopWaitsForBatchInFlightThenDisconnects(t *testing.T) {
	r := newRig(t, Options{})
	r.sink.Delay(200 * time.Millisecond)
	m := r.msg("s/a", "")
	r.deliver(m)
	time.Sleep(20 * time.Millisecond) // the write is in flight
	if err := r.in.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.j.list(); !slices.Equal(got, []string{"ack 1", "disconnect"}) {
		t.Fatalf("events %v, want the ack then the disconnect", got)
	}
	// After Stop, messages are left unacked for the next session.
	late := r.msg("s/a", "")
	r.fc.ev.onMessage(late)
	if late.acked.Load() != 0 {
		t.Fatal("a message after Stop was acked")
	}
}

func TestStopGivesUpAtDeadline(t *testing.T) {
	r := newRig(t, Options{})
	r.sink.Fail(errors.New("broken"))
	r.deliver(r.msg("s/a", ""), r.msg("s/a", ""))
	for r.sink.Calls() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := r.in.Stop(ctx)
	if err == nil || !strings.Contains(err.Error(), "stay with the broker") {
		t.Fatalf("Stop: %v", err)
	}
	if a := r.j.acks(); len(a) != 0 {
		t.Fatalf("acked %v", a)
	}
	s := r.c.Snapshot()
	if s.ReceivedPoints != s.DroppedPoints+s.PersistedPoints || s.DroppedPoints == 0 {
		t.Fatalf("counters %+v", s)
	}
}

func TestResubscribesOnEveryConnect(t *testing.T) {
	r := newRig(t, Options{Subscriptions: []Subscription{{Topic: "a/#", QoS: 1}, {Topic: "b/+", QoS: 2}, {Topic: "a/#", QoS: 0}}})
	if ok, why := r.in.Ready(); !ok {
		t.Fatalf("not ready: %s", why)
	}
	r.fc.ev.onLost(errors.New("EOF"))
	if r.in.Connected() || r.c.Connections.Load() != 0 {
		t.Fatal("still connected after the connection was lost")
	}
	if ok, why := r.in.Ready(); ok || !strings.Contains(why, "connection lost: EOF") {
		t.Fatalf("ready %v %q", ok, why)
	}
	r.fc.ev.onConnect()
	r.waitConnected()
	if n := r.fc.subscribeCount(); n != 2 {
		t.Fatalf("subscribed %d times, want once per connect (2)", n)
	}
	want := map[string]byte{"a/#": 1, "b/+": 2}
	for _, s := range r.fc.subs {
		if fmt.Sprint(s) != fmt.Sprint(want) {
			t.Fatalf("subscribed to %v, want %v", s, want)
		}
	}
	st := r.in.State()
	if st.Connects != 2 || st.Reconnects != 1 || r.c.ConnectionsAccepted.Load() != 2 {
		t.Fatalf("state %+v", st)
	}
}

func TestSubscribeRetriedUntilItWorks(t *testing.T) {
	r := &rig{t: t, sink: sinktest.New(), c: new(inputs.Counters), j: &journal{}}
	in, err := newInput(Options{Brokers: []string{"tcp://x:1"}, ClientID: "c", ReconnectMin: time.Millisecond,
		Subscriptions: []Subscription{{Topic: "a"}}}, r.sink, r.c, nil,
		func(_ *Options, ev events) (client, error) {
			r.fc = &fakeClient{ev: ev, journal: r.j, subErr: errors.New("refused")}
			return r.fc, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	r.in = in
	in.Start()
	defer in.Stop(context.Background())
	for r.fc.subscribeCount() < 3 {
		time.Sleep(time.Millisecond)
	}
	if in.Connected() {
		t.Fatal("connected while subscribing fails")
	}
	r.fc.mu.Lock()
	r.fc.subErr = nil
	r.fc.mu.Unlock()
	r.waitConnected()
}

func TestNewRefusesBadOptions(t *testing.T) {
	sink := sinktest.New()
	f := func(o Options, want string) {
		t.Helper()
		_, err := New(o, sink, nil, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%+v) = %v, want an error with %q", o, err, want)
		}
	}
	sub := []Subscription{{Topic: "a"}}
	f(Options{Subscriptions: sub}, "no broker")
	f(Options{Brokers: []string{"tcp://h:1"}}, "no subscription")
	f(Options{Brokers: []string{"tcp://h:1"}, Subscriptions: []Subscription{{Topic: "a", Format: "xml"}}}, `format "xml"`)
	f(Options{Brokers: []string{"tcp://h:1"}, Subscriptions: []Subscription{{Topic: "a", TopicPattern: "{}"}}}, "names no tag")
	f(Options{Brokers: []string{"tcp://h:1"}, Subscriptions: sub, TLS: TLSOptions{CAFile: "/nonexistent/ca.pem"}}, "tls.ca_file")
	f(Options{Brokers: []string{"tcp://h:1"}, Subscriptions: sub, TLS: TLSOptions{CertFile: "c.pem"}}, "both cert_file and key_file")
}

func TestDefaultClientIDIsStable(t *testing.T) {
	a, err := DefaultClientID()
	if err != nil {
		t.Skip(err)
	}
	b, _ := DefaultClientID()
	if a != b || !strings.HasPrefix(a, "fpagent-") {
		t.Fatalf("client ids %q and %q", a, b)
	}
	in, err := New(Options{Brokers: []string{"tcp://127.0.0.1:1"}, Subscriptions: []Subscription{{Topic: "a"}}}, sinktest.New(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if in.ClientID() != a {
		t.Fatalf("default client id %q, want %q", in.ClientID(), a)
	}
}

// Points with their own time survive the sink's identity: a redelivered
// message is the same point (checked here at the input's level: the same
// payload parses to the same key and time).
func TestRedeliveryParsesToSamePoint(t *testing.T) {
	c, _ := compileSubscription(Subscription{Topic: "s/#", Format: "json", Measurement: "m", TimeKey: "t", TimeFormat: "unix_ms"})
	p := parser{maxRejectBytes: 100}
	var a, b storage.Batch
	payload := []byte(`{"v": 1, "t": 1700000000123}`)
	p.parse(&a, c, "s/x", payload, time.Now())
	p.parse(&b, c, "s/x", payload, time.Now().Add(time.Hour))
	if a.Points[0].Key != b.Points[0].Key || a.Points[0].Time != b.Points[0].Time {
		t.Fatalf("redelivery gave %+v then %+v", a.Points[0], b.Points[0])
	}
}

func TestPlainTCP(t *testing.T) {
	for _, tc := range []struct {
		brokers []string
		want    bool
	}{
		{[]string{"tcp://127.0.0.1:1883"}, true},
		{[]string{"mqtt://broker:1883", "tcp://other:1883"}, true},
		{[]string{"tcp://a:1883", "ssl://b:8883"}, false},
		{[]string{"ws://a:80/mqtt"}, false},
		{[]string{"::not a url"}, false},
		{nil, false},
	} {
		if got := plainTCP(tc.brokers); got != tc.want {
			t.Errorf("plainTCP(%q) = %v, want %v", tc.brokers, got, tc.want)
		}
	}
}
