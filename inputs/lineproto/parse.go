// Package lineproto turns InfluxDB line protocol into storage points. It is the
// one parsing path shared by every input that accepts line protocol (TCP, UDP,
// HTTP and MQTT payloads), so that a line means the same wherever it arrives.
//
// Each bad line is rejected alone, with its line number and the reason, and
// the good lines around it are kept. Parsing is built on
// github.com/influxdata/line-protocol/v2/lineprotocol; everything kept from
// the decoder is copied (or interned) first, since its slices are only valid
// until its next call.
package lineproto

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/fpagent/fpagent/storage"
)

// DefaultMaxRejectBytes is how much of a rejected line is kept with its
// reject when Meta.MaxRejectBytes is zero.
const DefaultMaxRejectBytes = 1024

// maxReasonBytes bounds a reject reason: decoder messages quote the
// offending token, which may be as long as the line.
const maxReasonBytes = 512

// Meta describes one payload: where it came from and how to read it.
type Meta struct {
	Source string // storage.Reject.Source: "tcp", "udp", "http", "mqtt"
	Origin string // peer address or MQTT topic, kept with each reject
	// Received is the receive time: the time of points without a timestamp
	// (truncated to Precision, as InfluxDB does) and of rejects. Zero means now.
	Received time.Time
	// Tags are added to every point, replacing a tag of the same key in the
	// line (the HTTP listener keeps the database name this way).
	Tags []storage.Tag
	// Precision is the unit of the timestamps in the payload; 0 means
	// nanoseconds. See ParsePrecision.
	Precision time.Duration
	// FirstLine is the number of the payload's first line within its stream,
	// so that rejects name the line as the sender counts them; 0 means 1.
	FirstLine int
	// MaxRejectBytes bounds how much of a bad line is kept in its reject;
	// 0 means DefaultMaxRejectBytes.
	MaxRejectBytes int
}

// Parse appends the points of the line-protocol text data to b.Points, and a
// storage.Reject for each line that cannot be parsed to b.Rejects. It returns
// how many of each it appended. Points are normalized (tags sorted, duplicate
// keys resolved last-wins, Key set to the canonical series key). Nothing
// appended refers to data, so the caller may reuse it. Parse is safe for
// concurrent use.
func Parse(b *storage.Batch, data []byte, m Meta) (points, rejects int) {
	p := parsers.Get().(*parser)
	points, rejects = p.parse(b, data, &m)
	parsers.Put(p)
	return points, rejects
}

// Parsers are pooled rather than owned by connections: the pool holds about
// as many as parse at once, which bounds the memory of their intern caches.
var parsers = sync.Pool{New: func() any { return newParser() }}

const (
	internMaxEntries = 1 << 14 // cleared when full, so memory stays bounded
	internMaxLen     = 256     // longer strings are not worth a map entry
	seriesMaxEntries = 1 << 13 // cleared when full
	maxFieldKeys     = 64      // field keys remembered per series
	chunkLen         = 1024    // tags or fields per slab
	chunkMinFree     = 64
)

type parser struct {
	intern  map[string]string
	tags    []storage.Tag   // slab the points' Tags are cut from
	fields  []storage.Field // slab the points' Fields are cut from
	series  map[string]*series
	scratch []byte // cache key of a series with the payload's tags
	lines   lineIndex
}

func newParser() *parser {
	return &parser{intern: make(map[string]string, 1024), series: make(map[string]*series, 1024)}
}

// str returns b as a string, shared with earlier equal strings: measurement
// names, tag keys and values and field keys repeat from line to line.
func (p *parser) str(b []byte) string {
	if s, ok := p.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(s) <= internMaxLen {
		if len(p.intern) >= internMaxEntries {
			clear(p.intern)
		}
		p.intern[s] = s
	}
	return s
}

// lineErr is a rejected line: its number within the payload (1-based), or the
// byte offset where the problem is when the number is not known yet.
type lineErr struct {
	line   int
	off    int
	reason string
}

