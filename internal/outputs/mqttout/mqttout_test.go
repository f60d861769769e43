package mqttout

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fpagent/fpagent/inputs/mqtt"
	"github.com/fpagent/fpagent/internal/outputs"
	"github.com/fpagent/fpagent/storage"
	"github.com/fpagent/fpagent/wal"
)

func pt(m string, ts int64, tags ...string) storage.Point {
	p := storage.Point{Measurement: m, Time: ts, Fields: []storage.Field{{Key: "v", Value: storage.FloatValue(float64(ts))}}}
	for i := 0; i < len(tags); i += 2 {
		p.Tags = append(p.Tags, storage.Tag{Key: tags[i], Value: tags[i+1]})
	}
	return p
}

func TestParseTemplateAndExpand(t *testing.T) {
	tests := []struct {
		tmpl    string
		p       storage.Point
		want    string
		wantErr string
	}{
		{"fpagent/{measurement}", pt("cpu", 1), "fpagent/cpu", ""},
		{"site/{site}/{measurement}/{host}", pt("cpu", 1, "host", "h1", "site", "s1"), "site/s1/cpu/h1", ""},
		{"fixed/topic", pt("cpu", 1, "host", "h1"), "fixed/topic", ""},
		{"{measurement}", pt("cpu", 1), "cpu", ""},
		{"a/{host}/b", pt("cpu", 1), "a/_/b", ""},                      // missing tag
		{"a/{host}/b", pt("cpu", 1, "host", ""), "a/_/b", ""},          // empty tag
		{"a/{host}", pt("cpu", 1, "host", "x/y+z#w"), "a/x_y_z_w", ""}, // no new levels or wildcards
		{"a/{measurement}", pt("m/+/#", 1), "a/m____", ""},             // the measurement too
		{"{measurement}{host}", pt("m", 1, "host", "h"), "mh", ""},     // adjacent placeholders
		{"a/{host}/{host}", pt("m", 1, "host", "h"), "a/h/h", ""},      // a placeholder twice
		{"a/{measurement", pt("m", 1), "", "unclosed {"},
		{"a/{}", pt("m", 1), "", "empty {}"},
		{"a/+/{measurement}", pt("m", 1), "", "+ and #"},
		{"a/{measurement}/#", pt("m", 1), "", "+ and #"},
	}
	for _, tt := range tests {
		tmpl, err := parseTemplate(tt.tmpl)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseTemplate(%q) = %v, want an error mentioning %q", tt.tmpl, err, tt.wantErr)
			}
			if _, nerr := New(Config{Brokers: []string{"tcp://127.0.0.1:1"}, ClientID: "x", Topic: tt.tmpl}); nerr == nil {
				t.Errorf("New accepted topic %q", tt.tmpl)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseTemplate(%q): %v", tt.tmpl, err)
			continue
		}
		if got := tmpl.expand(&tt.p); got != tt.want {
			t.Errorf("%q expands to %q for %v, want %q", tt.tmpl, got, tt.p, tt.want)
		}
	}
}

func TestNewChecksConfig(t *testing.T) {
	ok := Config{Brokers: []string{"tcp://127.0.0.1:1"}, ClientID: "x"}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"no broker", func(c *Config) { c.Brokers = nil }, "brokers"},
		{"no client id", func(c *Config) { c.ClientID = "" }, "client_id"},
		{"bad format", func(c *Config) { c.Format = "xml" }, "format"},
		{"qos 3", func(c *Config) { c.QoS = 3 }, "qos"},
		{"bad topic", func(c *Config) { c.Topic = "a/#" }, "topic"},
	}
	for _, tt := range tests {
		cfg := ok
		tt.edit(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: New = %v, want an error mentioning %q", tt.name, err, tt.wantErr)
		}
	}
}

// captureSender hands over the first batch a Forwarder sends.
type captureSender struct {
	once sync.Once
	got  chan *outputs.Batch
}

func (c *captureSender) Send(_ context.Context, b *outputs.Batch) error {
	c.once.Do(func() { c.got <- b.Slice(0, b.Len()) })
	return nil
}

func (c *captureSender) Close() error { return nil }

