// Package config reads fpagent's YAML configuration, strictly: an unknown key,
// a value of the wrong type, a bad duration or size or an out-of-range port is
// an error that names the key and the line. ${VAR} and ${VAR:-default} are
// expanded first. Every key has a default, so no file at all is a valid
// configuration (see Default and agent.yaml.example).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration. Its yaml tags are the file's keys.
type Config struct {
	// DataDir holds the WAL (<data_dir>/wal) and the DuckDB file
	// (<data_dir>/fpagent.duckdb) unless storage.base_dir or storage.db_path say otherwise.
	DataDir string `yaml:"data_dir"`
	// ShutdownTimeout bounds a clean stop: stopping inputs, the final flush and closing.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	Log             Log      `yaml:"log"`
	Storage         Storage  `yaml:"storage"`
	Admin           Admin    `yaml:"admin"`
	Inputs          Inputs   `yaml:"inputs"`
	Outputs         Outputs  `yaml:"outputs"`
	Export          Export   `yaml:"export"`
}

// Log configures log/slog.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// Storage configures the WAL-first store. The seed's names stand; its numeric
// forms flush_interval_seconds and max_wal_age_seconds are read too.
type Storage struct {
	BaseDir              string   `yaml:"base_dir"` // WAL directory; "" = <data_dir>/wal
	DBPath               string   `yaml:"db_path"`  // DuckDB file; "" = <data_dir>/fpagent.duckdb
	MaxWALSize           Size     `yaml:"max_wal_size"`
	MaxWALAge            Duration `yaml:"max_wal_age"`
	MaxWALAgeSeconds     *Seconds `yaml:"max_wal_age_seconds,omitempty"`
	WALPreallocate       bool     `yaml:"wal_preallocate"`
	BatchSize            int      `yaml:"batch_size"`
	FlushInterval        Duration `yaml:"flush_interval"`
	FlushIntervalSeconds *Seconds `yaml:"flush_interval_seconds,omitempty"`
	FlushMinInterval     Duration `yaml:"flush_min_interval"` // spacing of batch_size flushes; 0 = none
	Sync                 string   `yaml:"sync"`               // always | interval | none
	SyncInterval         Duration `yaml:"sync_interval"`
	CacheMaxKeys         int      `yaml:"cache_max_keys"`
	MaxSeries            int      `yaml:"max_series"`
	DiskBudget           Size     `yaml:"disk_budget"`
	StoreTimeout         Duration `yaml:"store_timeout"`
	DuckDB               DuckDB   `yaml:"duckdb"`
}

// DuckDB holds the database's resource settings.
type DuckDB struct {
	MemoryLimit string `yaml:"memory_limit"` // passed to DuckDB as is, e.g. 256MB
	Threads     int    `yaml:"threads"`
	Nice        int    `yaml:"nice"` // of the thread DuckDB flushes on; 0 = the agent's own
}

// Admin configures the local admin HTTP API.
type Admin struct {
	Listen               string   `yaml:"listen"`
	Token                string   `yaml:"token"` // "" = no authentication
	QueryMaxRows         int      `yaml:"query_max_rows"`
	QueryTimeout         Duration `yaml:"query_timeout"`
	MaxConcurrentQueries int      `yaml:"max_concurrent_queries"`
}

// Inputs holds one section per input.
type Inputs struct {
	HTTP HTTPInput `yaml:"http"`
	TCP  TCPInput  `yaml:"tcp"`
	UDP  UDPInput  `yaml:"udp"`
	MQTT MQTTInput `yaml:"mqtt"`
}

// HTTPInput is the InfluxDB-compatible write endpoint (/write, /api/v2/write, /ping).
type HTTPInput struct {
	Enabled               bool      `yaml:"enabled"`
	Listen                string    `yaml:"listen"`
	MaxBodySize           Size      `yaml:"max_body_size"`
	Token                 string    `yaml:"token"`
	DatabaseTag           string    `yaml:"database_tag"` // "" = do not tag points with ?db= / bucket
	MaxConcurrentRequests int       `yaml:"max_concurrent_requests"`
	QueueTimeout          Duration  `yaml:"queue_timeout"` // a request over the limit waits this long, then 429
	ReadTimeout           Duration  `yaml:"read_timeout"`  // whole request, body included
	IdleTimeout           Duration  `yaml:"idle_timeout"`  // keep-alive connections
	TLS                   ServerTLS `yaml:"tls"`
}

