package mqtt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fpagent/fpagent/inputs/lineproto"
	"github.com/fpagent/fpagent/storage"
)

// The payload formats a subscription can read.
const (
	FormatInflux = "influx" // one or more line-protocol lines
	FormatJSON   = "json"   // an object, or an array of objects
	FormatValue  = "value"  // a bare number, bool or string
)

// DefaultMeasurement names the readings of json payloads when neither the
// subscription nor its topic pattern gives a measurement (as Telegraf's
// mqtt_consumer does).
const DefaultMeasurement = "mqtt_consumer"

// maxJSONDepth bounds how deep nested objects are flattened, so that a
// hostile payload cannot make the recursion deep.
const maxJSONDepth = 32

// The range of TIMESTAMP_NS that storage accepts (years 1678 to 2261).
var (
	minTime = time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	maxTime = time.Date(2261, 12, 31, 23, 59, 59, 0, time.UTC).UnixNano()
)

// subscription is a Subscription made ready to match topics and read payloads.
type subscription struct {
	Subscription
	filter  []string        // topic filter levels
	pattern []string        // topic pattern levels: "" = ignore, "measurement" or a tag name
	tagKeys map[string]bool // json keys that become tags
	timeFn  func(any) (int64, error)
}

func compileSubscription(s Subscription) (*subscription, error) {
	c := &subscription{Subscription: s, filter: strings.Split(s.Topic, "/")}
	if s.Topic == "" {
		return nil, errors.New("topic filter is empty; give one such as sensors/#")
	}
	switch s.Format {
	case FormatInflux, FormatJSON, FormatValue:
	case "":
		c.Format = FormatInflux
	default:
		return nil, fmt.Errorf("format %q is not one of influx, json, value", s.Format)
	}
	if s.QoS > 2 {
		return nil, fmt.Errorf("qos %d is not an MQTT QoS; use 0, 1 or 2", s.QoS)
	}
	if s.TopicPattern != "" {
		for _, l := range strings.Split(s.TopicPattern, "/") {
			name := ""
			if strings.HasPrefix(l, "{") && strings.HasSuffix(l, "}") {
				name = l[1 : len(l)-1]
				if name == "" {
					return nil, fmt.Errorf("topic_pattern %q: {} names no tag; write {site} or {measurement}", s.TopicPattern)
				}
			}
			c.pattern = append(c.pattern, name)
		}
	}
	c.tagKeys = make(map[string]bool, len(s.TagKeys))
	for _, k := range s.TagKeys {
		c.tagKeys[k] = true
	}
	fn, err := timeParser(s.TimeFormat)
	if err != nil {
		return nil, err
	}
	c.timeFn = fn
	if c.Format == FormatValue && c.Measurement == "" && !c.patternHasMeasurement() {
		return nil, fmt.Errorf("topic %q: format value needs a measurement, or {measurement} in topic_pattern", s.Topic)
	}
	return c, nil
}

func (s *subscription) patternHasMeasurement() bool {
	for _, n := range s.pattern {
		if n == "measurement" {
			return true
		}
	}
	return false
}

// matches reports whether topic matches the subscription's filter, with MQTT's
// rules: + is one level, # the rest (including none), and filters starting
// with a wildcard do not match topics starting with $.
func (s *subscription) matches(topic string) bool {
	if strings.HasPrefix(topic, "$") && (s.filter[0] == "+" || s.filter[0] == "#") {
		return false
	}
	for i, f := range s.filter {
		if f == "#" {
			return true
		}
		j := strings.IndexByte(topic, '/')
		level := topic
		if j >= 0 {
			level = topic[:j]
		}
		if f != "+" && f != level {
			return false
		}
		if j < 0 {
			// The topic has no more levels: it matches when the filter has
			// none either, or only a trailing # (sensors/# matches sensors).
			return i == len(s.filter)-1 || (i == len(s.filter)-2 && s.filter[i+1] == "#")
		}
		topic = topic[j+1:]
	}
	return false
}

