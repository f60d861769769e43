package storage

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"
)

func TestSeriesKey(t *testing.T) {
	f := func(m string, tags []Tag, want string) {
		t.Helper()
		got := SeriesKey(m, tags)
		if got != want {
			t.Fatalf("SeriesKey(%q, %v) = %q, want %q", m, tags, got, want)
		}
		m2, tags2, ok := ParseSeriesKey(got)
		if !ok || m2 != m || !reflect.DeepEqual(tags2, tags) && !(len(tags) == 0 && len(tags2) == 0) {
			t.Fatalf("ParseSeriesKey(%q) = %q, %v, %v; want %q, %v", got, m2, tags2, ok, m, tags)
		}
	}
	f("cpu", nil, "cpu")
	f("cpu", []Tag{{"host", "a"}, {"region", "eu"}}, "cpu,host=a,region=eu")
	f("c pu,x", []Tag{{"k=1", "v 1,2"}}, `c\ pu\,x,k\=1=v\ 1\,2`)
	f(`back\slash`, []Tag{{`k\`, `v\`}}, `back\\slash,k\\=v\\`)
	f("ünï", []Tag{{"tag", "日本"}}, "ünï,tag=日本")
	f("m=eq", []Tag{{"a", "="}}, `m=eq,a=\=`)
}

func TestParseSeriesKeyRejects(t *testing.T) {
	for _, key := range []string{"", ",a=b", `cpu\`, "cpu,a", "cpu,=b", "cpu,b=1,a=2", "cpu,a=1,a=2", "cpu,a=b=c"} {
		if m, tags, ok := ParseSeriesKey(key); ok {
			t.Errorf("ParseSeriesKey(%q) = %q, %v, ok; want not ok", key, m, tags)
		}
	}
}

func TestNormalize(t *testing.T) {
	p := Point{
		Measurement: "m",
		Tags:        []Tag{{"b", "1"}, {"a", "x"}, {"b", "2"}},
		Fields:      []Field{{"f", IntValue(1)}, {"g", BoolValue(true)}, {"f", IntValue(2)}},
	}
	p.Normalize()
	wantTags := []Tag{{"a", "x"}, {"b", "2"}}
	wantFields := []Field{{"g", BoolValue(true)}, {"f", IntValue(2)}}
	if !reflect.DeepEqual(p.Tags, wantTags) || !reflect.DeepEqual(p.Fields, wantFields) || p.Key != "m,a=x,b=2" {
		t.Fatalf("Normalize: tags %v fields %v key %q", p.Tags, p.Fields, p.Key)
	}
}

func TestPointJSON(t *testing.T) {
	ts := time.Date(2026, 11, 26, 3, 4, 5, 123456789, time.UTC).UnixNano()
	cases := []struct {
		name   string
		fields []Field
		want   string
	}{
		{"float", []Field{{"v", FloatValue(1)}}, `{"v":1.0}`},
		{"float fraction", []Field{{"v", FloatValue(-0.25)}}, `{"v":-0.25}`},
		{"float exponent", []Field{{"v", FloatValue(1e21)}}, `{"v":1e+21}`},
		{"nan", []Field{{"v", FloatValue(math.NaN())}}, `{"v":null}`},
		{"inf", []Field{{"v", FloatValue(math.Inf(-1))}}, `{"v":null}`},
		{"int", []Field{{"v", IntValue(-9223372036854775808)}}, `{"v":-9223372036854775808}`},
		{"uint", []Field{{"v", UintValue(18446744073709551615)}}, `{"v":18446744073709551615}`},
		{"bool", []Field{{"t", BoolValue(true)}, {"f", BoolValue(false)}}, `{"t":true,"f":false}`},
		{"string escapes", []Field{{"s", StringValue("a\"b\\c\n\x01")}}, `{"s":"a\"b\\c\n\u0001"}`},
		{"invalid utf8", []Field{{"s", StringValue("a\xffb")}}, `{"s":"a\ufffdb"}`},
		{"unicode", []Field{{"ключ", StringValue("значение")}}, `{"ключ":"значение"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Point{Measurement: "m", Tags: []Tag{{"h", "a"}}, Fields: c.fields, Time: ts}
			got := string(p.AppendJSON(nil))
			want := `{"measurement":"m","tags":{"h":"a"},"fields":` + c.want + `,"time":"2026-11-26T03:04:05.123456789Z"}`
			if got != want {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
			if !json.Valid([]byte(got)) {
				t.Fatalf("not valid JSON: %s", got)
			}
			// The flusher renders the same record from the WAL form.
			p.Normalize()
			rec := encodeBatch(nil, &Batch{Points: []Point{p}})
			d := decoder{b: rec}
			d.batchHeader()
			d.count("n", 4)
			var rp rawPoint
			d.point(&rp)
			if d.err != nil {
				t.Fatal(d.err)
			}
			s := &seriesInfo{measurement: "m", tagsJSON: AppendTagsJSON(nil, p.Tags)}
			raw := string(appendRecordJSON(nil, s, appendFieldsJSONRaw(nil, rp.fields, rp.nfields), rp.time))
			if raw != want {
				t.Fatalf("from WAL form:\ngot  %s\nwant %s", raw, want)
			}
		})
	}
}

func testBatch() *Batch {
	b := &Batch{Source: "tcp",
		Points: []Point{
			{Measurement: "cpu", Tags: []Tag{{"host", "a"}, {"dc", "x y"}}, Fields: []Field{
				{"f", FloatValue(1.5)}, {"i", IntValue(-3)}, {"u", UintValue(7)}, {"s", StringValue("hé\"")}, {"b", BoolValue(true)}}, Time: 1700000000000000000},
			{Key: "custom-key", Measurement: "mem", Fields: []Field{{"free", IntValue(10)}}, Time: -5},
		},
		Rejects: []Reject{{Time: 42, Source: "tcp", Origin: "127.0.0.1:5000", Line: 3, Reason: "bad", Payload: []byte("x y z\x00")}},
	}
	for i := range b.Points {
		b.Points[i].Normalize()
	}
	return b
}

func TestCodecRoundTrip(t *testing.T) {
	b := testBatch()
	rec := encodeBatch(nil, b)
	got, err := decodeBatch(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("round trip:\ngot  %+v\nwant %+v", got, b)
	}
	if !isCanonicalKey(&b.Points[0]) || isCanonicalKey(&b.Points[1]) {
		t.Fatal("isCanonicalKey is wrong")
	}
	// Every truncation is an error, never a panic.
	for i := range rec {
		if _, err := decodeBatch(rec[:i]); err == nil {
			t.Fatalf("decoding %d of %d bytes succeeded", i, len(rec))
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(encodeBatch(nil, testBatch()))
	floats := &Batch{Source: "s"}
	for i, fields := range [][]Field{
		{{"a", FloatValue(1.5)}, {"b", FloatValue(-2)}},
		{{"a", FloatValue(1e21)}, {"b", FloatValue(0.1)}},
		{{"a", FloatValue(3)}},                                // fewer: JSON
		{{"a", FloatValue(math.NaN())}, {"b", FloatValue(1)}}, // NaN: JSON
	} {
		p := Point{Measurement: "m", Tags: []Tag{{"k", "v"}}, Fields: fields, Time: int64(i)}
		p.Normalize()
		floats.Points = append(floats.Points, p)
	}
	f.Add(encodeBatch(nil, floats))
	floats.Points = floats.Points[:2] // DOUBLE rows only: an empty JSON arena
	f.Add(encodeBatch(nil, floats))
	f.Add([]byte{1, 0, 1, 1, 0})
	f.Add([]byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, rec []byte) {
		b, err := decodeBatch(rec)
		if err != nil {
			return
		}
		// What decodes must encode back to a record that decodes the same.
		again, err := decodeBatch(encodeBatch(nil, b))
		if err != nil || !reflect.DeepEqual(again, b) {
			t.Fatalf("re-encoding changed the batch: %v\n%+v\n%+v", err, b, again)
		}
		var fb flushBatch
		fb.reset(1, nil)
		st := &seriesTable{byKey: map[string]*seriesInfo{}, nextID: 1}
		if fb.add(rec, 1, st) != nil {
			return
		}
		byID := map[uint32]*seriesInfo{}
		for _, s := range st.byKey {
			byID[s.id] = s
		}
		// One row per point, in order; whichever table it is bound for,
		// its fields render as the decoded point's do.
		if len(fb.rows) != len(b.Points) {
			t.Fatalf("%d rows for %d points", len(fb.rows), len(b.Points))
		}
		for i, r := range fb.rows {
			var got []byte // the span indexes the arena of the row's kind
			if r.width > 0 {
				got = byID[r.series].appendFloatFieldsJSON(nil, fb.floats[r.fields.off:r.fields.end])
			} else {
				got = fb.arena[r.fields.off:r.fields.end]
			}
			if want := AppendFieldsJSON(nil, b.Points[i].Fields); string(got) != string(want) {
				t.Fatalf("row %d (width %d): fields %s, want %s", i, r.width, got, want)
			}
			if !json.Valid(got) {
				t.Fatalf("fields JSON is invalid: %q", got)
			}
		}
	})
}

func FuzzSeriesKey(f *testing.F) {
	f.Add("cpu", "host", "a", "b", "c")
	f.Add(`a\`, `,`, `=`, ` `, `\\`)
	f.Fuzz(func(t *testing.T, m, k1, v1, k2, v2 string) {
		if m == "" || k1 == "" || k2 == "" || k1 == k2 {
			return
		}
		p := Point{Measurement: m, Tags: []Tag{{k1, v1}, {k2, v2}}, Fields: []Field{{"f", IntValue(1)}}}
		p.Normalize()
		m2, tags, ok := ParseSeriesKey(p.Key)
		if !ok || m2 != m || !reflect.DeepEqual(tags, p.Tags) {
			t.Fatalf("key %q parsed to %q %v %v", p.Key, m2, tags, ok)
		}
		if !isCanonicalKey(&p) {
			t.Fatalf("key %q not seen as canonical", p.Key)
		}
	})
}
