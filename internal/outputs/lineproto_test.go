package outputs

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/fpagent/fpagent/storage"
)

// point builds a point with fields given as key, value pairs.
func point(m string, tags []storage.Tag, ts int64, kv ...any) storage.Point {
	p := storage.Point{Measurement: m, Tags: tags, Time: ts}
	for i := 0; i < len(kv); i += 2 {
		var v storage.Value
		switch x := kv[i+1].(type) {
		case float64:
			v = storage.FloatValue(x)
		case int64:
			v = storage.IntValue(x)
		case uint64:
			v = storage.UintValue(x)
		case string:
			v = storage.StringValue(x)
		case bool:
			v = storage.BoolValue(x)
		default:
			panic(fmt.Sprintf("point: unsupported value %T", x))
		}
		p.Fields = append(p.Fields, storage.Field{Key: kv[i].(string), Value: v})
	}
	return p
}

func tags(kv ...string) []storage.Tag {
	var t []storage.Tag
	for i := 0; i < len(kv); i += 2 {
		t = append(t, storage.Tag{Key: kv[i], Value: kv[i+1]})
	}
	return t
}

// decoded is what a line of line protocol says, in storage's types.
type decoded struct {
	Measurement string
	Tags        []storage.Tag
	Fields      []storage.Field
	Time        int64
}

func (d decoded) String() string {
	return fmt.Sprintf("%q %q %v @%d", d.Measurement, d.Tags, fieldsString(d.Fields), d.Time)
}

func fieldsString(fs []storage.Field) string {
	var b []byte
	for _, f := range fs {
		b = fmt.Appendf(b, "%q=%s:%s ", f.Key, f.Value.Kind, f.Value.AppendJSON(nil))
	}
	return string(b)
}

func fromPoint(p *storage.Point) decoded {
	return decoded{Measurement: p.Measurement, Tags: p.Tags, Fields: p.Fields, Time: p.Time}
}

// decodeLP parses lp with the reference decoder.
func decodeLP(lp []byte) ([]decoded, error) {
	dec := lineprotocol.NewDecoderWithBytes(lp)
	var out []decoded
	for dec.Next() {
		var d decoded
		m, err := dec.Measurement()
		if err != nil {
			return out, fmt.Errorf("line %d: measurement: %w", len(out)+1, err)
		}
		d.Measurement = string(m)
		for {
			k, v, err := dec.NextTag()
			if err != nil {
				return out, fmt.Errorf("line %d: tag: %w", len(out)+1, err)
			}
			if k == nil {
				break
			}
			d.Tags = append(d.Tags, storage.Tag{Key: string(k), Value: string(v)})
		}
		for {
			k, v, err := dec.NextField()
			if err != nil {
				return out, fmt.Errorf("line %d: field: %w", len(out)+1, err)
			}
			if k == nil {
				break
			}
			d.Fields = append(d.Fields, storage.Field{Key: string(k), Value: toStorage(v)})
		}
		ts, err := dec.Time(lineprotocol.Nanosecond, time.Time{})
		if err != nil {
			return out, fmt.Errorf("line %d: time: %w", len(out)+1, err)
		}
		if ts.IsZero() {
			return out, fmt.Errorf("line %d has no timestamp", len(out)+1)
		}
		d.Time = ts.UnixNano()
		out = append(out, d)
	}
	return out, nil
}

func toStorage(v lineprotocol.Value) storage.Value {
	switch v.Kind() {
	case lineprotocol.Float:
		return storage.FloatValue(v.FloatV())
	case lineprotocol.Int:
		return storage.IntValue(v.IntV())
	case lineprotocol.Uint:
		return storage.UintValue(v.UintV())
	case lineprotocol.String:
		return storage.StringValue(v.StringV())
	case lineprotocol.Bool:
		return storage.BoolValue(v.BoolV())
	}
	return storage.Value{}
}

