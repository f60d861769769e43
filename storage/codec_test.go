package storage

import (
	"bytes"
	"testing"
)

// FuzzIsCanonicalKey checks isCanonicalKey against its definition:
// key == SeriesKey(measurement, tags).
func FuzzIsCanonicalKey(f *testing.F) {
	f.Add("cpu", "host", "a", "", false)
	f.Add("c pu,x", "h=o st", `a\b`, "", true)
	f.Add(`m\`, ",", "=", `m\\,\,=\=`, false)
	f.Fuzz(func(t *testing.T, m, tk, tv, key string, useSeriesKey bool) {
		p := Point{Measurement: m, Tags: []Tag{{tk, tv}, {tk + "2", tv}}}
		if useSeriesKey {
			key = SeriesKey(m, p.Tags)
		}
		p.Key = key
		want := key == SeriesKey(m, p.Tags)
		if got := isCanonicalKey(&p); got != want {
			t.Fatalf("isCanonicalKey(%q for %q %q) = %v, want %v", key, m, p.Tags, got, want)
		}
		p.Tags = nil
		want = key == SeriesKey(m, nil)
		if got := isCanonicalKey(&p); got != want {
			t.Fatalf("isCanonicalKey(%q for %q, no tags) = %v, want %v", key, m, got, want)
		}
	})
}

// BenchmarkAppendFieldsJSON renders the encoded fields of a benchmark
// point (three floats) as the flusher does, per point.
func BenchmarkAppendFieldsJSON(b *testing.B) {
	pts := benchPoints(64, 64, 0)
	raws := make([]rawPoint, len(pts))
	for i := range pts {
		d := decoder{b: encodePoint(nil, &pts[i], false)}
		if d.point(&raws[i]); d.err != nil {
			b.Fatal(d.err)
		}
	}
	s := &seriesInfo{}
	var dst []byte
	for i := 0; b.Loop(); i++ {
		r := &raws[i%len(raws)]
		dst = appendFieldsJSONTyped(dst[:0], r.fields, r.nfields, s)
	}
}

// TestAppendFieldsJSONTypedShapes renders a series' points whose fields
// change from one to the next: the per-series shape must never leak a key
// or kind of an earlier point into the JSON or the recorded types.
func TestAppendFieldsJSONTypedShapes(t *testing.T) {
	pts := [][]Field{
		{{"a", FloatValue(1.5)}, {"b", IntValue(2)}},
		{{"a", FloatValue(2.5)}, {"b", IntValue(3)}},
		{{"a", FloatValue(2.5)}, {"b", UintValue(3)}},                         // kind changes
		{{"a", FloatValue(2.5)}, {"c", UintValue(3)}},                         // key changes
		{{"a", FloatValue(2.5)}},                                              // fewer fields
		{{"a", FloatValue(2.5)}, {"c", UintValue(3)}, {"d", BoolValue(true)}}, // more
		{{`q"uote`, StringValue("x")}, {"tab\t", FloatValue(0.1)}},            // keys to escape
		{{`q"uote`, StringValue("y")}, {"tab\t", FloatValue(0.2)}},            // the same again
		{{"ü", FloatValue(-3)}, {"a", FloatValue(7)}},
		{},
		{{"a", FloatValue(1)}},
	}
	s := &seriesInfo{}
	for i, fields := range pts {
		p := Point{Key: "m", Measurement: "m", Fields: fields, Time: 1}
		var raw rawPoint
		d := decoder{b: encodePoint(nil, &p, false)}
		if d.point(&raw); d.err != nil {
			t.Fatal(d.err)
		}
		got := string(appendFieldsJSONTyped(nil, raw.fields, raw.nfields, s))
		if want := string(AppendFieldsJSON(nil, fields)); got != want {
			t.Errorf("point %d: %s, want %s", i, got, want)
		}
	}
	want := map[string]Kind{"a": KindFloat, "b": KindUint, "c": KindUint, "d": KindBool,
		`q"uote`: KindString, "tab\t": KindFloat, "ü": KindFloat}
	if len(s.types) != len(want) {
		t.Errorf("types %v, want %v", s.types, want)
	}
	for k, v := range want {
		if s.types[k] != v {
			t.Errorf("type of %q is %v, want %v", k, s.types[k], v)
		}
	}
}

// A batch marked Normalized encodes exactly as the same batch unmarked when
// the promise holds: the mark only skips the checks.
func TestEncodeNormalizedBatch(t *testing.T) {
	pts := benchPoints(50, 7, 0)
	pts = append(pts, Point{Measurement: "a b,c", Tags: []Tag{{"k=1", "v 2"}, {"z", "\\"}}, Fields: []Field{{"f", StringValue("x")}}, Time: 3})
	for i := range pts {
		pts[i].Normalize()
	}
	checked := encodeBatch(nil, &Batch{Source: "test", Points: pts})
	trusted := encodeBatch(nil, &Batch{Source: "test", Points: pts, Normalized: true})
	if !bytes.Equal(checked, trusted) {
		t.Fatalf("encodings differ:\n%q\n%q", checked, trusted)
	}
}
