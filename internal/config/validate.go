package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// checker collects semantic problems, each on the line of the key it is about.
type checker struct {
	lines map[string]int
	probs []Problem
}

func (c *checker) bad(key, format string, args ...any) {
	c.probs = append(c.probs, Problem{Line: c.lines[key], Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) oneOf(key, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		c.bad(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

func (c *checker) atLeast(key string, v, lo int64, unit string) {
	if v < lo {
		c.bad(key, "%d%s is below the minimum %d%s", v, unit, lo, unit)
	}
}

func (c *checker) positive(key string, d Duration) {
	if d <= 0 {
		c.bad(key, "must be longer than 0s")
	}
}

func (c *checker) size(key string, v Size, lo Size) {
	if v < lo {
		c.bad(key, "%s is below the minimum %s", v, lo)
	}
}

// listen checks a host:port listen address; port 0 picks a free port.
func (c *checker) listen(key, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		c.bad(key, "%q is not host:port (e.g. 127.0.0.1:8186, or :8186 for every interface)", addr)
		return
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		c.bad(key, "port %q in %q is out of range 0-65535", port, addr)
		return
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		c.bad(key, "host %q in %q is neither an IP address nor a host name", host, addr)
	}
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if !(ch == '-' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9') {
				return false
			}
		}
	}
	return true
}

var precisions = []string{"ns", "us", "ms", "s"}

func (cfg *Config) validate(lines map[string]int) []Problem {
	c := &checker{lines: lines}
	if strings.TrimSpace(cfg.DataDir) == "" {
		c.bad("data_dir", "must name a directory")
	}
	c.positive("shutdown_timeout", cfg.ShutdownTimeout)
	c.oneOf("log.level", cfg.Log.Level, "debug", "info", "warn", "error")
	c.oneOf("log.format", cfg.Log.Format, "text", "json")

	s := &cfg.Storage
	c.size("storage.max_wal_size", s.MaxWALSize, 64<<10)
	c.positive("storage.max_wal_age", s.MaxWALAge)
	c.atLeast("storage.batch_size", int64(s.BatchSize), 1, "")
	c.positive("storage.flush_interval", s.FlushInterval)
	if s.FlushMinInterval < 0 {
		c.bad("storage.flush_min_interval", "%s is negative (0 flushes as soon as batch_size readings are pending)", s.FlushMinInterval)
	}
	c.oneOf("storage.sync", s.Sync, "always", "interval", "none")
	if s.Sync == "interval" {
		c.positive("storage.sync_interval", s.SyncInterval)
	}
	c.atLeast("storage.cache_max_keys", int64(s.CacheMaxKeys), 1, "")
	c.atLeast("storage.max_series", int64(s.MaxSeries), 1, "")
	if s.DiskBudget < s.MaxWALSize {
		c.bad("storage.disk_budget", "%s is smaller than one WAL segment (storage.max_wal_size %s)", s.DiskBudget, s.MaxWALSize)
	}
	c.positive("storage.store_timeout", s.StoreTimeout)
	if n, err := ParseSize(s.DuckDB.MemoryLimit); err != nil {
		c.bad("storage.duckdb.memory_limit", "%v", err)
	} else if n < 16<<20 {
		c.bad("storage.duckdb.memory_limit", "%q is below the minimum 16MiB", s.DuckDB.MemoryLimit)
	}
	c.atLeast("storage.duckdb.threads", int64(s.DuckDB.Threads), 1, "")
	if s.DuckDB.Nice < 0 || s.DuckDB.Nice > 19 {
		c.bad("storage.duckdb.nice", "%d is outside 0-19 (0 runs the flush at the agent's own priority)", s.DuckDB.Nice)
	}

	a := &cfg.Admin
	c.listen("admin.listen", a.Listen)
	c.atLeast("admin.query_max_rows", int64(a.QueryMaxRows), 1, "")
	c.positive("admin.query_timeout", a.QueryTimeout)
	c.atLeast("admin.max_concurrent_queries", int64(a.MaxConcurrentQueries), 1, "")

	h := &cfg.Inputs.HTTP
	c.listen("inputs.http.listen", h.Listen)
	c.size("inputs.http.max_body_size", h.MaxBodySize, 1<<10)
	c.atLeast("inputs.http.max_concurrent_requests", int64(h.MaxConcurrentRequests), 1, "")
	c.positive("inputs.http.queue_timeout", h.QueueTimeout)
	c.positive("inputs.http.read_timeout", h.ReadTimeout)
	c.positive("inputs.http.idle_timeout", h.IdleTimeout)
	if strings.ContainsAny(h.DatabaseTag, ",= \\") {
		c.bad("inputs.http.database_tag", "%q is not a plain tag key (no commas, =, spaces or backslashes)", h.DatabaseTag)
	}
	if (h.TLS.CertFile == "") != (h.TLS.KeyFile == "") {
		c.bad("inputs.http.tls", "set both cert_file and key_file, or neither")
	}

	t := &cfg.Inputs.TCP
	c.listen("inputs.tcp.listen", t.Listen)
	c.atLeast("inputs.tcp.max_connections", int64(t.MaxConnections), 1, "")
	c.size("inputs.tcp.max_line_size", t.MaxLineSize, 1<<10)
	c.oneOf("inputs.tcp.precision", t.Precision, precisions...)
	c.positive("inputs.tcp.idle_timeout", t.IdleTimeout)

	u := &cfg.Inputs.UDP
	c.listen("inputs.udp.listen", u.Listen)
	c.oneOf("inputs.udp.precision", u.Precision, precisions...)
	c.size("inputs.udp.max_datagram_size", u.MaxDatagramSize, 512)
	if u.MaxDatagramSize > 64<<10 {
		c.bad("inputs.udp.max_datagram_size", "%s is above 64KiB, more than a UDP datagram holds", u.MaxDatagramSize)
	}
	c.atLeast("inputs.udp.queue_datagrams", int64(u.QueueDatagrams), 1, "")
	if u.ReadBuffer > 1<<30 {
		c.bad("inputs.udp.read_buffer", "%s is above the maximum 1GiB", u.ReadBuffer)
	}

	cfg.validateMQTT(c)
	cfg.validateListeners(c)
	cfg.validateOutputs(c)
	return c.probs
}

func (cfg *Config) validateMQTT(c *checker) {
	m := &cfg.Inputs.MQTT
	if m.Enabled && len(m.Brokers) == 0 {
		c.bad("inputs.mqtt.brokers", "list at least one broker, e.g. tcp://127.0.0.1:1883")
	}
	c.brokers("inputs.mqtt.brokers", m.Brokers)
	c.positive("inputs.mqtt.keepalive", m.Keepalive)
	if m.Keepalive > 0 && m.Keepalive < Duration(time.Second) {
		c.bad("inputs.mqtt.keepalive", "%s is below the minimum 1s", m.Keepalive)
	}
	c.positive("inputs.mqtt.connect_timeout", m.ConnectTimeout)
	c.positive("inputs.mqtt.reconnect_min", m.ReconnectMin)
	if m.ReconnectMax < m.ReconnectMin {
		c.bad("inputs.mqtt.reconnect_max", "%s is shorter than reconnect_min %s", m.ReconnectMax, m.ReconnectMin)
	}
	c.atLeast("inputs.mqtt.max_inflight", int64(m.MaxInflight), 1, "")
	if m.MaxInflight > 65535 {
		c.bad("inputs.mqtt.max_inflight", "%d is above MQTT's limit of 65535 messages in flight", m.MaxInflight)
	}
	c.size("inputs.mqtt.max_payload_size", m.MaxPayloadSize, 1)
	if (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
		c.bad("inputs.mqtt.tls", "set both cert_file and key_file, or neither")
	}
	if m.Enabled && len(m.Subscriptions) == 0 {
		c.bad("inputs.mqtt.subscriptions", "list at least one subscription, e.g. [{topic: \"sensors/#\"}]")
	}
	for i, s := range m.Subscriptions {
		key := fmt.Sprintf("inputs.mqtt.subscriptions[%d]", i)
		if err := checkTopicFilter(s.Topic); err != nil {
			c.bad(key+".topic", "%v", err)
		}
		if s.QoS < 0 || s.QoS > 2 {
			c.bad(key+".qos", "%d is not an MQTT QoS; use 0, 1 or 2", s.QoS)
		}
		c.oneOf(key+".format", s.Format, "influx", "json", "value")
		if s.Format == "value" && s.Measurement == "" && !strings.Contains(s.TopicPattern, "{measurement}") {
			c.bad(key+".measurement", "format value needs a measurement, or {measurement} in topic_pattern")
		}
		if strings.Contains(s.TopicPattern, "{}") {
			c.bad(key+".topic_pattern", "%q: {} names no tag; write {site} or {measurement}", s.TopicPattern)
		}
	}
}

func (c *checker) brokers(key string, brokers []string) {
	for i, b := range brokers {
		key := fmt.Sprintf("%s[%d]", key, i)
		u, err := url.Parse(b)
		if err != nil || u.Host == "" {
			c.bad(key, "%q is not a broker URL such as tcp://host:1883 or ssl://host:8883", b)
			continue
		}
		switch u.Scheme {
		case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
		default:
			c.bad(key, "scheme %q of %q is not one of tcp, mqtt, ssl, tls, mqtts, ws, wss", u.Scheme, b)
		}
	}
}

// checkTopicFilter applies MQTT's rules: # only as the whole last level, + only as a whole level.
func checkTopicFilter(f string) error {
	if f == "" {
		return fmt.Errorf("must not be empty")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("%q: # must be the whole last level (sensors/#)", f)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("%q: + must be a whole level (sensors/+/temp)", f)
		}
	}
	return nil
}

// validateListeners refuses two enabled TCP listeners on one address; UDP and
// TCP may share a port number.
func (cfg *Config) validateListeners(c *checker) {
	type l struct{ key, addr string }
	tcp := []l{{"admin.listen", cfg.Admin.Listen}}
	if cfg.Inputs.HTTP.Enabled {
		tcp = append(tcp, l{"inputs.http.listen", cfg.Inputs.HTTP.Listen})
	}
	if cfg.Inputs.TCP.Enabled {
		tcp = append(tcp, l{"inputs.tcp.listen", cfg.Inputs.TCP.Listen})
	}
	for i := range tcp {
		for j := i + 1; j < len(tcp); j++ {
			if tcp[i].addr != tcp[j].addr || strings.HasSuffix(tcp[i].addr, ":0") {
				continue
			}
			a, b := tcp[j], tcp[i]
			if c.lines[a.key] == 0 { // report it where the file set it
				a, b = b, a
			}
			c.bad(a.key, "%q is also %s; give each listener its own port", a.addr, b.key)
		}
	}
}
