// Package mqttout publishes readings to an MQTT broker (a central broker or
// a broker cluster) with QoS 1 or 2: a batch counts as sent once the broker
// acknowledged every message of it.
package mqttout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fpagent/fpagent/internal/outputs"
	"github.com/fpagent/fpagent/internal/tlsconf"
	"github.com/fpagent/fpagent/storage"
)

// Config configures a Sender.
type Config struct {
	Brokers        []string
	ClientID       string
	Username       string
	Password       string
	TLS            tlsconf.Client
	Topic          string // template: {measurement} and {tag_key} are replaced; default fpagent/{measurement}
	Format         string // "influx" (default): line protocol; "json": one JSON record per message
	QoS            byte   // 1 (default) or 2
	Retain         bool
	MaxLines       int           // influx format: lines per message at most; default 100
	Timeout        time.Duration // for the broker's acknowledgements of one batch; default 30s
	ConnectTimeout time.Duration // default 10s
	Keepalive      time.Duration // default 30s
}

// Sender publishes batches. Send is for one goroutine; Connected and Close
// may be called from others.
type Sender struct {
	cfg   Config
	topic *template
	opts  *paho.ClientOptions
	msgs  []message

	mu     sync.Mutex
	client paho.Client // replaced for each connection attempt; nil before the first
}

type message struct {
	topic   string
	payload []byte
}

// New checks cfg and returns; the first Send connects.
func New(cfg Config) (*Sender, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("brokers: name at least one, e.g. tcp://central:1883")
	}
	if cfg.ClientID == "" {
		return nil, errors.New("client_id: must not be empty")
	}
	if cfg.Topic == "" {
		cfg.Topic = "fpagent/{measurement}"
	}
	t, err := parseTemplate(cfg.Topic)
	if err != nil {
		return nil, err
	}
	switch cfg.Format {
	case "":
		cfg.Format = "influx"
	case "influx", "json":
	default:
		return nil, fmt.Errorf("format %q: want influx or json", cfg.Format)
	}
	switch cfg.QoS {
	case 0:
		cfg.QoS = 1
	case 1, 2:
	default:
		return nil, fmt.Errorf("qos %d: want 1 or 2 (QoS 0 has no acknowledgement to move the cursor on)", cfg.QoS)
	}
	cfg.MaxLines = orDefault(cfg.MaxLines, 100)
	cfg.Timeout = orDefault(cfg.Timeout, 30*time.Second)
	cfg.ConnectTimeout = orDefault(cfg.ConnectTimeout, 10*time.Second)
	cfg.Keepalive = orDefault(cfg.Keepalive, 30*time.Second)

	po := paho.NewClientOptions()
	for _, b := range cfg.Brokers {
		po.AddBroker(b)
	}
	po.SetClientID(cfg.ClientID)
	po.SetUsername(cfg.Username)
	po.SetPassword(cfg.Password)
	// The WAL is the session: what the broker did not acknowledge is sent
	// again from the cursor, so paho need not keep its own copies.
	po.SetCleanSession(true)
	po.SetKeepAlive(cfg.Keepalive)
	po.SetConnectTimeout(cfg.ConnectTimeout)
	// No automatic reconnect: on reconnecting, paho re-sends the messages
	// it holds and completes the tokens of the first attempt without an
	// error, so a batch would count as sent while its messages sat in paho's
	// memory, lost if the agent died then. Instead a lost connection fails
	// every token in flight, and Send connects again itself.
	po.SetAutoReconnect(false)
	po.SetConnectRetry(false)
	po.SetWriteTimeout(cfg.Timeout)
	if cfg.TLS.Set() {
		tc, err := cfg.TLS.Config()
		if err != nil {
			return nil, err
		}
		po.SetTLSConfig(tc)
	}
	return &Sender{cfg: cfg, topic: t, opts: po}, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Send publishes b and waits for the broker to acknowledge every message.
func (s *Sender) Send(ctx context.Context, b *outputs.Batch) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	s.msgs = s.pack(b, s.msgs[:0])
	tokens := make([]paho.Token, len(s.msgs))
	client := s.current()
	for i, m := range s.msgs {
		tokens[i] = client.Publish(m.topic, s.cfg.QoS, s.cfg.Retain, m.payload)
	}
	deadline := time.Now().Add(s.cfg.Timeout)
	for i, t := range tokens {
		select {
		case <-t.Done():
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(deadline)):
			return fmt.Errorf("the broker did not acknowledge %d of %d messages within %s", len(tokens)-i, len(tokens), s.cfg.Timeout)
		}
		if err := t.Error(); err != nil {
			return fmt.Errorf("publish to %s: %w", s.msgs[i].topic, err)
		}
	}
	return nil
}