func (p *parser) parse(b *storage.Batch, data []byte, m *Meta) (points, rejects int) {
	now := m.Received
	if now.IsZero() {
		now = time.Now()
	}
	nowNs := now.UnixNano()
	unit := int64(m.Precision)
	if unit <= 0 {
		unit = 1
	}
	defTime := nowNs - nowNs%unit
	if nowNs < 0 && nowNs%unit != 0 {
		defTime -= unit
	}
	firstLine := m.FirstLine
	if firstLine <= 0 {
		firstLine = 1
	}
	maxReject := m.MaxRejectBytes
	if maxReject <= 0 {
		maxReject = DefaultMaxRejectBytes
	}
	p.lines = lineIndex{data: data, line: 1}
	dec := lineprotocol.NewDecoderWithBytes(data)
	for dec.Next() {
		var pt storage.Point
		le := p.entry(dec, data, &pt, m, unit, defTime)
		if le == nil {
			b.Points = append(b.Points, pt)
			points++
			continue
		}
		line := le.line
		if line == 0 {
			line = p.lines.lineOf(le.off)
		}
		payload := p.lines.at(line)
		if len(payload) > maxReject {
			payload = payload[:maxReject]
		}
		b.Rejects = append(b.Rejects, storage.Reject{
			Time:    nowNs,
			Source:  m.Source,
			Origin:  m.Origin,
			Line:    firstLine - 1 + line,
			Reason:  cutReason(le.reason),
			Payload: bytes.Clone(payload),
		})
		rejects++
	}
	p.lines = lineIndex{}
	return points, rejects
}

// entry decodes the entry the decoder is at into pt. On error the slabs are
// left as they were, so nothing of the bad line is kept.
func (p *parser) entry(dec *lineprotocol.Decoder, data []byte, pt *storage.Point, m *Meta, unit, defTime int64) *lineErr {
	if cap(p.tags)-len(p.tags) < chunkMinFree {
		p.tags = make([]storage.Tag, 0, chunkLen)
	}
	if cap(p.fields)-len(p.fields) < chunkMinFree {
		p.fields = make([]storage.Field, 0, chunkLen)
	}
	t0, f0 := len(p.tags), len(p.fields)
	le := p.decode(dec, data, pt, m, unit, defTime)
	if le != nil {
		p.tags, p.fields = p.tags[:t0], p.fields[:f0]
		return le
	}
	fields := p.fields[f0:]
	if len(fields) > 16 {
		fields = dedupeFields(fields)
		p.fields = p.fields[:f0+len(fields)]
	}
	f1 := len(p.fields)
	pt.Fields = p.fields[f0:f1:f1]
	// Tags are sorted and unique and Key is set, so Normalize only resolves
	// duplicate field keys of short lines, exactly as the store expects.
	pt.Normalize()
	return nil
}

// series is what a series section (measurement and tags, as sent) decodes
// to. Points of the same series share it: their Tags are read-only.
type series struct {
	measurement string
	tags        []storage.Tag
	key         string
	fieldKeys   []string // field keys of the series' last line, reused while they repeat
}

