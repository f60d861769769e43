package storage

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// slowFloatJSON is what appendFloatJSON must produce: strconv's shortest
// form, ".0" after whole numbers, null for what JSON cannot hold.
func slowFloatJSON(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "null"
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	for _, c := range s {
		if c == '.' || c == 'e' {
			return s
		}
	}
	return s + ".0"
}

func TestAppendFloatJSON(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "0.0"},
		{math.Copysign(0, -1), "-0.0"},
		{1, "1.0"},
		{-1, "-1.0"},
		{10, "10.0"},
		{12.5, "12.5"},
		{-273.15, "-273.15"},
		{0.1, "0.1"},
		{0.3, "0.3"},
		{math.Nextafter(0.3, 1), "0.30000000000000004"}, // 0.1 + 0.2 at run time
		{1.0 / 3, "0.3333333333333333"},
		{0.0001, "0.0001"},
		{0.00009, "9e-05"},
		{123456, "123456.0"},
		{999999.5, "999999.5"},
		{1e6, "1e+06"},
		{1234567, "1.234567e+06"},
		{100000.25, "100000.25"},
		{84.3, "84.3"},
		{3.2, "3.2"},
		{1e21, "1e+21"},
		{5e-324, "5e-324"},
		{math.MaxFloat64, "1.7976931348623157e+308"},
		{math.NaN(), "null"},
		{math.Inf(1), "null"},
		{math.Inf(-1), "null"},
	} {
		if got := string(appendFloatJSON(nil, tc.in)); got != tc.want {
			t.Errorf("appendFloatJSON(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestAppendFloatJSONLikeStrconv compares the fast path with strconv on
// values shaped like sensor readings, where the fast path is taken.
func TestAppendFloatJSONLikeStrconv(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 1_000_000 {
		var f float64
		switch i % 4 {
		case 0: // a few decimals
			f = float64(r.IntN(2_000_000)-1_000_000) / pow10[r.IntN(len(pow10))]
		case 1: // any value in the fast range
			f = r.Float64() * pow10[r.IntN(len(pow10))]
		case 2: // neighbours of round values
			f = math.Nextafter(float64(r.IntN(100000))/100, math.Inf(2*r.IntN(2)-1))
		default: // any bits
			f = math.Float64frombits(r.Uint64())
		}
		if got, want := string(appendFloatJSON(nil, f)), slowFloatJSON(f); got != want {
			t.Fatalf("appendFloatJSON(%b) = %s, want %s", f, got, want)
		}
	}
}

func FuzzAppendFloatJSON(f *testing.F) {
	for _, v := range []float64{0, 12.5, 0.1 + 0.2, 999999.9999, math.Nextafter(0.3, 1), 0.00012345, 1e6 - 1e-9} {
		f.Add(math.Float64bits(v))
	}
	f.Fuzz(func(t *testing.T, bits uint64) {
		v := math.Float64frombits(bits)
		if got, want := string(appendFloatJSON(nil, v)), slowFloatJSON(v); got != want {
			t.Fatalf("appendFloatJSON(%b) = %s, want %s", v, got, want)
		}
	})
}

func BenchmarkAppendFloatJSON(b *testing.B) {
	vals := []float64{84.3, 3.2, 12, 21.75, -4.5, 1013.25, 0.25}
	var dst []byte
	for i := 0; b.Loop(); i++ {
		dst = appendFloatJSON(dst[:0], vals[i%len(vals)])
	}
}