// checkBatch checks b's invariants: one line per point, Line(i) is that
// line, and every line decodes back to its point.
func checkBatch(t *testing.T, b *Batch) {
	t.Helper()
	if n := bytes.Count(b.LP, []byte{'\n'}); n != b.Len() {
		t.Fatalf("LP has %d lines for %d points:\n%s", n, b.Len(), b.LP)
	}
	if b.Len() > 0 && b.LP[len(b.LP)-1] != '\n' {
		t.Fatalf("LP does not end in a newline: %q", b.LP)
	}
	lines := strings.SplitAfter(string(b.LP), "\n")
	for i := range b.Points {
		if got, want := string(b.Line(i)), strings.TrimSuffix(lines[i], "\n"); got != want {
			t.Fatalf("Line(%d) = %q, want %q", i, got, want)
		}
		got, err := decodeLP(append(b.Line(i), '\n'))
		if err != nil || len(got) != 1 {
			t.Fatalf("Line(%d) %q decodes to %v, %v; want one point", i, b.Line(i), got, err)
		}
		if want := fromPoint(&b.Points[i]); !reflect.DeepEqual(got[0], want) {
			t.Fatalf("Line(%d) %q decodes to\n %v\nwant\n %v", i, b.Line(i), got[0], want)
		}
	}
	all, err := decodeLP(b.LP)
	if err != nil || len(all) != b.Len() {
		t.Fatalf("LP decodes to %d points (%v), want %d", len(all), err, b.Len())
	}
}

