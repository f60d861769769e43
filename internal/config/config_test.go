package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDefaultIsValid(t *testing.T) {
	cfg := Default()
	if probs := cfg.validate(map[string]int{}); len(probs) > 0 {
		t.Fatalf("the defaults do not validate: %v", probs)
	}
	if cfg.WALDir() != filepath.Join("fpagent-data", "wal") || cfg.DBPath() != filepath.Join("fpagent-data", "fpagent.duckdb") {
		t.Fatalf("paths: %s %s", cfg.WALDir(), cfg.DBPath())
	}
	for _, addr := range []string{cfg.Admin.Listen, cfg.Inputs.HTTP.Listen, cfg.Inputs.TCP.Listen, cfg.Inputs.UDP.Listen} {
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("default listener %s is not on loopback", addr)
		}
	}
	if cfg.Inputs.MQTT.Enabled {
		t.Error("mqtt is enabled by default; the agent must run without a broker")
	}
}

func TestLoadNoFileIsDefault(t *testing.T) {
	cfg, err := Load("")
	if err != nil || !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("Load(\"\") = %+v, %v", cfg, err)
	}
}

// The example documents every key with its default: it must parse, hold the
// defaults, and set every key the config has.
func TestExampleHoldsEveryDefault(t *testing.T) {
	data, err := os.ReadFile("../../agent.yaml.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(data, "agent.yaml.example")
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(cfg, want) {
		got, _ := cfg.Marshal()
		def, _ := want.Marshal()
		t.Fatalf("agent.yaml.example differs from Default():\n--- example\n%s\n--- default\n%s", got, def)
	}
	// The outputs are documented in a commented block (the default is none):
	// uncommented, it must parse and, with the rest, set every key.
	block := regexp.MustCompile(`# BEGIN OUTPUT EXAMPLE\n((?s:.*))# END OUTPUT EXAMPLE\n(outputs:\n(?:  .*\n)*)`)
	m := block.FindSubmatchIndex(data)
	if m == nil {
		t.Fatal("agent.yaml.example: no BEGIN/END OUTPUT EXAMPLE block followed by outputs:")
	}
	uncommented := regexp.MustCompile(`(?m)^# ?`).ReplaceAll(data[m[2]:m[3]], nil)
	data = append(append(append([]byte{}, data[:m[0]]...), uncommented...), data[m[1]:]...)
	if _, err := Parse(data, "agent.yaml.example with the output example"); err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	d := &decoder{lines: map[string]int{}}
	d.decode(doc.Content[0], reflect.ValueOf(Default()).Elem(), "")
	for _, key := range leafKeys(reflect.TypeOf(Config{}), "") {
		if _, ok := d.lines[key]; !ok {
			t.Errorf("agent.yaml.example does not document %s", key)
		}
	}
}

// leafKeys lists the dotted keys of every settable value, the seed's aliases
// excepted (they are documented in comments); list elements are [0].
func leafKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for name, idx := range structFields(t) {
		f := t.FieldByIndex(idx)
		key := join(prefix, name)
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Pointer:
			continue
		case ft.Kind() == reflect.Struct:
			keys = append(keys, leafKeys(ft, key)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			keys = append(keys, leafKeys(ft.Elem(), key+"[0]")...)
		default:
			keys = append(keys, key)
		}
	}
	return keys
}

func TestEffectiveConfigRoundTrips(t *testing.T) {
	cfg := Default()
	cfg.Storage.FlushInterval = Duration(1500 * time.Millisecond)
	cfg.Storage.DiskBudget = 3 << 30
	out, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out, "effective")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !reflect.DeepEqual(cfg, back) {
		t.Fatalf("round trip changed the config:\n%s", out)
	}
	if strings.Contains(string(out), "_seconds") {
		t.Fatalf("effective config prints a seed alias:\n%s", out)
	}
}

