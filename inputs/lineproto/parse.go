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
	"math"
	"runtime"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

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
// appended refers to data, so the caller may reuse it. A batch that holds
// only Parse's points may be marked storage.Batch.Normalized (FuzzParse
// checks that promise). Parse is safe for concurrent use.
func Parse(b *storage.Batch, data []byte, m Meta) (points, rejects int) {
	var p *parser
	select {
	case p = <-parsers:
	default:
		p = newParser()
	}
	points, rejects = p.parse(b, data, &m)
	select {
	case parsers <- p:
	default: // enough are kept
	}
	return points, rejects
}

// Parsers are kept in a bounded free list rather than owned by connections,
// which bounds the memory of their caches, and rather than in a sync.Pool,
// which a garbage collection empties: warm caches are the fast path.
var parsers = make(chan *parser, 2*runtime.GOMAXPROCS(0))

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
	noFast  bool   // tests: the decoder alone
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

// call holds what one Parse call needs along the way.
type call struct {
	b         *storage.Batch
	m         *Meta
	nowNs     int64
	unit      int64
	defTime   int64
	maxReject int
	points    int
	rejects   int
}

func (p *parser) parse(b *storage.Batch, data []byte, m *Meta) (points, rejects int) {
	now := m.Received
	if now.IsZero() {
		now = time.Now()
	}
	c := call{b: b, m: m, nowNs: now.UnixNano(), unit: int64(m.Precision), maxReject: m.MaxRejectBytes}
	if c.unit <= 0 {
		c.unit = 1
	}
	c.defTime = c.nowNs - c.nowNs%c.unit
	if c.nowNs < 0 && c.nowNs%c.unit != 0 {
		c.defTime -= c.unit
	}
	if c.maxReject <= 0 {
		c.maxReject = DefaultMaxRejectBytes
	}
	firstLine := m.FirstLine
	if firstLine <= 0 {
		firstLine = 1
	}
	// Only a quoted string can hold a newline, so before the first quote
	// every entry is one line, and lines can go through the fast path one by
	// one. From the line of the first quote on, the decoder reads alone.
	quote := len(data)
	if !p.noFast {
		if i := bytes.IndexByte(data, '"'); i >= 0 {
			quote = bytes.LastIndexByte(data[:i], '\n') + 1
		}
	} else {
		quote = 0
	}
	line := firstLine
	segStart, segLine := -1, 0 // lines waiting for the decoder
	pos := 0
	for pos < quote {
		end := quote
		if i := bytes.IndexByte(data[pos:quote], '\n'); i >= 0 {
			end = pos + i
		}
		var pt storage.Point
		if p.fast(data[pos:end], &pt, &c) {
			if segStart >= 0 {
				p.decodeAll(&c, data[segStart:pos], segLine)
				segStart = -1
			}
			b.Points = append(b.Points, pt)
			c.points++
		} else if segStart < 0 {
			segStart, segLine = pos, line
		}
		pos = end + 1
		line++
	}
	if segStart >= 0 {
		p.decodeAll(&c, data[segStart:min(pos, len(data))], segLine)
	}
	if quote < len(data) {
		p.decodeAll(&c, data[quote:], line)
	}
	return c.points, c.rejects
}

// decodeAll parses data, whose first line is number firstLine, with the
// decoder.
func (p *parser) decodeAll(c *call, data []byte, firstLine int) {
	p.lines = lineIndex{data: data, line: 1}
	dec := lineprotocol.NewDecoderWithBytes(data)
	for dec.Next() {
		var pt storage.Point
		le := p.entry(dec, data, &pt, c.m, c.unit, c.defTime)
		if le == nil {
			c.b.Points = append(c.b.Points, pt)
			c.points++
			continue
		}
		line := le.line
		if line == 0 {
			line = p.lines.lineOf(le.off)
		}
		payload := p.lines.at(line)
		if len(payload) > c.maxReject {
			payload = payload[:c.maxReject]
		}
		c.b.Rejects = append(c.b.Rejects, storage.Reject{
			Time:    c.nowNs,
			Source:  c.m.Source,
			Origin:  c.m.Origin,
			Line:    firstLine - 1 + line,
			Reason:  cutReason(le.reason),
			Payload: bytes.Clone(payload),
		})
		c.rejects++
	}
	p.lines = lineIndex{}
}

// fast parses the common line without the decoder, or reports false and
// leaves the line to it: a series already decoded (so its measurement and
// tags come from the cache), then only unescaped fields of number or
// boolean values and an optional timestamp, each separated by one space.
// Whatever it accepts, the decoder would parse the same way; the values
// are parsed by the same strconv functions with the same checks.
func (p *parser) fast(line []byte, pt *storage.Point, c *call) bool {
	raw := seriesSection(line)
	if len(raw) == 0 {
		return false
	}
	key := raw
	if len(c.m.Tags) > 0 {
		p.scratch = appendExtraTagsKey(append(p.scratch[:0], raw...), c.m.Tags)
		key = p.scratch
	}
	s := p.series[string(key)]
	if s == nil {
		return false
	}
	rest := line[len(raw)+1:]
	if cap(p.fields)-len(p.fields) < chunkMinFree {
		p.fields = make([]storage.Field, 0, chunkLen)
	}
	f0 := len(p.fields)
	ok := p.fastFields(rest, s, pt, c)
	if !ok {
		p.fields = p.fields[:f0]
		return false
	}
	fields := p.fields[f0:]
	if len(fields) > 16 {
		fields = dedupeFields(fields)
		p.fields = p.fields[:f0+len(fields)]
	}
	f1 := len(p.fields)
	pt.Measurement, pt.Tags, pt.Key = s.measurement, s.tags, s.key
	pt.Fields = p.fields[f0:f1:f1]
	pt.Normalize()
	return true
}

