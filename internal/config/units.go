package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written as people write it: 30s, 5m, 100ms, 1h30m.
// A bare number is refused because its unit would be a guess.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d *Duration) decodeScalar(n *yaml.Node) error {
	if n.ShortTag() == "!!int" || n.ShortTag() == "!!float" {
		if n.Value == "0" {
			*d = 0
			return nil
		}
		return fmt.Errorf("%q has no unit; write a duration such as %ss, %sms or %sm", n.Value, n.Value, n.Value, n.Value)
	}
	if n.ShortTag() != "!!str" {
		return fmt.Errorf("want a duration such as 30s or 5m, got %s", describe(n))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration reads a non-negative duration such as 30s, 5m or 100ms.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; write it as 30s, 5m, 100ms or 1h30m", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return v, nil
}

// MarshalYAML writes the duration in its shortest exact form (5m, not 5m0s).
func (d Duration) MarshalYAML() (any, error) { return FormatDuration(time.Duration(d)), nil }

// String is the same short form.
func (d Duration) String() string { return FormatDuration(time.Duration(d)) }

// FormatDuration writes d in the largest unit that holds it exactly: 5m, 30s, 100ms.
func FormatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	}
	return d.String()
}

// Seconds is the seed's way of writing a duration: a number of seconds
// (flush_interval_seconds: 30). It is read only; the effective config is
// printed with the duration key.
type Seconds time.Duration

func (s *Seconds) decodeScalar(n *yaml.Node) error {
	if t := n.ShortTag(); t != "!!int" && t != "!!float" {
		return fmt.Errorf("want a number of seconds, got %s", describe(n))
	}
	f, err := strconv.ParseFloat(n.Value, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%q is not a number of seconds", n.Value)
	}
	if f < 0 {
		return fmt.Errorf("%s seconds is negative", n.Value)
	}
	if f > float64(math.MaxInt64/int64(time.Second)) {
		return fmt.Errorf("%s seconds is too large", n.Value)
	}
	*s = Seconds(f * float64(time.Second))
	return nil
}

// Size is a number of bytes written as people write it: 10MiB, 64KiB, 1GB, or
// plain bytes. KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB powers of
// 1000, as in DuckDB.
type Size int64

func (s *Size) decodeScalar(n *yaml.Node) error {
	switch n.ShortTag() {
	case "!!int", "!!str", "!!float":
	default:
		return fmt.Errorf("want a size such as 10MiB or a number of bytes, got %s", describe(n))
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

var sizeUnits = []struct {
	name string
	mult int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

// ParseSize reads a non-negative size: 10MiB, 64KiB, 1GB, 1.5GiB, 4096.
// Units are case-insensitive; a single letter (10M) is refused as ambiguous.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.' || t[i] == '-' || t[i] == '+') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" {
		return 0, fmt.Errorf("%q is not a size; write it as 10MiB, 64KiB, 1GB or a number of bytes", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size; write it as 10MiB, 64KiB, 1GB or a number of bytes", s)
	}
	if f < 0 || strings.HasPrefix(num, "-") {
		return 0, fmt.Errorf("size %q is negative", s)
	}
	mult := int64(0)
	if unit == "" {
		mult = 1
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			mult = u.mult
			break
		}
	}
	if mult == 0 {
		return 0, fmt.Errorf("size %q has an unknown unit %q; use B, KiB, MiB, GiB, TiB (1024) or KB, MB, GB, TB (1000)", s, unit)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	if mult == 1 && f != math.Trunc(f) {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	return int64(math.Round(v)), nil
}

// MarshalYAML writes the size in the largest unit that holds it exactly.
func (s Size) MarshalYAML() (any, error) { return FormatSize(int64(s)), nil }

// String is the same short form.
func (s Size) String() string { return FormatSize(int64(s)) }

// FormatSize writes n in the largest unit that holds it exactly (10MiB, 1GB), or as bytes.
func FormatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range sizeUnits {
		if u.mult > 1 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	if n.ShortTag() == "!!null" {
		return "nothing (null)"
	}
	return strconv.Quote(n.Value)
}