func TestParseValues(t *testing.T) {
	f := func(name, src string, check func(*Config) bool) {
		t.Helper()
		cfg, err := parse([]byte(src), name, func(k string) (string, bool) {
			v, ok := map[string]string{"PORT": "9000", "EMPTY": "", "DIR": "/var/lib/x"}[k]
			return v, ok
		})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		if !check(cfg) {
			out, _ := cfg.Marshal()
			t.Errorf("%s: unexpected result:\n%s", name, out)
		}
	}
	f("seed names", "storage:\n  flush_interval_seconds: 5\n  max_wal_age_seconds: 1.5\n  max_wal_size: 1048576\n", func(c *Config) bool {
		return c.Storage.FlushInterval.D() == 5*time.Second && c.Storage.MaxWALAge.D() == 1500*time.Millisecond &&
			c.Storage.MaxWALSize == 1<<20 && c.Storage.FlushIntervalSeconds == nil
	})
	f("sizes", "storage:\n  max_wal_size: 64KiB\n  disk_budget: 2GB\n", func(c *Config) bool {
		return c.Storage.MaxWALSize == 64<<10 && c.Storage.DiskBudget == 2e9
	})
	f("env", "admin:\n  listen: 127.0.0.1:${PORT}\ndata_dir: ${DIR}\nlog:\n  level: ${LEVEL:-debug}\n", func(c *Config) bool {
		return c.Admin.Listen == "127.0.0.1:9000" && c.DataDir == "/var/lib/x" && c.Log.Level == "debug"
	})
	f("env empty takes default", "data_dir: ${EMPTY:-/data}\n", func(c *Config) bool { return c.DataDir == "/data" })
	f("dollar escape", "admin:\n  token: \"a$${PORT}b$c\"\n", func(c *Config) bool {
		out, _ := c.Marshal()
		back, err := Parse(out, "effective")
		return c.Admin.Token == "a${PORT}b$c" && err == nil && back.Admin.Token == c.Admin.Token
	})
	f("comment mentions unset var", "# token: ${NOT_SET}\ndata_dir: x\n", func(c *Config) bool { return c.DataDir == "x" })
	f("subscription defaults", "inputs:\n  mqtt:\n    enabled: true\n    subscriptions:\n      - topic: a/+/b\n      - {topic: c/#, qos: 0, format: value, measurement: m}\n      - {topic: d/+/+, format: value, topic_pattern: \"d/{site}/{measurement}\"}\n",
		func(c *Config) bool {
			s := c.Inputs.MQTT.Subscriptions
			return len(s) == 3 && s[0].QoS == 1 && s[0].Format == "influx" && s[1].QoS == 0 && s[1].Format == "value"
		})
	f("null section keeps defaults", "log:\ninputs:\n  tcp: {enabled: false}\n", func(c *Config) bool {
		return c.Log.Level == "info" && !c.Inputs.TCP.Enabled && c.Inputs.TCP.Listen == "127.0.0.1:8094"
	})
	f("outputs with defaults", "outputs:\n  influx:\n    - {name: central, url: http://c:8086}\n  mqtt:\n    - {name: up, brokers: [tcp://c:1883]}\n",
		func(c *Config) bool {
			i, m := c.Outputs.Influx[0], c.Outputs.MQTT[0]
			return i.API == "v1" && i.Gzip && i.BatchSize == 5000 && i.OnFull == "block" && i.DiskBudget == 1<<30 &&
				m.QoS == 1 && m.Topic == "fpagent/{measurement}" && m.Format == "influx" && m.RetryMax == Duration(time.Minute)
		})
	f("numeric string", "admin:\n  token: 12345\n", func(c *Config) bool { return c.Admin.Token == "12345" })
	f("anchors", "inputs:\n  tcp: {precision: &p ms}\n  udp: {precision: *p}\n", func(c *Config) bool {
		return c.Inputs.UDP.Precision == "ms"
	})
}

