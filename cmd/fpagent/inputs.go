package main

import (
	"fmt"
	"log/slog"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/lineproto"
	"github.com/fpagent/fpagent/inputs/socket"
	"github.com/fpagent/fpagent/internal/config"
)

type listener struct{ name, addr string }

// listeners names the enabled inputs and their addresses, for logs and STATUS=.
func listeners(cfg *config.Config) []listener {
	var out []listener
	in := cfg.Inputs
	if in.HTTP.Enabled {
		out = append(out, listener{"http", in.HTTP.Listen})
	}
	if in.TCP.Enabled {
		out = append(out, listener{"tcp", in.TCP.Listen})
	}
	if in.UDP.Enabled {
		out = append(out, listener{"udp", in.UDP.Listen})
	}
	if in.MQTT.Enabled {
		out = append(out, listener{"mqtt", fmt.Sprint(in.MQTT.Brokers)})
	}
	return out
}

// buildInputs constructs the enabled inputs, sinks first: they write to sink.
func buildInputs(cfg *config.Config, sink inputs.Sink, reg *inputs.Registry, log *slog.Logger) ([]namedInput, error) {
	var out []namedInput
	in := cfg.Inputs
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
		out = append(out, namedInput{"tcp", t})
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
		out = append(out, namedInput{"udp", u})
	}
	if in.MQTT.Enabled {
		return nil, fmt.Errorf("inputs.mqtt.enabled: the MQTT input is not part of this build yet; set it to false")
	}
	return out, nil
}