// ServerTLS turns on TLS for a listener when both files are set.
type ServerTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether TLS is configured.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" }

// TCPInput is line protocol over TCP, one point per line.
type TCPInput struct {
	Enabled        bool     `yaml:"enabled"`
	Listen         string   `yaml:"listen"`
	MaxConnections int      `yaml:"max_connections"`
	MaxLineSize    Size     `yaml:"max_line_size"`
	IdleTimeout    Duration `yaml:"idle_timeout"`
	Precision      string   `yaml:"precision"`
}

// UDPInput is line protocol over UDP, one or more lines per datagram.
type UDPInput struct {
	Enabled         bool   `yaml:"enabled"`
	Listen          string `yaml:"listen"`
	ReadBuffer      Size   `yaml:"read_buffer"` // SO_RCVBUF; 0 = the OS default
	MaxDatagramSize Size   `yaml:"max_datagram_size"`
	QueueDatagrams  int    `yaml:"queue_datagrams"` // datagrams waiting to be stored; more are dropped and counted
	Precision       string `yaml:"precision"`
}

// MQTTInput subscribes to an MQTT broker.
type MQTTInput struct {
	Enabled        bool           `yaml:"enabled"`
	Brokers        []string       `yaml:"brokers"`
	ClientID       string         `yaml:"client_id"` // "" = fpagent-<hostname>
	Username       string         `yaml:"username"`
	Password       string         `yaml:"password"`
	CleanSession   bool           `yaml:"clean_session"`
	Keepalive      Duration       `yaml:"keepalive"`
	ConnectTimeout Duration       `yaml:"connect_timeout"`
	ReconnectMin   Duration       `yaml:"reconnect_min"` // first wait before reconnecting; doubles up to reconnect_max
	ReconnectMax   Duration       `yaml:"reconnect_max"`
	MaxInflight    int            `yaml:"max_inflight"`
	MaxPayloadSize Size           `yaml:"max_payload_size"`
	TLS            ClientTLS      `yaml:"tls"`
	Subscriptions  []Subscription `yaml:"subscriptions"`
}

// ClientTLS configures TLS towards a broker.
type ClientTLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Subscription is one MQTT topic filter and how to read its payloads.
type Subscription struct {
	Topic        string   `yaml:"topic"`
	QoS          int      `yaml:"qos"`
	Format       string   `yaml:"format"`        // influx | json | value
	TopicPattern string   `yaml:"topic_pattern"` // e.g. sensors/{site}/{device}/{measurement}: named levels become tags
	Measurement  string   `yaml:"measurement"`   // for json and value payloads, unless the pattern names one
	TagKeys      []string `yaml:"tag_keys"`      // json keys that become tags
	TimeKey      string   `yaml:"time_key"`      // json key holding the timestamp
	TimeFormat   string   `yaml:"time_format"`   // unix | unix_ms | unix_us | unix_ns | rfc3339 | a Go layout
	TopicTag     string   `yaml:"topic_tag"`     // tag that receives the topic; "" = none
}

// Outputs lists where the agent forwards what it stores; none by default.
type Outputs struct {
	Influx []InfluxOutput `yaml:"influx"`
	MQTT   []MQTTOutput   `yaml:"mqtt"`
}

// OutputQueue is what every output has: how it reads the WAL and what
// happens when it cannot keep up.
type OutputQueue struct {
	Name       string   `yaml:"name"`       // unique among outputs; names the cursor file and the metrics label
	BatchSize  int      `yaml:"batch_size"` // points per send
	RetryMin   Duration `yaml:"retry_min"`  // first wait after a failed send; doubles (with jitter) up to retry_max
	RetryMax   Duration `yaml:"retry_max"`
	DiskBudget Size     `yaml:"disk_budget"` // WAL bytes the output may leave behind it
	OnFull     string   `yaml:"on_full"`     // block | drop_oldest: what happens when it is over disk_budget
}