// topicParts returns the measurement and tags the topic pattern takes from
// topic, plus the topic tag when configured.
func (s *subscription) topicParts(topic string) (measurement string, tags []storage.Tag) {
	if len(s.pattern) > 0 {
		levels := strings.Split(topic, "/")
		for i, name := range s.pattern {
			if name == "" || i >= len(levels) || levels[i] == "" {
				continue
			}
			if name == "measurement" {
				measurement = levels[i]
				continue
			}
			tags = append(tags, storage.Tag{Key: name, Value: levels[i]})
		}
	}
	if s.TopicTag != "" {
		tags = append(tags, storage.Tag{Key: s.TopicTag, Value: topic})
	}
	return measurement, tags
}

// parser turns one message into points or rejects.
type parser struct {
	maxRejectBytes int
}

// parse appends the readings of payload to b, or rejects for what cannot be
// read, and returns how many of each it appended.
func (p *parser) parse(b *storage.Batch, s *subscription, topic string, payload []byte, recv time.Time) (points, rejects int) {
	reject := func(line int, reason string, data []byte) {
		if len(data) > p.maxRejectBytes {
			data = data[:p.maxRejectBytes]
		}
		b.Rejects = append(b.Rejects, storage.Reject{
			Time: recv.UnixNano(), Source: Source, Origin: topic, Line: line,
			Reason: reason, Payload: bytes.Clone(data),
		})
		rejects++
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		return 0, 0 // an empty payload (a retained message being cleared) holds no readings
	}
	if !utf8.Valid(payload) {
		reject(0, "payload is not UTF-8 text (binary data?); "+s.Format+" payloads are text", payload)
		return 0, rejects
	}
	topicMeasurement, tags := s.topicParts(topic)
	measurement := topicMeasurement
	if measurement == "" {
		measurement = s.Measurement
	}
	switch s.Format {
	case FormatInflux:
		start := len(b.Points)
		n, r := lineproto.Parse(b, payload, lineproto.Meta{
			Source: Source, Origin: topic, Received: recv, Tags: tags, MaxRejectBytes: p.maxRejectBytes,
		})
		rejects += r
		if topicMeasurement != "" {
			// {measurement} in the topic pattern names the readings of
			// every line, as Telegraf's topic parsing does.
			for i := start; i < len(b.Points); i++ {
				pt := &b.Points[i]
				pt.Measurement, pt.Key = topicMeasurement, ""
				pt.Normalize()
			}
		}
		// Keep only points storage will take; others become rejects, so
		// that one odd line never makes the whole batch fail.
		kept := b.Points[:start]
		for i := start; i < len(b.Points); i++ {
			pt := b.Points[i]
			if reason := invalid(&pt); reason != "" {
				reject(0, reason, nil)
				n--
				continue
			}
			kept = append(kept, pt)
		}
		b.Points = kept
		return n, rejects
	case FormatValue:
		v, reason := parseValue(payload)
		if reason != "" {
			reject(0, reason, payload)
			return 0, rejects
		}
		pt := storage.Point{Measurement: measurement, Tags: tags,
			Fields: []storage.Field{{Key: "value", Value: v}}, Time: recv.UnixNano()}
		pt.Normalize()
		b.Points = append(b.Points, pt)
		return 1, rejects
	default: // FormatJSON
		if measurement == "" {
			measurement = DefaultMeasurement
		}
		dec := json.NewDecoder(bytes.NewReader(payload))
		dec.UseNumber()
		var doc any
		if err := dec.Decode(&doc); err != nil {
			reject(0, "invalid JSON: "+err.Error(), payload)
			return 0, rejects
		}
		if dec.More() {
			reject(0, "invalid JSON: more than one value; send one object or an array of objects", payload)
			return 0, rejects
		}
		objs := []any{doc}
		arr, isArray := doc.([]any)
		if isArray {
			objs = arr
		}
		for i, o := range objs {
			line := 0
			if isArray {
				line = i + 1
			}
			obj, ok := o.(map[string]any)
			if !ok {
				what := "the payload"
				if isArray {
					what = fmt.Sprintf("element %d of the array", i+1)
				}
				raw, _ := json.Marshal(o)
				reject(line, fmt.Sprintf("%s is a JSON %s, not an object", what, jsonKind(o)), raw)
				continue
			}
			pt, reason := s.jsonPoint(obj, measurement, tags, recv)
			if reason != "" {
				raw := payload // a lone object is kept as it came
				if isArray {
					raw, _ = json.Marshal(obj)
				}
				reject(line, reason, raw)
				continue
			}
			b.Points = append(b.Points, pt)
			points++
		}
		return points, rejects
	}
}

