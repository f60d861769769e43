package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// A batch travels through the WAL as one record in this binary form. It is
// part of the on-disk format: change it only by adding a new version byte.
//
//	record  = version:u8(1) source:str npoints:uvarint point* nrejects:uvarint reject*
//	point   = flags:u8 [key:str] [measurement:str ntags:uvarint (k:str v:str)*]
//	          time:varint nfields:uvarint (k:str kind:u8 value)*
//	          flags bit 0 set: the key is canonical; only the key is stored
//	          and measurement and tags are parsed back from it (ParseSeriesKey).
//	          flags bit 0 clear: key, measurement and tags are all stored.
//	value   = float:8 bytes LE | int:varint | uint:uvarint | string:str | bool:u8
//	reject  = time:varint source:str origin:str line:uvarint reason:str payload:str
//	str     = len:uvarint bytes
const codecVersion = 1

const flagCanonicalKey = 1

// errCorruptRecord is wrapped by every decoding error: a record that passed
// the WAL's checksum but does not decode (a bug, or a foreign record).
var errCorruptRecord = errors.New("corrupt batch record")

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encodeBatch appends b's WAL form to dst. Points must be normalized.
func encodeBatch(dst []byte, b *Batch) []byte {
	dst = append(dst, codecVersion)
	dst = appendStr(dst, b.Source)
	dst = binary.AppendUvarint(dst, uint64(len(b.Points)))
	for i := range b.Points {
		dst = encodePoint(dst, &b.Points[i], b.Normalized)
	}
	dst = binary.AppendUvarint(dst, uint64(len(b.Rejects)))
	for i := range b.Rejects {
		r := &b.Rejects[i]
		dst = binary.AppendVarint(dst, r.Time)
		dst = appendStr(dst, r.Source)
		dst = appendStr(dst, r.Origin)
		dst = binary.AppendUvarint(dst, uint64(max(r.Line, 0)))
		dst = appendStr(dst, r.Reason)
		dst = appendBytes(dst, r.Payload)
	}
	return dst
}

// encodePoint appends p's WAL form to dst: its key alone when canonical
// (known to be, or checked), else key, measurement and tags.
func encodePoint(dst []byte, p *Point, canonical bool) []byte {
	if canonical || isCanonicalKey(p) {
		dst = append(dst, flagCanonicalKey)
		dst = appendStr(dst, p.Key)
	} else {
		dst = append(dst, 0)
		dst = appendStr(dst, p.Key)
		dst = appendStr(dst, p.Measurement)
		dst = binary.AppendUvarint(dst, uint64(len(p.Tags)))
		for _, t := range p.Tags {
			dst = appendStr(dst, t.Key)
			dst = appendStr(dst, t.Value)
		}
	}
	dst = binary.AppendVarint(dst, p.Time)
	dst = binary.AppendUvarint(dst, uint64(len(p.Fields)))
	for _, f := range p.Fields {
		dst = appendStr(dst, f.Key)
		dst = append(dst, byte(f.Value.Kind))
		switch f.Value.Kind {
		case KindFloat:
			dst = binary.LittleEndian.AppendUint64(dst, f.Value.num)
		case KindInt:
			dst = binary.AppendVarint(dst, int64(f.Value.num))
		case KindUint:
			dst = binary.AppendUvarint(dst, f.Value.num)
		case KindString:
			dst = appendStr(dst, f.Value.str)
		case KindBool:
			dst = append(dst, byte(f.Value.num))
		}
	}
	return dst
}

// isCanonicalKey tells whether p.Key is SeriesKey(p.Measurement, p.Tags)
// without building the key: it walks both at once. A part with nothing to
// escape (nearly all) is compared as a whole.
func isCanonicalKey(p *Point) bool {
	k := p.Key
	i := 0
	match := func(s string, special *[256]bool) bool {
		plain := true
		for j := 0; j < len(s); j++ {
			if special[s[j]] {
				plain = false
				break
			}
		}
		if plain {
			if len(k)-i < len(s) || k[i:i+len(s)] != s {
				return false
			}
			i += len(s)
			return true
		}
		for j := 0; j < len(s); j++ {
			c := s[j]
			if special[c] {
				if i >= len(k) || k[i] != '\\' {
					return false
				}
				i++
			}
			if i >= len(k) || k[i] != c {
				return false
			}
			i++
		}
		return true
	}
	if !match(p.Measurement, &measurementSpecial) {
		return false
	}
	for _, t := range p.Tags {
		if i >= len(k) || k[i] != ',' {
			return false
		}
		i++
		if !match(t.Key, &tagSpecial) || i >= len(k) || k[i] != '=' {
			return false
		}
		i++
		if !match(t.Value, &tagSpecial) {
			return false
		}
	}
	return i == len(k)
}