func defaultQueue() OutputQueue {
	return OutputQueue{BatchSize: 5000, RetryMin: Duration(time.Second), RetryMax: Duration(time.Minute),
		DiskBudget: 1 << 30, OnFull: "block"}
}

// InfluxOutput posts line protocol to an InfluxDB-compatible write API.
type InfluxOutput struct {
	OutputQueue     `yaml:",inline"`
	URL             string    `yaml:"url"`
	API             string    `yaml:"api"` // v1 | v2
	Database        string    `yaml:"database"`
	RetentionPolicy string    `yaml:"retention_policy"`
	Org             string    `yaml:"org"`
	Bucket          string    `yaml:"bucket"`
	Token           string    `yaml:"token"`
	Username        string    `yaml:"username"`
	Password        string    `yaml:"password"`
	Gzip            bool      `yaml:"gzip"`
	Timeout         Duration  `yaml:"timeout"`
	TLS             ClientTLS `yaml:"tls"`
}

func (o *InfluxOutput) setDefaults() {
	*o = InfluxOutput{OutputQueue: defaultQueue(), API: "v1", Gzip: true, Timeout: Duration(30 * time.Second)}
}

// MQTTOutput publishes readings to a broker with QoS 1 or 2.
type MQTTOutput struct {
	OutputQueue    `yaml:",inline"`
	Brokers        []string  `yaml:"brokers"`
	ClientID       string    `yaml:"client_id"` // "" = fpagent-<hostname>-<name>
	Username       string    `yaml:"username"`
	Password       string    `yaml:"password"`
	Topic          string    `yaml:"topic"`  // {measurement} and {tag_key} are replaced
	Format         string    `yaml:"format"` // influx | json
	QoS            int       `yaml:"qos"`
	Retain         bool      `yaml:"retain"`
	MaxLines       int       `yaml:"max_lines_per_message"`
	Timeout        Duration  `yaml:"timeout"` // for the broker's acknowledgements of one batch
	ConnectTimeout Duration  `yaml:"connect_timeout"`
	Keepalive      Duration  `yaml:"keepalive"`
	TLS            ClientTLS `yaml:"tls"`
}

func (o *MQTTOutput) setDefaults() {
	*o = MQTTOutput{OutputQueue: defaultQueue(), Brokers: []string{}, Topic: "fpagent/{measurement}", Format: "influx",
		QoS: 1, MaxLines: 100, Timeout: Duration(30 * time.Second), ConnectTimeout: Duration(10 * time.Second),
		Keepalive: Duration(30 * time.Second)}
}

// Export writes history from DuckDB to Parquet files, one per UTC day.
type Export struct {
	Dir   string `yaml:"dir"`   // "" = <data_dir>/export
	Daily bool   `yaml:"daily"` // export each finished UTC day once, shortly after midnight UTC
}

// ExportDir is where Parquet exports go: export.dir, or <data_dir>/export.
func (c *Config) ExportDir() string {
	if c.Export.Dir != "" {
		return c.Export.Dir
	}
	return filepath.Join(c.DataDir, "export")
}

// OutputsDir holds the outputs' cursors: <data_dir>/outputs.
func (c *Config) OutputsDir() string { return filepath.Join(c.DataDir, "outputs") }

func (s *Subscription) setDefaults() {
	*s = Subscription{QoS: 1, Format: "influx", TagKeys: []string{}}
}

