package storage

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is the type of a field value, as line protocol has them.
type Kind uint8

// The field kinds. Their numbers are part of the WAL record format: never renumber.
const (
	KindFloat  Kind = 1
	KindInt    Kind = 2
	KindUint   Kind = 3
	KindString Kind = 4
	KindBool   Kind = 5
)

func (k Kind) String() string {
	switch k {
	case KindFloat:
		return "float"
	case KindInt:
		return "integer"
	case KindUint:
		return "unsigned"
	case KindString:
		return "string"
	case KindBool:
		return "boolean"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is one field value. The zero Value is invalid.
type Value struct {
	Kind Kind
	num  uint64 // float bits, int64 bits, uint64, or 0/1 for bool
	str  string
}

// FloatValue, IntValue, UintValue, StringValue and BoolValue build values.
func FloatValue(f float64) Value { return Value{Kind: KindFloat, num: math.Float64bits(f)} }
func IntValue(i int64) Value     { return Value{Kind: KindInt, num: uint64(i)} }
func UintValue(u uint64) Value   { return Value{Kind: KindUint, num: u} }
func StringValue(s string) Value { return Value{Kind: KindString, str: s} }
func BoolValue(b bool) Value {
	if b {
		return Value{Kind: KindBool, num: 1}
	}
	return Value{Kind: KindBool}
}

func (v Value) Float() float64 { return math.Float64frombits(v.num) }
func (v Value) Int() int64     { return int64(v.num) }
func (v Value) Uint() uint64   { return v.num }
func (v Value) Str() string    { return v.str }
func (v Value) Bool() bool     { return v.num != 0 }

// Tag is one tag of a series.
type Tag struct{ Key, Value string }

// Field is one named value of a point.
type Field struct {
	Key   string
	Value Value
}

// Point is one reading: what every input produces and what the store keeps.
// A point is identified by (Key, Time): storing the same point again replaces it.
type Point struct {
	// Key is the record key. Empty means the canonical series key of
	// Measurement and Tags (see SeriesKey); Normalize fills it in.
	Key         string
	Measurement string
	Tags        []Tag   // sorted by Key, unique after Normalize
	Fields      []Field // at least one; unique keys after Normalize
	Time        int64   // nanoseconds since the Unix epoch, UTC
}

// Reject is input that could not be turned into points. It is kept, with its
// reason, in the dead-letter table.
type Reject struct {
	Time    int64  // receive time, ns since the epoch
	Source  string // "http", "tcp", "udp", "mqtt"
	Origin  string // peer address, listener or MQTT topic
	Line    int    // 1-based line number within the payload; 0 when not applicable
	Reason  string
	Payload []byte // the offending input, possibly cut to a bound by the input
}

// Batch is what an input hands to the store in one call.
type Batch struct {
	Source  string
	Points  []Point
	Rejects []Reject
	// Normalized is the producer's promise that Normalize would change
	// none of the points and that each Key is SeriesKey(Measurement, Tags),
	// as lineproto.Parse makes them. The store then skips checking both,
	// which is a twentieth of the agent's CPU under line protocol.
	Normalized bool
}

// Normalize sorts tags by key, resolves duplicate tag and field keys as
// InfluxDB does (the last one wins) and fills in Key when it is empty. It
// writes to p.Tags only when they are not already sorted and unique, and
// never to p.Fields' backing array.
func (p *Point) Normalize() {
	if !tagsSortedUnique(p.Tags) {
		// Stable sort keeps the input order among equal keys, so the last
		// duplicate is the last of its run.
		sort.SliceStable(p.Tags, func(i, j int) bool { return p.Tags[i].Key < p.Tags[j].Key })
		out := p.Tags[:0]
		for i, t := range p.Tags {
			if i+1 < len(p.Tags) && p.Tags[i+1].Key == t.Key {
				continue
			}
			out = append(out, t)
		}
		p.Tags = out
	}
	if len(p.Fields) > 1 && !fieldsUnique(p.Fields) {
		// The last of each key wins, in the place of its last occurrence.
		last := make(map[string]int, len(p.Fields))
		for i, f := range p.Fields {
			last[f.Key] = i
		}
		out := make([]Field, 0, len(last))
		for i, f := range p.Fields {
			if last[f.Key] == i {
				out = append(out, f)
			}
		}
		p.Fields = out
	}
	if p.Key == "" {
		p.Key = SeriesKey(p.Measurement, p.Tags)
	}
}

func tagsSortedUnique(tags []Tag) bool {
	for i := 1; i < len(tags); i++ {
		if tags[i-1].Key >= tags[i].Key {
			return false
		}
	}
	return true
}

func fieldsUnique(fields []Field) bool {
	if len(fields) > 16 {
		seen := make(map[string]struct{}, len(fields))
		for _, f := range fields {
			if _, ok := seen[f.Key]; ok {
				return false
			}
			seen[f.Key] = struct{}{}
		}
		return true
	}
	for i := range fields {
		for j := i + 1; j < len(fields); j++ {
			if fields[i].Key == fields[j].Key {
				return false
			}
		}
	}
	return true
}

// SeriesKey is the canonical key of a series: measurement,tag1=v1,tag2=v2 with
// tags sorted by key and line-protocol escaping, so that the same series always
// gets the same key. tags must already be sorted. A backslash is escaped too
// (line protocol leaves it alone), so that ParseSeriesKey can always split a
// canonical key back into measurement and tags.
func SeriesKey(measurement string, tags []Tag) string {
	n := len(measurement)
	for _, t := range tags {
		n += 2 + len(t.Key) + len(t.Value)
	}
	b := make([]byte, 0, n+8)
	b = appendEscaped(b, measurement, `, \`)
	for _, t := range tags {
		b = append(b, ',')
		b = appendEscaped(b, t.Key, `,= \`)
		b = append(b, '=')
		b = appendEscaped(b, t.Value, `,= \`)
	}
	return string(b)
}

// ParseSeriesKey splits a canonical series key (as SeriesKey writes it) into
// its measurement and tags. ok is false when key is not in canonical form.
func ParseSeriesKey(key string) (measurement string, tags []Tag, ok bool) {
	// next reads one escaped token up to an unescaped byte in stops.
	next := func(i int, stops string) (tok string, end int, ok bool) {
		var b []byte
		for ; i < len(key); i++ {
			c := key[i]
			if c == '\\' {
				if i+1 == len(key) {
					return "", 0, false
				}
				i++
				b = append(b, key[i])
				continue
			}
			if strings.IndexByte(stops, c) >= 0 {
				break
			}
			b = append(b, c)
		}
		return string(b), i, true
	}
	measurement, i, ok := next(0, ",")
	if !ok || measurement == "" {
		return "", nil, false
	}
	for i < len(key) {
		var k, v string
		if k, i, ok = next(i+1, ",="); !ok || k == "" || i == len(key) || key[i] != '=' {
			return "", nil, false
		}
		if v, i, ok = next(i+1, ",="); !ok || (i < len(key) && key[i] == '=') {
			return "", nil, false
		}
		tags = append(tags, Tag{Key: k, Value: v})
	}
	if !tagsSortedUnique(tags) {
		return "", nil, false
	}
	return measurement, tags, true
}

func appendEscaped(b []byte, s, special string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		for j := 0; j < len(special); j++ {
			if c == special[j] {
				b = append(b, '\\')
				break
			}
		}
		b = append(b, c)
	}
	return b
}

// AppendJSON appends the point's JSON record,
// {"measurement":…,"tags":{…},"fields":{…},"time":"RFC3339Nano"}, to dst.
func (p *Point) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"measurement":`...)
	dst = appendJSONString(dst, p.Measurement)
	dst = append(dst, `,"tags":`...)
	dst = AppendTagsJSON(dst, p.Tags)
	dst = append(dst, `,"fields":`...)
	dst = AppendFieldsJSON(dst, p.Fields)
	dst = append(dst, `,"time":"`...)
	dst = time.Unix(0, p.Time).UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, `"}`...)
}

// AppendTagsJSON appends tags as a JSON object of strings.
func AppendTagsJSON(dst []byte, tags []Tag) []byte {
	dst = append(dst, '{')
	for i, t := range tags {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, t.Key)
		dst = append(dst, ':')
		dst = appendJSONString(dst, t.Value)
	}
	return append(dst, '}')
}