func openStore(t *testing.T) (*storage.Store, *storage.Feed) {
	t.Helper()
	dir := t.TempDir()
	cfg := storage.DefaultConfig()
	cfg.BaseDir = filepath.Join(dir, "wal")
	cfg.FlushInterval = time.Hour
	cfg.BatchSize = 1 << 30
	cfg.Threads = 1
	cfg.Sync = wal.SyncNone
	cfg.Feeds = []storage.FeedConfig{{Name: "out"}}
	s, err := storage.Open(filepath.Join(dir, "fpagent.duckdb"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f, err := s.Feed("out")
	if err != nil {
		t.Fatal(err)
	}
	return s, f
}

func stopForwarder(t *testing.T, f *outputs.Forwarder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Stop(ctx); err != nil {
		t.Error(err)
	}
}

// encoded returns pts as a Forwarder hands them to a Sender (only package
// outputs builds a Batch's lines), by running one on a store.
func encoded(t *testing.T, pts []storage.Point) *outputs.Batch {
	t.Helper()
	s, feed := openStore(t)
	if err := s.WriteBatch(context.Background(), &storage.Batch{Source: "test", Points: pts}); err != nil {
		t.Fatal(err)
	}
	c := &captureSender{got: make(chan *outputs.Batch, 1)}
	f := outputs.New(outputs.Config{Name: "out", Feed: feed, Sender: c, DeadLetter: s.DeadLetter})
	f.Start()
	var b *outputs.Batch
	select {
	case b = <-c.got:
	case <-time.After(10 * time.Second):
		t.Fatal("the forwarder sent nothing")
	}
	stopForwarder(t, f) // from here on nothing writes to b's memory
	if b.Len() != len(pts) {
		t.Fatalf("batch of %d points, want %d", b.Len(), len(pts))
	}
	return b
}

func TestPack(t *testing.T) {
	b := encoded(t, []storage.Point{
		pt("a", 0), pt("a", 1), pt("a", 2), pt("b", 3), pt("a", 4), pt("a", 5), pt("c", 6, "host", "h"),
	})
	line := func(m string, ts int) string {
		tags := ""
		if m == "c" {
			tags = ",host=h"
		}
		return fmt.Sprintf("%s%s v=%d %d", m, tags, ts, ts)
	}
	lines := func(m string, ts ...int) string {
		var l []string
		for _, x := range ts {
			l = append(l, line(m, x))
		}
		return strings.Join(l, "\n")
	}
	jsonOf := func(i int) string { return string(b.Points[i].AppendJSON(nil)) }
	tests := []struct {
		name     string
		topic    string
		format   string
		maxLines int
		want     []message
	}{
		{"consecutive same topic share a message", "t/{measurement}", "influx", 100, []message{
			{"t/a", []byte(lines("a", 0, 1, 2))}, {"t/b", []byte(line("b", 3))},
			{"t/a", []byte(lines("a", 4, 5))}, {"t/c", []byte(line("c", 6))},
		}},
		{"at most MaxLines per message", "t/{measurement}", "influx", 2, []message{
			{"t/a", []byte(lines("a", 0, 1))}, {"t/a", []byte(line("a", 2))}, {"t/b", []byte(line("b", 3))},
			{"t/a", []byte(lines("a", 4, 5))}, {"t/c", []byte(line("c", 6))},
		}},
		{"one line per message", "t/{measurement}", "influx", 1, []message{
			{"t/a", []byte(line("a", 0))}, {"t/a", []byte(line("a", 1))}, {"t/a", []byte(line("a", 2))},
			{"t/b", []byte(line("b", 3))}, {"t/a", []byte(line("a", 4))}, {"t/a", []byte(line("a", 5))},
			{"t/c", []byte(line("c", 6))},
		}},
		{"one topic for all", "all", "influx", 4, []message{
			{"all", []byte(lines("a", 0, 1, 2) + "\n" + line("b", 3))},
			{"all", []byte(lines("a", 4, 5) + "\n" + line("c", 6))},
		}},
		{"json: one message per point", "t/{host}", "json", 100, []message{
			{"t/_", []byte(jsonOf(0))}, {"t/_", []byte(jsonOf(1))}, {"t/_", []byte(jsonOf(2))}, {"t/_", []byte(jsonOf(3))},
			{"t/_", []byte(jsonOf(4))}, {"t/_", []byte(jsonOf(5))}, {"t/h", []byte(jsonOf(6))},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := parseTemplate(tt.topic)
			if err != nil {
				t.Fatal(err)
			}
			s := &Sender{cfg: Config{Format: tt.format, MaxLines: tt.maxLines}, topic: tmpl}
			got := s.pack(b, nil)
			if !slices.EqualFunc(got, tt.want, func(a, b message) bool { return a.topic == b.topic && string(a.payload) == string(b.payload) }) {
				t.Fatalf("pack:\n%s\nwant:\n%s", showMessages(got), showMessages(tt.want))
			}
			// Packing again into the same slice gives the same messages, and
			// does not write into the batch.
			lp := string(b.LP)
			again := s.pack(b, got[:0])
			if !slices.EqualFunc(again, tt.want, func(a, b message) bool { return a.topic == b.topic && string(a.payload) == string(b.payload) }) || string(b.LP) != lp {
				t.Fatalf("pack into a reused slice:\n%s", showMessages(again))
			}
		})
	}
	for i := range b.Len() {
		var v map[string]any
		if err := json.Unmarshal([]byte(jsonOf(i)), &v); err != nil {
			t.Fatalf("json payload %q: %v", jsonOf(i), err)
		}
	}
}

func showMessages(ms []message) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "  %s: %q\n", m.topic, m.payload)
	}
	return b.String()
}