func (p *parser) decode(dec *lineprotocol.Decoder, data []byte, pt *storage.Point, m *Meta, unit, defTime int64) *lineErr {
	name, err := dec.Measurement()
	if err != nil {
		return decodeErr(err)
	}
	// The series section as sent is the cache key. It is only known when the
	// measurement is a slice of data, that is when it has no escapes.
	var raw []byte
	if off := cap(data) - cap(name); len(name) > 0 && off >= 0 && off < len(data) && &data[off] == &name[0] {
		raw = seriesSection(data[off:])
	}
	var cacheKey []byte
	var s *series
	if raw != nil {
		cacheKey = raw
		if len(m.Tags) > 0 {
			p.scratch = appendExtraTagsKey(append(p.scratch[:0], raw...), m.Tags)
			cacheKey = p.scratch
		}
		s = p.series[string(cacheKey)]
	}
	if s != nil {
		pt.Measurement, pt.Tags, pt.Key = s.measurement, s.tags, s.key
	} else {
		pt.Measurement = p.str(name)
		t0 := len(p.tags)
		for {
			k, v, err := dec.NextTag()
			if err != nil {
				return decodeErr(err)
			}
			if k == nil {
				break
			}
			p.tags = append(p.tags, storage.Tag{Key: p.str(k), Value: p.str(v)})
		}
		// Tags of the payload come last, so that they win over the line's.
		p.tags = append(p.tags, m.Tags...)
		tags := sortTags(p.tags[t0:])
		t1 := t0 + len(tags)
		p.tags = p.tags[:t1]
		if t1 > t0 {
			pt.Tags = p.tags[t0:t1:t1]
		}
		pt.Key = storage.SeriesKey(pt.Measurement, pt.Tags)
		if cacheKey != nil {
			if len(p.series) >= seriesMaxEntries {
				clear(p.series)
			}
			s = &series{measurement: pt.Measurement, tags: pt.Tags, key: pt.Key}
			p.series[string(cacheKey)] = s
		}
	}
	n := 0
	for {
		k, v, err := dec.NextField()
		if err != nil {
			return decodeErr(err)
		}
		if k == nil {
			break
		}
		var f storage.Field
		if s != nil && n < len(s.fieldKeys) && string(k) == s.fieldKeys[n] {
			f.Key = s.fieldKeys[n]
		} else {
			f.Key = p.str(k)
			if s != nil {
				if n < len(s.fieldKeys) {
					s.fieldKeys = s.fieldKeys[:n]
				}
				if n == len(s.fieldKeys) && n < maxFieldKeys {
					s.fieldKeys = append(s.fieldKeys, f.Key)
				}
			}
		}
		n++
		switch v.Kind() {
		case lineprotocol.Float:
			f.Value = storage.FloatValue(v.FloatV())
		case lineprotocol.Int:
			f.Value = storage.IntValue(v.IntV())
		case lineprotocol.Uint:
			f.Value = storage.UintValue(v.UintV())
		case lineprotocol.Bool:
			f.Value = storage.BoolValue(v.BoolV())
		default:
			f.Value = storage.StringValue(string(v.BytesV()))
		}
		p.fields = append(p.fields, f)
	}
	ts, err := dec.TimeBytes()
	if err != nil {
		return decodeErr(err)
	}
	if ts == nil {
		pt.Time = defTime
		return nil
	}
	t, reason := parseTime(ts, unit)
	if reason != "" {
		// ts is a slice of data (the decoder never copies a timestamp), so its
		// capacity tells where it starts.
		return &lineErr{off: cap(data) - cap(ts), reason: reason}
	}
	pt.Time = t
	return nil
}

// seriesSection returns the measurement and tags at the start of line, up to
// the first unescaped space, or nil when the line ends first (it then has no
// fields, and the decoder says what is wrong). A backslash always escapes a
// space in the measurement and in tags.
func seriesSection(line []byte) []byte {
	for i := 0; ; {
		j := bytes.IndexByte(line[i:], ' ')
		if j < 0 {
			return nil
		}
		i += j
		if i > 0 && line[i-1] == '\\' {
			i++
			continue
		}
		if bytes.IndexByte(line[:i], '\n') >= 0 || bytes.IndexByte(line[:i], '\r') >= 0 {
			return nil
		}
		return line[:i]
	}
}

// appendExtraTagsKey makes the cache key of a series section with the tags of
// the payload added: NUL cannot occur in line protocol.
func appendExtraTagsKey(b []byte, tags []storage.Tag) []byte {
	for _, t := range tags {
		b = append(b, 0)
		b = append(b, t.Key...)
		b = append(b, 0)
		b = append(b, t.Value...)
	}
	return b
}

func decodeErr(err error) *lineErr {
	var de *lineprotocol.DecodeError
	if !errors.As(err, &de) {
		return &lineErr{line: 1, reason: err.Error()}
	}
	msg := de.Err.Error()
	switch msg {
	case "empty tag name", "expected field key but none found":
		// What the decoder says of a line that ends before its fields.
		msg = "no fields: a line is measurement[,tag=value...] field=value[,field=value...] [timestamp]"
	case "field value has unrecognized type":
		msg += ": want a float (1.5), integer (1i), unsigned (1u), string (\"s\") or boolean (t, f, true, false)"
	}
	return &lineErr{line: int(de.Line), reason: "column " + strconv.Itoa(de.Column) + ": " + msg}
}

// precisionName is the name of a timestamp unit as clients spell it.
func precisionName(unit int64) string {
	switch time.Duration(unit) {
	case time.Nanosecond:
		return "ns"
	case time.Microsecond:
		return "us"
	case time.Millisecond:
		return "ms"
	case time.Second:
		return "s"
	case time.Minute:
		return "m"
	case time.Hour:
		return "h"
	}
	return time.Duration(unit).String()
}

