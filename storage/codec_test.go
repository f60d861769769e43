package storage

import "testing"

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