func TestSendWithoutConnection(t *testing.T) {
	s, err := New(Config{Brokers: []string{"tcp://127.0.0.1:1"}, ClientID: "nobody", ConnectTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Send(context.Background(), &outputs.Batch{})
	if err == nil || !strings.Contains(err.Error(), "connect to tcp://127.0.0.1:1") {
		t.Fatalf("Send without a broker = %v, want a 'connect to' error naming it", err)
	}
}

// A broker that goes away fails the send under way (no paho-side resend
// that would complete its tokens early); once it is back, Send connects
// again by itself.
func TestSendReconnects(t *testing.T) {
	broker := mqtt.NewEmbeddedBroker("127.0.0.1:0", nil)
	if err := broker.Start(); err != nil {
		t.Skipf("cannot start the embedded broker: %v", err)
	}
	addr := broker.Addr()
	snd, err := New(Config{Brokers: []string{"tcp://" + addr}, ClientID: "fpagent-reconnect", Timeout: 2 * time.Second,
		ConnectTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	b := &outputs.Batch{}
	if err := snd.Send(context.Background(), b); err != nil {
		t.Fatalf("first send: %v", err)
	}
	broker.Stop(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for snd.Connected() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := snd.Send(context.Background(), b); err == nil {
		t.Fatal("send with the broker gone succeeded")
	}
	again := mqtt.NewEmbeddedBroker(addr, nil)
	if err := again.Start(); err != nil {
		t.Skipf("cannot restart the embedded broker on %s: %v", addr, err)
	}
	defer again.Stop(context.Background())
	if err := snd.Send(context.Background(), b); err != nil {
		t.Fatalf("send after the broker came back: %v", err)
	}
	if !snd.Connected() {
		t.Fatal("not connected after a successful send")
	}
}

// subscriber collects what a broker delivers on a topic filter.
type subscriber struct {
	mu   sync.Mutex
	msgs []message
}

func subscribe(t *testing.T, addr, filter string) *subscriber {
	t.Helper()
	sub := &subscriber{}
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("test-sub"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		sub.mu.Lock()
		sub.msgs = append(sub.msgs, message{m.Topic(), append([]byte(nil), m.Payload()...)})
		sub.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return sub
}

func (s *subscriber) received() []message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// The whole path: store, feed, forwarder, this sender, a broker, a subscriber.
func TestPublishThroughABroker(t *testing.T) {
	broker := mqtt.NewEmbeddedBroker("127.0.0.1:0", nil)
	if err := broker.Start(); err != nil {
		t.Skipf("cannot start the embedded broker: %v", err)
	}
	defer broker.Stop(context.Background())
	sub := subscribe(t, broker.Addr(), "fp/#")

	snd, err := New(Config{Brokers: []string{"tcp://" + broker.Addr()}, ClientID: "fpagent-test",
		Topic: "fp/{measurement}/{host}", MaxLines: 2, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if snd.Connected() {
		t.Fatal("connected before the first send: want a connection made by Send")
	}
	s, feed := openStore(t)
	fwd := outputs.New(outputs.Config{Name: "out", Type: "mqtt", Feed: feed, Sender: snd, DeadLetter: s.DeadLetter,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	fwd.Start()
	defer stopForwarder(t, fwd)
	pts := []storage.Point{pt("cpu", 1, "host", "a"), pt("cpu", 2, "host", "a"), pt("cpu", 3, "host", "a"),
		pt("cpu", 4, "host", "b"), pt("mem", 5)}
	if err := s.WriteBatch(context.Background(), &storage.Batch{Source: "test", Points: pts}); err != nil {
		t.Fatal(err)
	}

	want := []message{
		{"fp/cpu/a", []byte("cpu,host=a v=1 1\ncpu,host=a v=2 2")},
		{"fp/cpu/a", []byte("cpu,host=a v=3 3")},
		{"fp/cpu/b", []byte("cpu,host=b v=4 4")},
		{"fp/mem/_", []byte("mem v=5 5")},
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(sub.received()) < len(want) || fwd.Stats().LagRecords != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s the subscriber has:\n%s and the output lags %d records", showMessages(sub.received()), fwd.Stats().LagRecords)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let a duplicate show up, if any
	got := sub.received()
	if !slices.EqualFunc(got, want, func(a, b message) bool { return a.topic == b.topic && string(a.payload) == string(b.payload) }) {
		t.Fatalf("the subscriber got:\n%swant:\n%s", showMessages(got), showMessages(want))
	}
	if st := fwd.Stats(); st.SentPoints != 5 || st.Failures != 0 || !st.Healthy {
		t.Errorf("stats %+v; want 5 points sent, no failures", st)
	}
}