// The bytes a series key escapes with a backslash, in a measurement and in
// a tag key or value.
var measurementSpecial, tagSpecial = func() (m, t [256]bool) {
	for _, c := range []byte(", \\") {
		m[c] = true
	}
	for _, c := range []byte(",= \\") {
		t[c] = true
	}
	return m, t
}()

// decoder reads a batch record without copying: the byte slices it returns
// point into the record and are valid as long as the record is.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s at byte %d", errCorruptRecord, what, len(d.b))
	}
	d.b = nil
}

func (d *decoder) uvarint(what string) uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) u64(what string) uint64 {
	if len(d.b) < 8 {
		d.fail(what)
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) byte1(what string) byte {
	if len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what)
	if n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

// count reads a count of items that take at least min bytes each, checked
// against the bytes left before anyone allocates for them.
func (d *decoder) count(what string, min int) int {
	n := d.uvarint(what)
	if n > uint64(len(d.b)/min) {
		d.fail(what)
		return 0
	}
	return int(n)
}

// rawPoint is a point as it sits in a record: byte slices into the record.
type rawPoint struct {
	canonical   bool
	key         []byte
	measurement []byte
	tags        [][2][]byte
	time        int64
	fields      []byte // the encoded fields, for fieldsJSON and toPoint
	nfields     int
}

// batchHeader reads the version and source of a record.
func (d *decoder) batchHeader() (source []byte) {
	if v := d.byte1("version"); d.err == nil && v != codecVersion {
		d.err = fmt.Errorf("%w: unknown version %d", errCorruptRecord, v)
		d.b = nil
		return nil
	}
	return d.bytes("source")
}

// point reads the next point into p, reusing p's tag slice.
func (d *decoder) point(p *rawPoint) {
	flags := d.byte1("point flags")
	p.canonical = flags&flagCanonicalKey != 0
	p.key = d.bytes("key")
	p.measurement = nil
	p.tags = p.tags[:0]
	if !p.canonical {
		p.measurement = d.bytes("measurement")
		n := d.count("tag count", 2)
		for i := 0; i < n && d.err == nil; i++ {
			k := d.bytes("tag key")
			v := d.bytes("tag value")
			p.tags = append(p.tags, [2][]byte{k, v})
		}
	}
	p.time = d.varint("time")
	p.nfields = d.count("field count", 2)
	start := d.b
	for i := 0; i < p.nfields && d.err == nil; i++ {
		d.bytes("field key")
		switch Kind(d.byte1("field kind")) {
		case KindFloat:
			d.u64("float")
		case KindInt:
			d.varint("integer")
		case KindUint:
			d.uvarint("unsigned")
		case KindString:
			d.bytes("string")
		case KindBool:
			d.byte1("bool")
		default:
			d.fail("field kind")
		}
	}
	if d.err == nil {
		p.fields = start[:len(start)-len(d.b)]
	}
}

// reject reads the next dead letter.
func (d *decoder) reject() Reject {
	var r Reject
	r.Time = d.varint("reject time")
	r.Source = string(d.bytes("reject source"))
	r.Origin = string(d.bytes("reject origin"))
	r.Line = int(min(d.uvarint("reject line"), math.MaxInt32))
	r.Reason = string(d.bytes("reject reason"))
	r.Payload = append([]byte(nil), d.bytes("reject payload")...)
	return r
}

// appendFieldsJSONRaw renders encoded fields (rawPoint.fields) as JSON,
// exactly as AppendFieldsJSON renders the decoded ones.
func appendFieldsJSONRaw(dst []byte, enc []byte, n int) []byte {
	return appendFieldsJSONTyped(dst, enc, n, nil)
}

// appendFieldsJSONTyped is appendFieldsJSONRaw that also records each
// field's kind in s (see seriesInfo.noteKind) when s is not nil.
//
// A series mostly sends the same fields point after point: while a point's
// keys and kinds are those of the series' last one (s.shape), their kinds
// are known already and their keys need no escaping check.
func appendFieldsJSONTyped(dst []byte, enc []byte, n int, s *seriesInfo) []byte {
	var shape []fieldShape
	if s != nil && len(s.shape) == n {
		shape = s.shape
	}
	reshaped := false
	d := decoder{b: enc}
	dst = append(dst, '{')
	for i := 0; i < n && d.err == nil; i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		key := d.bytes("field key")
		k := Kind(d.byte1("field kind"))
		if shape != nil && shape[i].kind == k && shape[i].key == string(key) && shape[i].plain {
			dst = append(dst, '"')
			dst = append(dst, key...)
			dst = append(dst, '"', ':')
		} else {
			dst = appendJSONBytes(dst, key)
			dst = append(dst, ':')
			if s != nil {
				s.noteKind(key, k)
				reshaped = reshaped || shape == nil || shape[i].kind != k || shape[i].key != string(key)
			}
		}
		var v Value
		switch k {
		case KindFloat:
			v = Value{Kind: k, num: d.u64("float")}
		case KindInt:
			v = Value{Kind: k, num: uint64(d.varint("integer"))}
		case KindUint:
			v = Value{Kind: k, num: d.uvarint("unsigned")}
		case KindBool:
			v = Value{Kind: k, num: uint64(d.byte1("bool"))}
		case KindString:
			dst = appendJSONBytes(dst, d.bytes("string"))
			continue
		}
		dst = v.AppendJSON(dst)
	}
	if reshaped && d.err == nil {
		s.shape = fieldShapes(enc, n)
	}
	return append(dst, '}')
}

