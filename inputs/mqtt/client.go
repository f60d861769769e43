package mqtt

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fpagent/fpagent/internal/tlsconf"
)

// Message is what the input needs of a received MQTT message; paho's
// messages have it.
type Message interface {
	Topic() string
	Payload() []byte
	Qos() byte
	Duplicate() bool
	// Ack sends PUBACK (QoS 1) or PUBREC (QoS 2); a no-op for QoS 0.
	Ack()
}

// client is the part of an MQTT client the input uses. It hides paho, so
// that tests can drive the input with a fake (Telegraf's habit).
type client interface {
	// Connect starts connecting in the background; the client retries and
	// reconnects by itself until Disconnect.
	Connect()
	// Subscribe subscribes to filters (topic -> QoS) and waits for SUBACK.
	Subscribe(filters map[string]byte, timeout time.Duration) error
	// Disconnect waits up to quiesce for outgoing packets (acks), then
	// disconnects and stops reconnecting.
	Disconnect(quiesce time.Duration)
}

// events are the client's callbacks into the input. onMessage may block: the
// client then stops reading from the broker (paho with OrderMatters).
type events struct {
	onConnect      func()
	onLost         func(error)
	onReconnecting func()
	onBroker       func(broker string) // a connection attempt to broker starts
	onMessage      func(Message)
}

// pahoClient adapts paho's client.
type pahoClient struct{ c paho.Client }

func (p *pahoClient) Connect() { p.c.Connect() }

func (p *pahoClient) Subscribe(filters map[string]byte, timeout time.Duration) error {
	// No callback: every message goes to the default handler, once, even
	// when it matches several filters or arrives before SUBACK (persistent
	// session).
	t := p.c.SubscribeMultiple(filters, nil)
	if !t.WaitTimeout(timeout) {
		return fmt.Errorf("no SUBACK within %s", timeout)
	}
	if err := t.Error(); err != nil {
		return err
	}
	if st, ok := t.(*paho.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code == 0x80 {
				return fmt.Errorf("the broker refused the subscription to %q (SUBACK 0x80); check its ACL for this user", topic)
			}
		}
	}
	return nil
}

func (p *pahoClient) Disconnect(quiesce time.Duration) { p.c.Disconnect(uint(quiesce.Milliseconds())) }

// newPahoClient builds paho's client from o: manual acks, ordered delivery,
// auto-reconnect and connect retry, and a persistent session unless
// CleanSession.
func newPahoClient(o *Options, ev events) (client, error) {
	po := paho.NewClientOptions()
	for _, b := range o.Brokers {
		po.AddBroker(b)
	}
	po.SetClientID(o.ClientID)
	po.SetUsername(o.Username)
	po.SetPassword(o.Password)
	po.SetCleanSession(o.CleanSession)
	po.SetKeepAlive(o.Keepalive)
	po.SetConnectTimeout(o.ConnectTimeout)
	po.SetAutoReconnect(true)
	po.SetConnectRetry(true)
	po.SetConnectRetryInterval(o.ReconnectMin)
	po.SetMaxReconnectInterval(o.ReconnectMax)
	po.SetOrderMatters(true)    // one handler at a time, in arrival order; blocking it stalls the broker's flow
	po.SetAutoAckDisabled(true) // acks only after the readings are durable
	// Subscriptions are made in OnConnect, on every connect; paho must not
	// replay its own copies.
	po.SetResumeSubs(false)
	if o.TLS.Set() {
		cfg, err := o.TLS.Config()
		if err != nil {
			return nil, err
		}
		po.SetTLSConfig(cfg)
	}
	// Plain TCP connections are read through a buffer: paho reads every
	// packet with at least three reads on the raw connection (type, length,
	// body), a seventh of the agent's CPU at one reading per message. TLS,
	// websockets and a proxy from the environment keep paho's own dialer.
	if plainTCP(o.Brokers) && os.Getenv("ALL_PROXY") == "" && os.Getenv("all_proxy") == "" {
		po.SetCustomOpenConnectionFn(dialBuffered)
	}
	po.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { ev.onMessage(m) })
	po.SetOnConnectHandler(func(paho.Client) { ev.onConnect() })
	po.SetConnectionLostHandler(func(_ paho.Client, err error) { ev.onLost(err) })
	po.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { ev.onReconnecting() })
	po.SetConnectionNotificationHandler(func(_ paho.Client, n paho.ConnectionNotification) {
		if b, ok := n.(paho.ConnectionNotificationBroker); ok && b.Broker != nil {
			ev.onBroker(b.Broker.Redacted())
		}
	})
	return &pahoClient{c: paho.NewClient(po)}, nil
}

// TLSOptions configures TLS towards the broker (ssl://, tls://, mqtts://,
// wss:// URLs, or any URL once a CA or client certificate is set).
type TLSOptions = tlsconf.Client

// plainTCP reports whether every broker is a tcp:// or mqtt:// URL.
func plainTCP(brokers []string) bool {
	for _, b := range brokers {
		u, err := url.Parse(b)
		if err != nil || (u.Scheme != "tcp" && u.Scheme != "mqtt") {
			return false
		}
	}
	return len(brokers) > 0
}

// dialBuffered connects as paho does for tcp:// (its dialer, its timeout)
// and wraps the connection in a brokerConn, which buffers reads and
// coalesces writes.
func dialBuffered(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: o.ConnectTimeout}
	}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	return newBrokerConn(conn), nil
}