// Default returns the configuration used when no file is given.
func Default() *Config {
	sub := Subscription{Topic: "sensors/#"}
	sub.setDefaults()
	sub.Topic = "sensors/#"
	return &Config{
		DataDir:         "./fpagent-data",
		ShutdownTimeout: Duration(60 * time.Second),
		Log:             Log{Level: "info", Format: "text"},
		Storage: Storage{
			MaxWALSize:       10 << 20,
			MaxWALAge:        Duration(300 * time.Second),
			WALPreallocate:   true,
			BatchSize:        1000,
			FlushInterval:    Duration(30 * time.Second),
			FlushMinInterval: Duration(time.Second),
			Sync:             "always",
			SyncInterval:     Duration(100 * time.Millisecond),
			CacheMaxKeys:     100000,
			MaxSeries:        100000,
			DiskBudget:       1 << 30,
			StoreTimeout:     Duration(5 * time.Second),
			DuckDB:           DuckDB{MemoryLimit: "256MB", Threads: 1, Nice: 10},
		},
		Admin: Admin{
			Listen:               "127.0.0.1:8187",
			QueryMaxRows:         10000,
			QueryTimeout:         Duration(10 * time.Second),
			MaxConcurrentQueries: 4,
		},
		Inputs: Inputs{
			HTTP: HTTPInput{
				Enabled: true, Listen: "127.0.0.1:8186", MaxBodySize: 32 << 20, DatabaseTag: "db",
				MaxConcurrentRequests: 64, QueueTimeout: Duration(time.Second),
				ReadTimeout: Duration(time.Minute), IdleTimeout: Duration(2 * time.Minute),
			},
			TCP: TCPInput{
				Enabled: true, Listen: "127.0.0.1:8094", MaxConnections: 256, MaxLineSize: 64 << 10,
				IdleTimeout: Duration(5 * time.Minute), Precision: "ns",
			},
			UDP: UDPInput{
				Enabled: true, Listen: "127.0.0.1:8089", ReadBuffer: 8 << 20, MaxDatagramSize: 64 << 10,
				QueueDatagrams: 1024, Precision: "ns",
			},
			MQTT: MQTTInput{
				Brokers:        []string{"tcp://127.0.0.1:1883"},
				Keepalive:      Duration(30 * time.Second),
				ConnectTimeout: Duration(10 * time.Second),
				ReconnectMin:   Duration(time.Second),
				ReconnectMax:   Duration(30 * time.Second),
				MaxInflight:    1000,
				MaxPayloadSize: 1 << 20,
				Subscriptions:  []Subscription{sub},
			},
		},
		Outputs: Outputs{Influx: []InfluxOutput{}, MQTT: []MQTTOutput{}},
	}
}

// WALDir is where the WAL lives: storage.base_dir, or <data_dir>/wal.
func (c *Config) WALDir() string {
	if c.Storage.BaseDir != "" {
		return c.Storage.BaseDir
	}
	return filepath.Join(c.DataDir, "wal")
}

// DBPath is the DuckDB file: storage.db_path, or <data_dir>/fpagent.duckdb.
func (c *Config) DBPath() string {
	if c.Storage.DBPath != "" {
		return c.Storage.DBPath
	}
	return filepath.Join(c.DataDir, "fpagent.duckdb")
}

