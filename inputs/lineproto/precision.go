package lineproto

import (
	"fmt"
	"time"
)

// ParsePrecision turns a precision as clients send it into the duration of
// one timestamp unit. It accepts InfluxDB v2's ns, us, ms and s, v1's n, u,
// ms, s, m and h, and µs; "" means nanoseconds.
func ParsePrecision(s string) (time.Duration, error) {
	switch s {
	case "", "ns", "n":
		return time.Nanosecond, nil
	case "us", "u", "µs", "µ":
		return time.Microsecond, nil
	case "ms":
		return time.Millisecond, nil
	case "s":
		return time.Second, nil
	case "m":
		return time.Minute, nil
	case "h":
		return time.Hour, nil
	}
	return 0, fmt.Errorf("unknown precision %q: use ns, us, ms or s (v1 also accepts n, u, m and h)", s)
}