// fieldShape is one field of a series' last point: its key, its kind, and
// whether the key is the same in JSON (nothing to escape).
type fieldShape struct {
	key   string
	kind  Kind
	plain bool
}

func fieldShapes(enc []byte, n int) []fieldShape {
	fields := decodeFields(enc, n)
	shape := make([]fieldShape, len(fields))
	for i, f := range fields {
		plain := true
		for j := 0; j < len(f.Key) && plain; j++ {
			c := f.Key[j]
			plain = c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\'
		}
		shape[i] = fieldShape{key: f.Key, kind: f.Value.Kind, plain: plain}
	}
	return shape
}

// decodeFields turns encoded fields into Fields, copying strings.
func decodeFields(enc []byte, n int) []Field {
	d := decoder{b: enc}
	out := make([]Field, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		f := Field{Key: string(d.bytes("field key"))}
		switch k := Kind(d.byte1("field kind")); k {
		case KindFloat:
			f.Value = Value{Kind: k, num: d.u64("float")}
		case KindInt:
			f.Value = Value{Kind: k, num: uint64(d.varint("integer"))}
		case KindUint:
			f.Value = Value{Kind: k, num: d.uvarint("unsigned")}
		case KindBool:
			f.Value = Value{Kind: k, num: uint64(d.byte1("bool"))}
		case KindString:
			f.Value = StringValue(string(d.bytes("string")))
		}
		out = append(out, f)
	}
	return out
}

// toPoint copies a raw point into a Point.
func (p *rawPoint) toPoint() (Point, error) {
	pt := Point{Key: string(p.key), Time: p.time, Fields: decodeFields(p.fields, p.nfields)}
	if p.canonical {
		m, tags, ok := ParseSeriesKey(pt.Key)
		if !ok {
			return Point{}, fmt.Errorf("%w: key %q is not canonical", errCorruptRecord, pt.Key)
		}
		pt.Measurement, pt.Tags = m, tags
	} else {
		pt.Measurement = string(p.measurement)
		for _, t := range p.tags {
			pt.Tags = append(pt.Tags, Tag{Key: string(t[0]), Value: string(t[1])})
		}
	}
	return pt, nil
}

// points decodes the points that follow a record's header, copying each.
func (d *decoder) points(add func(Point)) error {
	n := d.count("point count", 4)
	var rp rawPoint
	for i := 0; i < n && d.err == nil; i++ {
		d.point(&rp)
		if d.err != nil {
			break
		}
		pt, err := rp.toPoint()
		if err != nil {
			return err
		}
		add(pt)
	}
	return d.err
}

// decodeBatch decodes a whole record into a Batch, copying everything.
func decodeBatch(rec []byte) (*Batch, error) {
	d := decoder{b: rec}
	b := &Batch{Source: string(d.batchHeader())}
	if err := d.points(func(p Point) { b.Points = append(b.Points, p) }); err != nil {
		return nil, err
	}
	nr := d.count("reject count", 6)
	for i := 0; i < nr && d.err == nil; i++ {
		b.Rejects = append(b.Rejects, d.reject())
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errCorruptRecord, len(d.b))
	}
	return b, d.err
}