// Problem is one thing wrong with a config file.
type Problem struct {
	Line int    // 1-based; 0 when the problem is not on one line (a default, the whole file)
	Key  string // dotted key such as storage.batch_size; "" when none applies
	Msg  string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error lists everything wrong with one config file.
type Error struct {
	File     string // "" when parsed from memory
	Problems []Problem
}

func (e *Error) Error() string {
	name := e.File
	if name == "" {
		name = "config"
	}
	if len(e.Problems) == 1 {
		return name + ": " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problems:", name, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}

// Load reads and checks the file at path. path "" means no file: the defaults.
// Every error it returns is an *Error.
func Load(path string) (*Config, error) {
	if path == "" {
		return Default(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		msg := err.Error()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			msg = pe.Err.Error()
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			msg = "no such file; give an existing file with -config, or none to run on defaults"
		case errors.Is(err, fs.ErrPermission):
			msg = "cannot read it (permission denied); fix its mode or owner"
		}
		return nil, &Error{File: path, Problems: []Problem{{Msg: msg}}}
	}
	return parse(data, path, osLookup)
}

// Parse reads a config from memory; name is used in messages.
func Parse(data []byte, name string) (*Config, error) {
	return parse(data, name, osLookup)
}

func parse(data []byte, name string, lookup func(string) (string, bool)) (*Config, error) {
	fail := func(p ...Problem) (*Config, error) { return nil, &Error{File: name, Problems: p} }
	if len(bytes.TrimSpace(data)) == 0 {
		return fail(Problem{Msg: "the file is empty; write at least one setting, or run without -config to use the defaults"})
	}
	if probs := checkText(data); len(probs) > 0 {
		return fail(probs...)
	}
	text, probs := expandEnv(string(data), lookup)
	if len(probs) > 0 {
		return fail(probs...)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		return fail(yamlProblem(err))
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return fail(Problem{Msg: "the file holds no settings (only comments?); write at least one, or run without -config to use the defaults"})
	}
	cfg := Default()
	d := &decoder{lines: map[string]int{}}
	d.decode(doc.Content[0], reflect.ValueOf(cfg).Elem(), "")
	if len(d.problems) > 0 {
		return fail(d.problems...)
	}
	d.problems = cfg.resolveAliases(d.lines)
	d.problems = append(d.problems, cfg.validate(d.lines)...)
	if len(d.problems) > 0 {
		return fail(d.problems...)
	}
	return cfg, nil
}

// checkText finds what YAML would report badly: tabs used for indentation
// and bytes that are not text.
func checkText(data []byte) []Problem {
	var probs []Problem
	for i, line := range bytes.Split(data, []byte("\n")) {
		indent := line[:len(line)-len(bytes.TrimLeft(line, " \t"))]
		if bytes.IndexByte(indent, '\t') >= 0 {
			probs = append(probs, Problem{Line: i + 1, Msg: "tab in indentation; YAML indents with spaces only"})
		}
		if bytes.IndexByte(line, 0) >= 0 {
			probs = append(probs, Problem{Line: i + 1, Msg: "NUL byte; this is not a text file"})
			break
		}
	}
	return probs
}

// yamlProblem turns a yaml.v3 syntax error ("yaml: line 3: did not find
// expected key") into a Problem with its line.
func yamlProblem(err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if _, scanErr := fmt.Sscanf(msg, "line %d:", &line); scanErr == nil {
		_, rest, _ := strings.Cut(msg, ":")
		return Problem{Line: line, Msg: "YAML syntax: " + strings.TrimSpace(rest)}
	}
	return Problem{Msg: "YAML syntax: " + msg}
}

// resolveAliases folds the seed's numeric keys into their duration keys.
func (c *Config) resolveAliases(lines map[string]int) []Problem {
	var probs []Problem
	fold := func(secs **Seconds, dst *Duration, seedKey, key string) {
		if *secs == nil {
			return
		}
		if l, set := lines["storage."+key]; set {
			probs = append(probs, Problem{Line: lines["storage."+seedKey], Key: "storage." + seedKey,
				Msg: fmt.Sprintf("storage.%s is also set (line %d); keep one of the two", key, l)})
		}
		*dst = Duration(**secs)
		lines["storage."+key] = lines["storage."+seedKey]
		*secs = nil
	}
	fold(&c.Storage.FlushIntervalSeconds, &c.Storage.FlushInterval, "flush_interval_seconds", "flush_interval")
	fold(&c.Storage.MaxWALAgeSeconds, &c.Storage.MaxWALAge, "max_wal_age_seconds", "max_wal_age")
	return probs
}

// Marshal writes the configuration as YAML, every key included.
func (c *Config) Marshal() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	// Reading expands $$ to $, so a literal $ is written as $$: what
	// Marshal prints reads back as the same config.
	return bytes.ReplaceAll(b.Bytes(), []byte("$"), []byte("$$")), nil
}

// Diff lists the dotted keys whose values differ between a and b, in file order.
func Diff(a, b *Config) []string {
	var out []string
	diffValues(reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem(), "", &out)
	return out
}

func diffValues(a, b reflect.Value, path string, out *[]string) {
	if a.Kind() == reflect.Struct {
		for i := range a.NumField() {
			f := a.Type().Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			switch {
			case opts == "inline":
				diffValues(a.Field(i), b.Field(i), path, out)
			case name != "" && name != "-":
				diffValues(a.Field(i), b.Field(i), join(path, name), out)
			}
		}
		return
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		*out = append(*out, path)
	}
}
