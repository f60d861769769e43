package storage

import (
	"math"
	"strconv"
)

// appendFloatJSON appends f as a JSON number: strconv's shortest form
// ('g', -1) with ".0" added to whole numbers, so that a float stays a float
// when the JSON is read back; NaN and infinities, which JSON cannot hold,
// become null.
//
// Sensor values mostly have a few decimals and a modest magnitude, and for
// them the shortest form is found directly: the fewest decimals d for
// which c = round(|f|·10^d) gives c/10^d == f. Both c and 10^d are exact in a
// float64, so c/10^d is the correctly rounded value of the decimal c·10^-d:
// it equals f exactly when that decimal reads back as f, the test strconv's
// shortest search passes. Below 1e6 the decimals that read back as f lie
// within 2^-33 of each other, so for d ≤ 6 at most one c qualifies and
// strconv must pick the same digits. Everything else (other magnitudes,
// more decimals, zero) goes to strconv. Formatting floats was a tenth of
// the flusher's time; FuzzAppendFloatJSON checks the fast path against
// strconv.
func appendFloatJSON(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	a := math.Abs(f)
	// strconv's 'g' switches to an exponent below 1e-4 and from 1e6 on.
	if a >= 1e-4 && a < 1e6 {
		for d, p := range pow10 {
			// a·p < 2^53: truncating a·p+0.5 rounds it, faster than math.Round.
			if c := float64(int64(a*p + 0.5)); c/p == a {
				return appendFixed(dst, f < 0, uint64(c), d)
			}
		}
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
	for _, c := range dst[start:] {
		if c == '.' || c == 'e' {
			return dst
		}
	}
	return append(dst, ".0"...)
}

// maxFastDecimals bounds appendFloatJSON's search: below 1e6 with six
// decimals c stays under 2^53, where every integer is exact.
const maxFastDecimals = 6

var pow10 = [maxFastDecimals + 1]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6}

// appendFixed appends c·10^-d with d decimals, or c.0 when d is 0.
func appendFixed(dst []byte, neg bool, c uint64, d int) []byte {
	if neg {
		dst = append(dst, '-')
	}
	if d == 0 {
		dst = strconv.AppendUint(dst, c, 10)
		return append(dst, ".0"...)
	}
	div := uint64(pow10[d])
	dst = strconv.AppendUint(dst, c/div, 10)
	dst = append(dst, '.')
	frac := c % div
	var buf [maxFastDecimals]byte
	for i := d - 1; i >= 0; i-- {
		buf[i] = byte('0' + frac%10)
		frac /= 10
	}
	return append(dst, buf[:d]...)
}