// AppendFieldsJSON appends fields as a JSON object. Floats always carry a
// decimal point or exponent so that SQL sees them as DOUBLE, integers never do;
// NaN and ±Inf, which JSON cannot hold, become null.
func AppendFieldsJSON(dst []byte, fields []Field) []byte {
	dst = append(dst, '{')
	for i, f := range fields {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, f.Key)
		dst = append(dst, ':')
		dst = f.Value.AppendJSON(dst)
	}
	return append(dst, '}')
}

// AppendJSON appends the value as JSON.
func (v Value) AppendJSON(dst []byte) []byte {
	switch v.Kind {
	case KindFloat:
		return appendFloatJSON(dst, v.Float())
	case KindInt:
		return strconv.AppendInt(dst, v.Int(), 10)
	case KindUint:
		return strconv.AppendUint(dst, v.Uint(), 10)
	case KindString:
		return appendJSONString(dst, v.str)
	case KindBool:
		return strconv.AppendBool(dst, v.Bool())
	}
	return append(dst, "null"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONBytes is appendJSONString for bytes, without a conversion.
func appendJSONBytes(dst []byte, s []byte) []byte {
	return appendJSON(dst, s)
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	return appendJSON(dst, s)
}

func appendJSON[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune([]byte(s[i:]))
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