// parseTime reads a decimal timestamp in units of unit nanoseconds.
func parseTime(b []byte, unit int64) (int64, string) {
	digits := b
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		digits = b[1:]
	}
	if len(digits) == 0 {
		return 0, fmt.Sprintf("invalid timestamp %q: want an integer", b)
	}
	var u uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Sprintf("invalid timestamp %q: want an integer", b)
		}
		if u > (1<<63)/10 {
			return 0, fmt.Sprintf("timestamp %s is out of range", b)
		}
		u = u*10 + uint64(c-'0')
		if u > 1<<63 {
			return 0, fmt.Sprintf("timestamp %s is out of range", b)
		}
	}
	if !neg && u == 1<<63 {
		return 0, fmt.Sprintf("timestamp %s is out of range", b)
	}
	t := int64(u)
	if neg {
		t = -t
	}
	if unit == 1 {
		return t, ""
	}
	if t > (1<<63-1)/unit || t < (-1<<63)/unit {
		return 0, fmt.Sprintf("timestamp %s at precision %s is out of range (nanoseconds since 1970 must fit 64 bits: years 1677 to 2262)", b, precisionName(unit))
	}
	return t * unit, ""
}

// dedupeFields keeps the last of fields with the same key, in the order
// storage.Point.Normalize keeps them, in linear time: Normalize compares
// every pair, which a line of many thousand fields would make slow.
func dedupeFields(fields []storage.Field) []storage.Field {
	last := make(map[string]int, len(fields))
	for i, f := range fields {
		last[f.Key] = i
	}
	if len(last) == len(fields) {
		return fields
	}
	out := fields[:0]
	for i, f := range fields {
		if last[f.Key] == i {
			out = append(out, f)
		}
	}
	return out
}

// sortTags sorts tags by key (insertion sort: lines have a few tags, often
// sorted already) and resolves duplicate keys as the store does, the last one
// winning. It returns the unique tags, a prefix of tags.
func sortTags(tags []storage.Tag) []storage.Tag {
	sorted := true
	for i := 1; i < len(tags); i++ {
		if tags[i-1].Key >= tags[i].Key {
			sorted = false
			break
		}
	}
	if sorted {
		return tags
	}
	if len(tags) <= 16 {
		for i := 1; i < len(tags); i++ {
			for j := i; j > 0 && tags[j-1].Key > tags[j].Key; j-- {
				tags[j-1], tags[j] = tags[j], tags[j-1]
			}
		}
	} else {
		// Stable, so that the last of equal keys stays last.
		sort.SliceStable(tags, func(i, j int) bool { return tags[i].Key < tags[j].Key })
	}
	out := tags[:0]
	for i, t := range tags {
		if i+1 < len(tags) && tags[i+1].Key == t.Key {
			continue
		}
		out = append(out, t)
	}
	return out
}

func cutReason(s string) string {
	if len(s) <= maxReasonBytes {
		return s
	}
	i := maxReasonBytes
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// lineIndex finds lines of a payload by number or by byte offset. Rejects
// come in line order, so it only ever moves forward (and restarts if not).
type lineIndex struct {
	data []byte
	line int // number of the line that starts at off
	off  int
}

// lineOf returns the number of the line holding byte offset off.
func (x *lineIndex) lineOf(off int) int {
	if off < x.off {
		x.line, x.off = 1, 0
	}
	for {
		i := bytes.IndexByte(x.data[x.off:], '\n')
		if i < 0 || x.off+i >= off {
			return x.line
		}
		x.off += i + 1
		x.line++
	}
}

// at returns line n without its line ending.
func (x *lineIndex) at(n int) []byte {
	if n < x.line {
		x.line, x.off = 1, 0
	}
	for x.line < n {
		i := bytes.IndexByte(x.data[x.off:], '\n')
		if i < 0 {
			return nil
		}
		x.off += i + 1
		x.line++
	}
	rest := x.data[x.off:]
	if i := bytes.IndexByte(rest, '\n'); i >= 0 {
		rest = rest[:i]
	}
	return bytes.TrimSuffix(rest, []byte{'\r'})
}
