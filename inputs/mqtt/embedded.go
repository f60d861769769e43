package mqtt

import (
	"context"
	"fmt"
	"log/slog"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// EmbeddedBroker is a small MQTT broker (github.com/mochi-mqtt/server/v2)
// the agent can run for tests and small devices, so that sensors publish
// straight to it and the MQTT input subscribes to it over loopback. It keeps
// sessions and queued messages in memory only: what it acknowledged to a
// sensor and had not yet delivered to the agent is lost if the agent's
// process dies. Use a real broker (mosquitto with persistence) where that
// matters. It accepts every client (no authentication): listen on loopback
// or a trusted network only.
type EmbeddedBroker struct {
	addr string
	log  *slog.Logger
	srv  *mochi.Server
	tcp  *listeners.TCP
}

// NewEmbeddedBroker prepares a broker that will listen on addr (host:port;
// port 0 picks a free one).
func NewEmbeddedBroker(addr string, log *slog.Logger) *EmbeddedBroker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &EmbeddedBroker{addr: addr, log: log.With("component", "mqtt_broker")}
}

// Start listens and serves; it returns once the port is open.
func (b *EmbeddedBroker) Start() error {
	srv := mochi.New(&mochi.Options{Logger: b.log})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "fpagent", Address: b.addr})
	if err := srv.AddListener(tcp); err != nil {
		srv.Close()
		return fmt.Errorf("embedded MQTT broker: listen on %s: %w", b.addr, err)
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return fmt.Errorf("embedded MQTT broker: %w", err)
	}
	b.srv, b.tcp = srv, tcp
	b.log.Info("embedded MQTT broker listening (sessions in memory, no authentication)", "addr", tcp.Address())
	return nil
}

// Addr is where the broker listens, once started.
func (b *EmbeddedBroker) Addr() string {
	if b.tcp == nil {
		return b.addr
	}
	return b.tcp.Address()
}

// Stop closes the listener and every client connection.
func (b *EmbeddedBroker) Stop(context.Context) error {
	if b.srv == nil {
		return nil
	}
	return b.srv.Close()
}