func (p *parser) fastFields(rest []byte, s *series, pt *storage.Point, c *call) bool {
	n := 0
	i := 0
	for {
		k0 := i
		for i < len(rest) {
			ch := rest[i]
			if ch == '=' || ch == ',' || ch <= ' ' || ch >= 0x7f || ch == '\\' {
				break
			}
			i++
		}
		if i == k0 || i == len(rest) || rest[i] != '=' {
			return false
		}
		k := rest[k0:i]
		i++
		v0 := i
		for i < len(rest) && rest[i] != ',' && rest[i] != ' ' {
			i++
		}
		v := rest[v0:i]
		if len(v) == 0 {
			return false
		}
		var f storage.Field
		switch ch := v[0]; {
		case ch == 't' || ch == 'T' || ch == 'f' || ch == 'F':
			switch string(v) {
			case "t", "T", "true", "True", "TRUE":
				f.Value = storage.BoolValue(true)
			case "f", "F", "false", "False", "FALSE":
				f.Value = storage.BoolValue(false)
			default:
				return false
			}
		case ch == '-' || ch == '.' || (ch >= '0' && ch <= '9'):
			switch v[len(v)-1] {
			case 'i':
				x, err := strconv.ParseInt(unsafeString(v[:len(v)-1]), 10, 64)
				if err != nil {
					return false
				}
				f.Value = storage.IntValue(x)
			case 'u':
				x, err := strconv.ParseUint(unsafeString(v[:len(v)-1]), 10, 64)
				if err != nil {
					return false
				}
				f.Value = storage.UintValue(x)
			default:
				x, ok := simpleFloat(v)
				if !ok {
					var err error
					x, err = strconv.ParseFloat(unsafeString(v), 64)
					if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
						return false
					}
				}
				f.Value = storage.FloatValue(x)
			}
		default:
			return false
		}
		if n < len(s.fieldKeys) && string(k) == s.fieldKeys[n] {
			f.Key = s.fieldKeys[n]
		} else {
			f.Key = p.str(k)
			if n < len(s.fieldKeys) {
				s.fieldKeys = s.fieldKeys[:n]
			}
			if n == len(s.fieldKeys) && n < maxFieldKeys {
				s.fieldKeys = append(s.fieldKeys, f.Key)
			}
		}
		n++
		p.fields = append(p.fields, f)
		if i == len(rest) {
			pt.Time = c.defTime
			return true
		}
		if rest[i] == ',' {
			i++
			continue
		}
		ts := rest[i+1:]
		if len(ts) == 0 {
			return false
		}
		for _, ch := range ts {
			if ch != '-' && (ch < '0' || ch > '9') {
				return false
			}
		}
		t, reason := parseTime(ts, c.unit)
		if reason != "" {
			return false
		}
		pt.Time = t
		return true
	}
}

var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// simpleFloat parses the common decimal, -?digits[.digits] with at most 15
// digits, the way strconv.ParseFloat does: mantissa and power of ten are
// exact in a float64, so one division rounds correctly. Anything else is
// left to strconv.
func simpleFloat(v []byte) (float64, bool) {
	i := 0
	neg := v[0] == '-'
	if neg {
		i = 1
	}
	var mant uint64
	digits, frac := 0, -1
	for ; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= '0' && c <= '9':
			mant = mant*10 + uint64(c-'0')
			digits++
			if frac >= 0 {
				frac++
			}
		case c == '.' && frac < 0:
			frac = 0
		default:
			return 0, false
		}
	}
	if digits == 0 || digits > 15 {
		return 0, false
	}
	f := float64(mant)
	if frac > 0 {
		f /= pow10[frac]
	}
	if neg {
		f = -f
	}
	return f, true
}

// unsafeString views b as a string for the strconv calls, which keep
// nothing of it once they return successfully (errors are not used).
func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
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
	// fresh is a series first seen on this line. It is cached only once
	// the whole line decodes: a rejected line gives its part of the tag
	// slab back, and the next series' tags would overwrite fresh's.
	var fresh *series
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
			s = &series{measurement: pt.Measurement, tags: pt.Tags, key: pt.Key}
			fresh = s
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
	pt.Time = defTime
	if ts != nil {
		t, reason := parseTime(ts, unit)
		if reason != "" {
			// ts is a slice of data (the decoder never copies a timestamp), so its
			// capacity tells where it starts.
			return &lineErr{off: cap(data) - cap(ts), reason: reason}
		}
		pt.Time = t
	}
	if fresh != nil {
		if len(p.series) >= seriesMaxEntries {
			clear(p.series)
		}
		p.series[string(cacheKey)] = fresh
	}
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