// invalid says why storage would refuse pt, or "" when it would not.
func invalid(pt *storage.Point) string {
	switch {
	case pt.Measurement == "":
		return "the measurement is empty"
	case len(pt.Fields) == 0:
		return fmt.Sprintf("measurement %q has no fields", pt.Measurement)
	case pt.Time < minTime || pt.Time > maxTime:
		return fmt.Sprintf("time %d is outside what storage holds (years 1678 to 2261)", pt.Time)
	}
	return ""
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	}
	return "object"
}

// jsonPoint builds one reading from a JSON object.
func (s *subscription) jsonPoint(obj map[string]any, measurement string, topicTags []storage.Tag, recv time.Time) (storage.Point, string) {
	pt := storage.Point{Measurement: measurement, Time: recv.UnixNano()}
	pt.Tags = append(pt.Tags, topicTags...)
	if s.TimeKey != "" {
		tv, ok := obj[s.TimeKey]
		if !ok {
			return pt, fmt.Sprintf("time key %q is missing", s.TimeKey)
		}
		ns, err := s.timeFn(tv)
		if err != nil {
			return pt, fmt.Sprintf("time key %q: %v", s.TimeKey, err)
		}
		pt.Time = ns
	}
	var fields []storage.Field
	var reason string
	var walk func(prefix string, o map[string]any, depth int)
	walk = func(prefix string, o map[string]any, depth int) {
		keys := make([]string, 0, len(o))
		for k := range o {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			name := k
			if prefix != "" {
				name = prefix + "_" + k
			}
			if depth == 0 && k == s.TimeKey {
				continue
			}
			v := o[k]
			if s.tagKeys[name] {
				if str, ok := tagValue(v); ok {
					pt.Tags = append(pt.Tags, storage.Tag{Key: name, Value: str})
				}
				continue
			}
			switch v := v.(type) {
			case nil:
			case map[string]any:
				if depth+1 >= maxJSONDepth {
					reason = fmt.Sprintf("key %q nests deeper than %d objects", name, maxJSONDepth)
					return
				}
				walk(name, v, depth+1)
			case []any:
				// Arrays of values flatten by index, as Telegraf's json parser does.
				m := make(map[string]any, len(v))
				for i, e := range v {
					m[strconv.Itoa(i)] = e
				}
				if depth+1 >= maxJSONDepth {
					reason = fmt.Sprintf("key %q nests deeper than %d levels", name, maxJSONDepth)
					return
				}
				walk(name, m, depth+1)
			case json.Number:
				f, err := strconv.ParseFloat(string(v), 64)
				if err != nil || math.IsInf(f, 0) {
					reason = fmt.Sprintf("key %q: number %s does not fit a float", name, v)
					return
				}
				fields = append(fields, storage.Field{Key: name, Value: storage.FloatValue(f)})
			case bool:
				fields = append(fields, storage.Field{Key: name, Value: storage.BoolValue(v)})
			case string:
				fields = append(fields, storage.Field{Key: name, Value: storage.StringValue(v)})
			}
			if reason != "" {
				return
			}
		}
	}
	walk("", obj, 0)
	if reason != "" {
		return pt, reason
	}
	if len(fields) == 0 {
		return pt, "the object has no fields (numbers, booleans or strings besides tag and time keys)"
	}
	pt.Fields = fields
	pt.Normalize()
	if r := invalid(&pt); r != "" {
		return pt, r
	}
	return pt, ""
}

func tagValue(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, v != ""
	case json.Number:
		return string(v), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}

