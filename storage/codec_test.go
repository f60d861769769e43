package storage

import "testing"

// TestKeyMemo: the memo may only answer for a point whose key, measurement
// and tags are the very ones it checked; anything else is checked again.
func TestKeyMemo(t *testing.T) {
	tags := []Tag{{"a", "1"}, {"b", "2"}}
	other := []Tag{{"a", "1"}, {"b", "3"}}
	key := SeriesKey("m", tags)
	meas := "m"
	cases := []struct {
		name string
		p    Point
		want bool
	}{
		{"canonical", Point{Key: key, Measurement: meas, Tags: tags}, true},
		{"same again", Point{Key: key, Measurement: meas, Tags: tags}, true},
		{"same key, other tags", Point{Key: key, Measurement: meas, Tags: other}, false},
		{"same key, fewer tags", Point{Key: key, Measurement: meas, Tags: tags[:1]}, false},
		{"same key, other measurement", Point{Key: key, Measurement: "n", Tags: tags}, false},
		{"same key, no tags", Point{Key: key, Measurement: meas}, false},
		{"key of other tags", Point{Key: SeriesKey("m", other), Measurement: meas, Tags: other}, true},
		{"empty key", Point{Measurement: meas, Tags: tags}, false},
		{"first again", Point{Key: key, Measurement: meas, Tags: tags}, true},
	}
	var memo keyMemo
	for _, tc := range cases {
		if got := memo.canonical(&tc.p); got != tc.want {
			t.Errorf("%s: canonical = %v, want %v", tc.name, got, tc.want)
		}
		if got := isCanonicalKey(&tc.p); got != tc.want {
			t.Errorf("%s: isCanonicalKey = %v, want %v (the case is wrong)", tc.name, got, tc.want)
		}
	}
}

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