// Each broken config gives an *Error whose message names the key or line.
func TestBrokenConfigs(t *testing.T) {
	f := func(name, src string, want ...string) {
		t.Helper()
		_, err := parse([]byte(src), "agent.yaml", func(string) (string, bool) { return "", false })
		if err == nil {
			t.Errorf("%s: accepted", name)
			return
		}
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("%s: error %T is not *config.Error", name, err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not mention %q", name, err, w)
			}
		}
	}
	f("unknown key", "data_dir: x\nfoo: 1\n", "line 2", "foo", "unknown key")
	f("nested unknown key", "storage:\n  batch_size: 5\n  flush_intervall: 5s\n", "line 3", "storage.flush_intervall", `did you mean "flush_interval"`)
	f("deep unknown key", "inputs:\n  mqtt:\n    tls:\n      ca: x\n", "line 4", "inputs.mqtt.tls.ca")
	f("wrong type", "storage:\n  batch_size: lots\n", "line 2", "storage.batch_size", "whole number", `"lots"`)
	f("wrong type map", "log: debug\n", "line 1", "log", "mapping")
	f("wrong type bool", "inputs:\n  tcp:\n    enabled: yes\n", "line 3", "inputs.tcp.enabled", "true or false")
	f("negative size", "storage:\n  max_wal_size: -5MiB\n", "line 2", "storage.max_wal_size", "negative")
	f("negative bytes", "storage:\n  disk_budget: -1\n", "line 2", "storage.disk_budget", "negative")
	f("bad size unit", "inputs:\n  tcp:\n    max_line_size: 64M\n", "line 3", "inputs.tcp.max_line_size", "unknown unit")
	f("bad duration", "storage:\n  flush_interval: soon\n", "line 2", "storage.flush_interval", "not a duration")
	f("duration without unit", "admin:\n  query_timeout: 10\n", "line 2", "admin.query_timeout", "no unit")
	f("negative duration", "storage:\n  store_timeout: -1s\n", "line 2", "storage.store_timeout", "negative")
	f("zero duration", "storage:\n  flush_interval: 0s\n", "line 2", "storage.flush_interval", "longer than 0s")
	f("unknown sync policy", "storage:\n  sync: sometimes\n", "line 2", "storage.sync", `"sometimes"`, "always, interval, none")
	f("port 70000", "inputs:\n  http:\n    listen: 127.0.0.1:70000\n", "line 3", "inputs.http.listen", "70000", "out of range")
	f("no port", "admin:\n  listen: localhost\n", "line 2", "admin.listen", "host:port")
	f("same port", "admin:\n  listen: 127.0.0.1:8186\n", "line 2", "inputs.http.listen", "admin.listen")
	f("both seed and new name", "storage:\n  flush_interval: 10s\n  flush_interval_seconds: 10\n", "line 3", "storage.flush_interval_seconds", "line 2")
	f("seed name wrong type", "storage:\n  max_wal_age_seconds: 5m\n", "line 2", "storage.max_wal_age_seconds", "number of seconds")
	f("set twice", "data_dir: a\ndata_dir: b\n", "line 2", "data_dir", "first on line 1")
	f("tabs", "storage:\n\tbatch_size: 5\n", "line 2", "tab")
	f("empty file", "", "empty")
	f("blank file", "\n  \n", "empty")
	f("only comments", "# nothing\n", "no settings")
	f("syntax", "storage:\n  batch_size: [1\n", "YAML syntax")
	f("unset env", "data_dir: ${NOPE}\n", "line 1", "NOPE is not set")
	f("unterminated env", "data_dir: ${NOPE\n", "line 1", "closing }")
	f("bad env name", "data_dir: ${1X}\n", "line 1", "not an environment variable name")
	f("bad log level", "log: {level: verbose}\n", "line 1", "log.level", "debug, info, warn, error")
	f("qos", "inputs:\n  mqtt:\n    subscriptions:\n      - topic: a\n        qos: 3\n", "line 5", "inputs.mqtt.subscriptions[0].qos")
	f("topic filter", "inputs:\n  mqtt:\n    subscriptions: [{topic: a/#/b}]\n", "inputs.mqtt.subscriptions[0].topic", "whole last level")
	f("value without measurement", "inputs:\n  mqtt:\n    subscriptions: [{topic: a, format: value}]\n", "inputs.mqtt.subscriptions[0].measurement")
	f("empty pattern name", "inputs:\n  mqtt:\n    subscriptions: [{topic: a/b, topic_pattern: \"a/{}\"}]\n", "inputs.mqtt.subscriptions[0].topic_pattern")
	f("broker url", "inputs:\n  mqtt:\n    brokers: [\"localhost:1883\"]\n", "inputs.mqtt.brokers[0]")
	f("tls half", "inputs:\n  http:\n    tls: {cert_file: a.pem}\n", "line 3", "inputs.http.tls", "both")
	f("memory limit", "storage:\n  duckdb: {memory_limit: lots}\n", "storage.duckdb.memory_limit")
	f("nice", "storage:\n  duckdb: {nice: 20}\n", "storage.duckdb.nice", "0-19")
	f("output without name", "outputs:\n  influx:\n    - url: http://c:8086\n", "outputs.influx[0].name", "give each output a name")
	f("output name with slash", "outputs:\n  influx:\n    - {name: a/b, url: http://c:8086}\n", "outputs.influx[0].name", `"a/b"`)
	f("output names twice", "outputs:\n  influx:\n    - {name: a, url: http://c:8086}\n  mqtt:\n    - {name: a, brokers: [tcp://c:1883]}\n",
		"outputs.mqtt[0].name", "outputs.influx[0]", "unique")
	f("output url", "outputs:\n  influx:\n    - {name: a, url: \"c:8086\"}\n", "outputs.influx[0].url", `"c:8086"`)
	f("output unknown key", "outputs:\n  influx:\n    - {name: a, url: http://c, batchsize: 5}\n", "outputs.influx[0].batchsize", `did you mean "batch_size"`)
	f("output v2 bucket", "outputs:\n  influx:\n    - {name: a, url: http://c, api: v2}\n", "outputs.influx[0].bucket")
	f("output on_full", "outputs:\n  influx:\n    - {name: a, url: http://c, on_full: panic}\n", "outputs.influx[0].on_full", "block, drop_oldest")
	f("output budget", "outputs:\n  influx:\n    - {name: a, url: http://c, disk_budget: 1MiB}\n", "outputs.influx[0].disk_budget", "max_wal_size")
	f("output retry", "outputs:\n  influx:\n    - {name: a, url: http://c, retry_min: 10s, retry_max: 1s}\n", "outputs.influx[0].retry_max")
	f("mqtt output qos 0", "outputs:\n  mqtt:\n    - {name: a, brokers: [tcp://c:1883], qos: 0}\n", "outputs.mqtt[0].qos", "acknowledgement")
	f("mqtt output no broker", "outputs:\n  mqtt:\n    - {name: a}\n", "outputs.mqtt[0].brokers")
	f("mqtt output wildcard topic", "outputs:\n  mqtt:\n    - {name: a, brokers: [tcp://c:1883], topic: a/#}\n", "outputs.mqtt[0].topic")
	f("line break in a value", "data_dir: \"a\\nb\"\n", "line 1", "data_dir", "control character")
	f("list for scalar", "data_dir: [a, b]\n", "line 1", "data_dir", "want a string")
	f("several problems", "foo: 1\nbar: 2\n", "2 problems", "line 1", "line 2")
	f("alias bomb", "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n", "unknown key")
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	p := filepath.Join(dir, "secret.yaml")
	if err := os.WriteFile(p, []byte("data_dir: x\n"), 0o000); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// root reads any file; a directory is unreadable as a file for everyone.
		p = dir
	}
	_, err = Load(p)
	var ce *Error
	if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), p) {
		t.Errorf("unreadable file: %v", err)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("data_dir: /tmp/x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if cfg, err := Load(good); err != nil || cfg.DataDir != "/tmp/x" {
		t.Errorf("good file: %v", err)
	}
}

func TestUnits(t *testing.T) {
	sizes := map[string]int64{"0": 0, "4096": 4096, "64KiB": 65536, "10MiB": 10 << 20, "1GB": 1e9, "1.5GiB": 3 << 29, "2 mib": 2 << 20, "7B": 7}
	for in, want := range sizes {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "10M", "1.5", "-1", "1e3", "10 parsecs", "99999999999TiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	formats := map[int64]string{0: "0", 10 << 20: "10MiB", 1e9: "1GB", 1000: "1KB", 1001: "1001", 1 << 30: "1GiB"}
	for in, want := range formats {
		if got := FormatSize(in); got != want {
			t.Errorf("FormatSize(%d) = %q; want %q", in, got, want)
		}
	}
	durs := map[time.Duration]string{0: "0s", 5 * time.Minute: "5m", 90 * time.Second: "90s", 100 * time.Millisecond: "100ms", 2 * time.Hour: "2h", 1500 * time.Microsecond: "1.5ms"}
	for in, want := range durs {
		if got := FormatDuration(in); got != want {
			t.Errorf("FormatDuration(%s) = %q; want %q", in, got, want)
		}
	}
}
