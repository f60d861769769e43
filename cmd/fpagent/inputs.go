package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/httpwrite"
	"github.com/fpagent/fpagent/inputs/lineproto"
	"github.com/fpagent/fpagent/inputs/mqtt"
	"github.com/fpagent/fpagent/inputs/socket"
	"github.com/fpagent/fpagent/internal/config"
)

// buildInputs constructs the enabled inputs, sinks first: they write to sink.
func buildInputs(cfg *config.Config, sink inputs.Sink, reg *inputs.Registry, log *slog.Logger) ([]namedInput, error) {
	var out []namedInput
	in := cfg.Inputs
	if in.HTTP.Enabled {
		h := in.HTTP
		srv, err := httpwrite.NewServer(httpwrite.Options{
			Addr:               h.Listen,
			MaxBodyBytes:       int64(h.MaxBodySize),
			MaxConcurrent:      h.MaxConcurrentRequests,
			QueueTimeout:       h.QueueTimeout.D(),
			Token:              h.Token,
			DatabaseTag:        h.DatabaseTag,
			DisableDatabaseTag: h.DatabaseTag == "",
			TLSCertFile:        h.TLS.CertFile,
			TLSKeyFile:         h.TLS.KeyFile,
			ReadTimeout:        h.ReadTimeout.D(),
			IdleTimeout:        h.IdleTimeout.D(),
		}, sink, reg.Counters("http"), log)
		if err != nil {
			return nil, fmt.Errorf("inputs.http: %w", err)
		}
		out = append(out, namedInput{name: "http", in: srv, addr: func() string { return srv.Addr().String() }})
	}
	if in.TCP.Enabled {
		prec, err := lineproto.ParsePrecision(in.TCP.Precision)
		if err != nil {
			return nil, fmt.Errorf("inputs.tcp.precision: %w", err)
		}
		t, err := socket.NewTCP(socket.TCPOptions{
			Addr:           in.TCP.Listen,
			MaxConnections: in.TCP.MaxConnections,
			MaxLineBytes:   int(in.TCP.MaxLineSize),
			IdleTimeout:    in.TCP.IdleTimeout.D(),
			Precision:      prec,
		}, sink, reg.Counters("tcp"), log)
		if err != nil {
			return nil, fmt.Errorf("inputs.tcp: %w", err)
		}
		out = append(out, namedInput{name: "tcp", in: t, addr: func() string { return t.Addr().String() }})
	}
	if in.UDP.Enabled {
		prec, err := lineproto.ParsePrecision(in.UDP.Precision)
		if err != nil {
			return nil, fmt.Errorf("inputs.udp.precision: %w", err)
		}
		u, err := socket.NewUDP(socket.UDPOptions{
			Addr:             in.UDP.Listen,
			ReadBufferBytes:  int(in.UDP.ReadBuffer),
			MaxDatagramBytes: int(in.UDP.MaxDatagramSize),
			QueueDatagrams:   in.UDP.QueueDatagrams,
			Precision:        prec,
		}, sink, reg.Counters("udp"), log)
		if err != nil {
			return nil, fmt.Errorf("inputs.udp: %w", err)
		}
		out = append(out, namedInput{name: "udp", in: u, addr: func() string { return u.Addr().String() }})
	}
	if in.MQTT.Enabled {
		m, err := mqtt.New(mqttOptions(in.MQTT), sink, reg.Counters("mqtt"), log)
		if err != nil {
			return nil, fmt.Errorf("inputs.mqtt: %w", err)
		}
		// addr shows the connection state where the others show their port.
		out = append(out, namedInput{name: "mqtt", in: m, ready: m.Ready, addr: func() string {
			st := m.State()
			return fmt.Sprintf("%s as %s (%s)", strings.Join(in.MQTT.Brokers, ","), m.ClientID(), st.Reason)
		}})
	}
	return out, nil
}

// mqttOptions maps the inputs.mqtt section onto the MQTT input's options.
func mqttOptions(c config.MQTTInput) mqtt.Options {
	o := mqtt.Options{
		Brokers: c.Brokers, ClientID: c.ClientID, Username: c.Username, Password: c.Password,
		CleanSession: c.CleanSession, Keepalive: c.Keepalive.D(), ConnectTimeout: c.ConnectTimeout.D(),
		MaxInflight: c.MaxInflight, MaxPayloadBytes: int(c.MaxPayloadSize),
		ReconnectMin: c.ReconnectMin.D(), ReconnectMax: c.ReconnectMax.D(),
		TLS: mqtt.TLSOptions{CAFile: c.TLS.CAFile, CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile,
			ServerName: c.TLS.ServerName, InsecureSkipVerify: c.TLS.InsecureSkipVerify},
	}
	for _, s := range c.Subscriptions {
		o.Subscriptions = append(o.Subscriptions, mqtt.Subscription{
			Topic: s.Topic, QoS: byte(s.QoS), Format: s.Format, TopicPattern: s.TopicPattern,
			Measurement: s.Measurement, TagKeys: s.TagKeys, TimeKey: s.TimeKey, TimeFormat: s.TimeFormat,
			TopicTag: s.TopicTag,
		})
	}
	return o
}