// parseValue reads a bare value: a number becomes a float, true or false a
// boolean, anything else a string.
func parseValue(payload []byte) (storage.Value, string) {
	s := strings.TrimSpace(string(payload))
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return storage.Value{}, fmt.Sprintf("value %q is not a finite number", s)
		}
		return storage.FloatValue(f), ""
	}
	switch s {
	case "true", "True", "TRUE":
		return storage.BoolValue(true), ""
	case "false", "False", "FALSE":
		return storage.BoolValue(false), ""
	}
	return storage.StringValue(s), ""
}

// timeParser returns the function that reads a JSON time value in format:
// unix, unix_ms, unix_us, unix_ns, rfc3339 or a Go layout. "" reads numbers
// as unix seconds and strings as RFC 3339.
func timeParser(format string) (func(any) (int64, error), error) {
	unit := func(scale int64) func(any) (int64, error) {
		return func(v any) (int64, error) { return unixTime(v, scale) }
	}
	switch format {
	case "unix":
		return unit(int64(time.Second)), nil
	case "unix_ms":
		return unit(int64(time.Millisecond)), nil
	case "unix_us":
		return unit(int64(time.Microsecond)), nil
	case "unix_ns":
		return unit(1), nil
	case "rfc3339":
		return layoutTime(time.RFC3339Nano), nil
	case "":
		return func(v any) (int64, error) {
			if _, ok := v.(string); ok {
				return layoutTime(time.RFC3339Nano)(v)
			}
			return unixTime(v, int64(time.Second))
		}, nil
	}
	if !strings.ContainsAny(format, "0123456789") {
		return nil, fmt.Errorf("time_format %q is not unix, unix_ms, unix_us, unix_ns, rfc3339 or a Go layout such as 2006-01-02 15:04:05", format)
	}
	return layoutTime(format), nil
}

func layoutTime(layout string) func(any) (int64, error) {
	return func(v any) (int64, error) {
		s, ok := v.(string)
		if !ok {
			return 0, fmt.Errorf("%s is not a string in layout %q", jsonKind(v), layout)
		}
		t, err := time.Parse(layout, s)
		if err != nil {
			return 0, fmt.Errorf("%q does not match layout %q", s, layout)
		}
		if t.Year() < 1678 || t.Year() > 2261 {
			return 0, fmt.Errorf("%q is outside the years 1678 to 2261", s)
		}
		return t.UnixNano(), nil
	}
}

// unixTime reads a number (or a numeric string) of scale-nanosecond units.
// Integers are read exactly; fractions are kept to the nanosecond.
func unixTime(v any, scale int64) (int64, error) {
	var s string
	switch v := v.(type) {
	case json.Number:
		s = string(v)
	case string:
		s = strings.TrimSpace(v)
	default:
		return 0, fmt.Errorf("%s is not a number of %s", jsonKind(v), unitName(scale))
	}
	outside := fmt.Errorf("%s %s is outside the years 1678 to 2261", s, unitName(scale))
	whole, frac, dotted := strings.Cut(s, ".")
	if i, err := strconv.ParseInt(whole, 10, 64); err == nil && (!dotted || isDigits(frac)) {
		if i > math.MaxInt64/scale || i < math.MinInt64/scale {
			return 0, outside
		}
		ns := i * scale
		// The fraction is read as decimal digits, exactly, to the nanosecond.
		var f int64
		for unit := scale / 10; unit > 0 && len(frac) > 0; unit /= 10 {
			f += int64(frac[0]-'0') * unit
			frac = frac[1:]
		}
		if strings.HasPrefix(whole, "-") {
			ns -= f
		} else {
			ns += f
		}
		if ns < minTime || ns > maxTime {
			return 0, outside
		}
		return ns, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number of %s", s, unitName(scale))
	}
	ns := f * float64(scale)
	if ns < float64(minTime) || ns > float64(maxTime) {
		return 0, outside
	}
	return int64(math.Round(ns)), nil
}

func unitName(scale int64) string {
	switch scale {
	case int64(time.Second):
		return "seconds"
	case int64(time.Millisecond):
		return "milliseconds"
	case int64(time.Microsecond):
		return "microseconds"
	}
	return "nanoseconds"
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