func TestEncode(t *testing.T) {
	const ts = 1_700_000_000_123_456_789
	tests := []struct {
		name string
		in   storage.Point
		want string // the line, without its newline
	}{
		{"float", point("cpu", nil, ts, "v", 1.5), "cpu v=1.5 1700000000123456789"},
		{"integral float stays a float", point("cpu", nil, ts, "v", 2.0), "cpu v=2 1700000000123456789"},
		{"int", point("cpu", nil, ts, "v", int64(-42)), "cpu v=-42i 1700000000123456789"},
		{"int extremes", point("cpu", nil, ts, "lo", int64(math.MinInt64), "hi", int64(math.MaxInt64)),
			"cpu lo=-9223372036854775808i,hi=9223372036854775807i 1700000000123456789"},
		{"uint", point("cpu", nil, ts, "v", uint64(math.MaxUint64)), "cpu v=18446744073709551615u 1700000000123456789"},
		{"string", point("cpu", nil, ts, "s", "hello world"), `cpu s="hello world" 1700000000123456789`},
		{"bools", point("cpu", nil, ts, "t", true, "f", false), "cpu t=true,f=false 1700000000123456789"},
		{"string quotes and backslashes", point("cpu", nil, ts, "s", `say "hi" \ bye\`), `cpu s="say \"hi\" \\ bye\\" 1700000000123456789`},
		{"string newline", point("cpu", nil, ts, "s", "a\nb"), `cpu s="a\nb" 1700000000123456789`},
		{"string commas equals spaces", point("cpu", nil, ts, "s", "a, b=c"), `cpu s="a, b=c" 1700000000123456789`},
		{"measurement escapes", point("my cpu,x=1", nil, ts, "v", 1.0), `my\ cpu\,x=1 v=1 1700000000123456789`},
		{"tags escaped", point("cpu", tags("a b", "c,d", "e=f", "g h=i,j"), ts, "v", 1.0),
			`cpu,a\ b=c\,d,e\=f=g\ h\=i\,j v=1 1700000000123456789`},
		{"field key escaped", point("cpu", nil, ts, "a b,c=d", 1.0), `cpu a\ b\,c\=d=1 1700000000123456789`},
		{"backslash inside names", point(`c\pu`, tags(`k\`+"x", `v\`+"y"), ts, `f\g`, 1.0), `c\pu,k\x=v\y f\g=1 1700000000123456789`},
		{"unicode", point("température", tags("lieu", "Zürich"), ts, "°C", 21.5), "température,lieu=Zürich °C=21.5 1700000000123456789"},
		{"nanosecond time zero", point("cpu", nil, 0, "v", 1.0), "cpu v=1 0"},
		{"negative time", point("cpu", nil, -1_000_000_001, "v", 1.0), "cpu v=1 -1000000001"},
		{"every kind", point("m", tags("host", "a"), 1, "f", 0.25, "i", int64(3), "u", uint64(4), "s", "x", "b", true),
			`m,host=a f=0.25,i=3i,u=4u,s="x",b=true 1`},
	}
	var enc encoder
	var b Batch
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := enc.encode([]storage.Point{tt.in}, &b)
			if len(bad) != 0 {
				t.Fatalf("encode refused the point: %s", bad[0].reason)
			}
			if got := string(b.LP); got != tt.want+"\n" {
				t.Fatalf("LP = %q, want %q", got, tt.want+"\n")
			}
			checkBatch(t, &b)
		})
	}
}

func TestEncodeSetsAsideWhatLineProtocolCannotCarry(t *testing.T) {
	good := func(i int64) storage.Point { return point("m", tags("i", fmt.Sprint(i)), i, "v", i) }
	tests := []struct {
		name   string
		bad    storage.Point
		reason string // part of the reason
	}{
		{"NaN", point("m", nil, 1, "ok", 1.0, "v", math.NaN()), `"v"`},
		{"+Inf", point("m", nil, 1, "v", math.Inf(1)), `"v"`},
		{"-Inf", point("m", nil, 1, "v", math.Inf(-1)), `"v"`},
		{"newline in a tag value", point("m", tags("k", "a\nb"), 1, "v", 1.0), "tag value"},
		{"newline in a tag key", point("m", tags("k\n", "a"), 1, "v", 1.0), "tag key"},
		{"newline in the measurement", point("m\n", nil, 1, "v", 1.0), "measurement"},
		{"newline in a field key", point("m", nil, 1, "v\n", 1.0), "field key"},
		{"empty tag value", point("m", tags("k", ""), 1, "v", 1.0), "tag value"},
		{"trailing backslash in a tag value", point("m", tags("k", `a\`), 1, "v", 1.0), "tag value"},
		{"invalid UTF-8 in a string", point("m", nil, 1, "s", "\xff"), `"s"`},
		{"invalid UTF-8 in a tag", point("m", tags("k", "\xff"), 1, "v", 1.0), "tag value"},
		{"tags out of order", point("m", tags("b", "1", "a", "2"), 1, "v", 1.0), "order"},
		{"no fields", point("m", tags("k", "v"), 1), "field"},
		{"comment measurement", point("#m", nil, 1, "v", 1.0), "#"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The bad point in the middle, and at either end, of good ones.
			for pos := range 3 {
				pts := []storage.Point{good(1), good(2)}
				pts = append(pts[:pos:pos], append([]storage.Point{tt.bad}, pts[pos:]...)...)
				var enc encoder
				var b Batch
				bad := enc.encode(pts, &b)
				if len(bad) != 1 || bad[0].point != &pts[pos] {
					t.Fatalf("bad point at %d: encode set aside %v, want just that point", pos, bad)
				}
				if !strings.Contains(bad[0].reason, tt.reason) {
					t.Errorf("reason %q does not mention %q", bad[0].reason, tt.reason)
				}
				if b.Len() != 2 || b.Points[0].Time != 1 || b.Points[1].Time != 2 {
					t.Fatalf("bad point at %d: batch holds %v, want the two good points in order", pos, b.Points)
				}
				checkBatch(t, &b)
			}
		})
	}
}

// The encoder and the batch are reused from one call to the next: nothing of
// the previous batch may leak into the next.
func TestEncodeReusesItsBuffers(t *testing.T) {
	var enc encoder
	var b Batch
	first := []storage.Point{point("long_measurement_name", tags("host", "a"), 1, "v", "a long string value")}
	if bad := enc.encode(first, &b); len(bad) != 0 {
		t.Fatal(bad[0].reason)
	}
	second := []storage.Point{point("m", nil, 2, "v", math.NaN()), point("m", nil, 3, "v", 1.0)}
	if bad := enc.encode(second, &b); len(bad) != 1 {
		t.Fatalf("set aside %d points, want 1", len(bad))
	}
	if got, want := string(b.LP), "m v=1 3\n"; got != want {
		t.Fatalf("second batch LP = %q, want %q", got, want)
	}
	checkBatch(t, &b)
	if bad := enc.encode(nil, &b); len(bad) != 0 || b.Len() != 0 || len(b.LP) != 0 {
		t.Fatalf("empty input: %d bad, batch of %d points and %d bytes; want all empty", len(bad), b.Len(), len(b.LP))
	}
}

func TestBatchLineAndSlice(t *testing.T) {
	var pts []storage.Point
	for i := range 5 {
		pts = append(pts, point("m", tags("i", strings.Repeat("x", i+1)), int64(i), "v", int64(i)))
	}
	var enc encoder
	var b Batch
	if bad := enc.encode(pts, &b); len(bad) != 0 {
		t.Fatal(bad[0].reason)
	}
	lineOf := func(i int) string { return fmt.Sprintf("m,i=%s v=%di %d", strings.Repeat("x", i+1), i, i) }
	for i := range 5 {
		if got := string(b.Line(i)); got != lineOf(i) {
			t.Errorf("Line(%d) = %q, want %q", i, got, lineOf(i))
		}
	}
	for _, r := range [][2]int{{0, 5}, {0, 1}, {0, 2}, {2, 5}, {4, 5}, {1, 4}, {3, 4}} {
		s := b.Slice(r[0], r[1])
		var want strings.Builder
		for i := r[0]; i < r[1]; i++ {
			want.WriteString(lineOf(i) + "\n")
		}
		if s.Len() != r[1]-r[0] || string(s.LP) != want.String() {
			t.Fatalf("Slice(%d, %d): %d points, LP %q; want %d points, LP %q", r[0], r[1], s.Len(), s.LP, r[1]-r[0], want.String())
		}
		for i := range s.Len() {
			if got := string(s.Line(i)); got != lineOf(r[0]+i) {
				t.Errorf("Slice(%d, %d).Line(%d) = %q, want %q", r[0], r[1], i, got, lineOf(r[0]+i))
			}
		}
		// Halving a slice again, as the forwarder does with ErrTooLarge.
		if s.Len() > 1 {
			h := s.Len() / 2
			if got := string(s.Slice(h, s.Len()).Line(0)); got != lineOf(r[0]+h) {
				t.Errorf("Slice(%d, %d).Slice(%d, _).Line(0) = %q, want %q", r[0], r[1], h, got, lineOf(r[0]+h))
			}
		}
	}
}

// lpCanCarry says whether line protocol can carry s as a measurement, key or
// tag value: printable, valid UTF-8, not empty, no trailing backslash.
func lpCanCarry(s string) bool {
	if s == "" || !utf8.ValidString(s) || s[len(s)-1] == '\\' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// FuzzEncode builds a batch of a fuzzed point between two plain ones and
// checks that encode never panics, sets aside only what line protocol cannot
// carry, and writes lines that decode back to the points.
func FuzzEncode(f *testing.F) {
	f.Add("cpu", "host", "a b", "k2", "c,d=e", "v", "say \"hi\"\\", 1.5, int64(-3), uint64(7), true, int64(1_700_000_000_000_000_000))
	f.Add("#m", "k", "v", "k", "w", "f", "", math.NaN(), int64(0), uint64(0), false, int64(0))
	f.Add("m\\", "k\\", "v\n", "", "", "f\\", "\xff", math.Inf(1), int64(math.MinInt64), uint64(math.MaxUint64), false, int64(-1))
	f.Add("m", "a", "x\\ y", "b", "=", "f g", "a\r\tb", math.Copysign(0, -1), int64(1), uint64(1), true, int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, m, tk1, tv1, tk2, tv2, fk, s string, fl float64, i int64, u uint64, bo bool, ts int64) {
		p := storage.Point{Measurement: m, Time: ts}
		for _, tg := range [][2]string{{tk1, tv1}, {tk2, tv2}} {
			if tg[0] != "" {
				p.Tags = append(p.Tags, storage.Tag{Key: tg[0], Value: tg[1]})
			}
		}
		p.Fields = []storage.Field{
			{Key: fk, Value: storage.FloatValue(fl)},
			{Key: fk + "_i", Value: storage.IntValue(i)},
			{Key: fk + "_u", Value: storage.UintValue(u)},
			{Key: fk + "_s", Value: storage.StringValue(s)},
			{Key: fk + "_b", Value: storage.BoolValue(bo)},
		}
		p.Normalize() // sorted, unique tags and fields, as the WAL holds them
		pts := []storage.Point{point("before", nil, 1, "v", 1.0), p, point("after", nil, 2, "v", 2.0)}

		var enc encoder
		var b Batch
		bad := enc.encode(pts, &b)
		for _, x := range bad {
			if x.point != &pts[1] || x.reason == "" {
				t.Fatalf("set aside %v (%q), want only the fuzzed point, with a reason", x.point, x.reason)
			}
		}
		if b.Len()+len(bad) != len(pts) {
			t.Fatalf("%d points encoded and %d set aside, want %d in all", b.Len(), len(bad), len(pts))
		}
		if b.Points[0].Measurement != "before" || b.Points[b.Len()-1].Measurement != "after" {
			t.Fatalf("the plain points are not first and last: %v", b.Points)
		}
		checkBatch(t, &b)

		carriable := lpCanCarry(p.Measurement) && p.Measurement[0] != '#' &&
			!math.IsNaN(fl) && !math.IsInf(fl, 0) && utf8.ValidString(s)
		for _, tg := range p.Tags {
			carriable = carriable && lpCanCarry(tg.Key) && lpCanCarry(tg.Value)
		}
		for _, fd := range p.Fields {
			carriable = carriable && lpCanCarry(fd.Key)
		}
		if carriable && len(bad) > 0 {
			t.Fatalf("set aside a point line protocol can carry (%v): %s", fromPoint(&p), bad[0].reason)
		}
		if !carriable && len(bad) == 0 {
			t.Fatalf("encoded a point line protocol cannot carry (%v) as %q", fromPoint(&p), b.Line(1))
		}
	})
}