// pack turns b into messages: with the influx format, consecutive points
// for the same topic share a message, up to MaxLines lines.
func (s *Sender) pack(b *outputs.Batch, msgs []message) []message {
	last, lines := -1, 0 // the message being filled, and its lines
	for i := range b.Points {
		p := &b.Points[i]
		topic := s.topic.expand(p)
		if s.cfg.Format == "json" {
			msgs = append(msgs, message{topic, p.AppendJSON(nil)})
			continue
		}
		if last >= 0 && msgs[last].topic == topic && lines < s.cfg.MaxLines {
			msgs[last].payload = append(append(msgs[last].payload, '\n'), b.Line(i)...)
			lines++
			continue
		}
		msgs = append(msgs, message{topic, append([]byte(nil), b.Line(i)...)})
		last, lines = len(msgs)-1, 1
	}
	return msgs
}

// connect opens the connection when it is not up, waiting up to
// ConnectTimeout; the forwarder's backoff paces the attempts.
//
// Each attempt gets a fresh paho client. Reusing one races with paho's
// own bookkeeping: it completes a failed attempt's token before its status
// is back to disconnected, and tears a lost connection down in the
// background, so an immediate retry on the same client fails with "status
// can only transition to connecting from disconnected".
func (s *Sender) connect(ctx context.Context) error {
	if c := s.current(); c != nil && c.IsConnectionOpen() {
		return nil
	}
	c := paho.NewClient(s.opts)
	s.mu.Lock()
	old := s.client
	s.client = c
	s.mu.Unlock()
	if old != nil {
		// An attempt that timed out may still be connecting; end it so
		// that two clients with one client id do not take turns. In the
		// background: paho's Disconnect waits for a pending attempt.
		go old.Disconnect(0)
	}
	t := c.Connect()
	timer := time.NewTimer(s.cfg.ConnectTimeout + time.Second)
	defer timer.Stop()
	select {
	case <-t.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("connect to %s: no answer within %s", strings.Join(s.cfg.Brokers, ","), s.cfg.ConnectTimeout)
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("connect to %s: %w", strings.Join(s.cfg.Brokers, ","), err)
	}
	return nil
}

func (s *Sender) current() paho.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

// Connected reports whether the connection to the broker is up.
func (s *Sender) Connected() bool {
	c := s.current()
	return c != nil && c.IsConnectionOpen()
}

// Close disconnects, waiting briefly for messages in flight.
func (s *Sender) Close() error {
	if c := s.current(); c != nil {
		c.Disconnect(250)
	}
	return nil
}

// template is a topic with {measurement} and {tag} placeholders.
type template struct {
	parts []string // literal, name, literal, name, …, literal
}

func parseTemplate(t string) (*template, error) {
	var parts []string
	rest := t
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			parts = append(parts, rest)
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("topic %q: unclosed {", t)
		}
		name := rest[i+1 : i+j]
		if name == "" {
			return nil, fmt.Errorf("topic %q: empty {}", t)
		}
		parts = append(parts, rest[:i], name)
		rest = rest[i+j+1:]
	}
	if strings.ContainsAny(strings.Join(parts, ""), "+#") {
		return nil, fmt.Errorf("topic %q: + and # are for subscriptions, not for publishing", t)
	}
	return &template{parts: parts}, nil
}

// expand fills in the placeholders. A value's '/', '+' and '#' become '_'
// so that a tag cannot add topic levels or wildcards; a missing tag is "_".
func (t *template) expand(p *storage.Point) string {
	if len(t.parts) == 1 {
		return t.parts[0]
	}
	var b strings.Builder
	for i, part := range t.parts {
		if i%2 == 0 {
			b.WriteString(part)
			continue
		}
		v := "_"
		if part == "measurement" {
			v = p.Measurement
		} else {
			for _, tag := range p.Tags {
				if tag.Key == part {
					v = tag.Value
					break
				}
			}
		}
		if v == "" {
			v = "_"
		}
		b.WriteString(topicSafe.Replace(v))
	}
	return b.String()
}

var topicSafe = strings.NewReplacer("/", "_", "+", "_", "#", "_")

var _ outputs.Sender = (*Sender)(nil)
