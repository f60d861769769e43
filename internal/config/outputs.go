package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

var outputName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// validateOutputs checks the outputs section: unique names usable as file
// names, budgets no smaller than a WAL segment, and each type's own keys.
func (cfg *Config) validateOutputs(c *checker) {
	names := map[string]string{}
	queue := func(key string, q *OutputQueue) {
		if !outputName.MatchString(q.Name) {
			c.bad(key+".name", "%q: give each output a name of letters, digits, _ . - (up to 64), e.g. central", q.Name)
		} else if other, dup := names[q.Name]; dup {
			c.bad(key+".name", "%q is also the name of %s; output names must be unique", q.Name, other)
		}
		names[q.Name] = key
		c.atLeast(key+".batch_size", int64(q.BatchSize), 1, "")
		c.positive(key+".retry_min", q.RetryMin)
		if q.RetryMax < q.RetryMin {
			c.bad(key+".retry_max", "%s is shorter than retry_min %s", q.RetryMax, q.RetryMin)
		}
		if q.DiskBudget < cfg.Storage.MaxWALSize {
			c.bad(key+".disk_budget", "%s is smaller than one WAL segment (storage.max_wal_size %s)", q.DiskBudget, cfg.Storage.MaxWALSize)
		}
		c.oneOf(key+".on_full", q.OnFull, "block", "drop_oldest")
	}
	for i := range cfg.Outputs.Influx {
		o := &cfg.Outputs.Influx[i]
		key := fmt.Sprintf("outputs.influx[%d]", i)
		queue(key, &o.OutputQueue)
		if u, err := url.Parse(o.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			c.bad(key+".url", "%q is not an http:// or https:// URL, e.g. http://central:8086", o.URL)
		}
		c.oneOf(key+".api", o.API, "v1", "v2")
		if o.API == "v2" && o.Bucket == "" {
			c.bad(key+".bucket", "api v2 needs a bucket")
		}
		if o.Token != "" && o.Username != "" {
			c.bad(key+".token", "set token or username/password, not both")
		}
		c.positive(key+".timeout", o.Timeout)
		if (o.TLS.CertFile == "") != (o.TLS.KeyFile == "") {
			c.bad(key+".tls", "set both cert_file and key_file, or neither")
		}
	}
	for i := range cfg.Outputs.MQTT {
		o := &cfg.Outputs.MQTT[i]
		key := fmt.Sprintf("outputs.mqtt[%d]", i)
		queue(key, &o.OutputQueue)
		if len(o.Brokers) == 0 {
			c.bad(key+".brokers", "list at least one broker, e.g. tcp://central:1883")
		}
		c.brokers(key+".brokers", o.Brokers)
		if o.Topic == "" || strings.ContainsAny(o.Topic, "+#") {
			c.bad(key+".topic", "%q: want a topic to publish to, without + or #, e.g. fpagent/{site}/{measurement}", o.Topic)
		}
		c.oneOf(key+".format", o.Format, "influx", "json")
		if o.QoS != 1 && o.QoS != 2 {
			c.bad(key+".qos", "%d: want 1 or 2 (QoS 0 has no acknowledgement to forward on)", o.QoS)
		}
		c.atLeast(key+".max_lines_per_message", int64(o.MaxLines), 1, "")
		c.positive(key+".timeout", o.Timeout)
		c.positive(key+".connect_timeout", o.ConnectTimeout)
		c.positive(key+".keepalive", o.Keepalive)
		if (o.TLS.CertFile == "") != (o.TLS.KeyFile == "") {
			c.bad(key+".tls", "set both cert_file and key_file, or neither")
		}
	}
}
