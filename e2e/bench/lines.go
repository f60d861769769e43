package main

import (
	"fmt"
	"strings"
)

// lineTemplate is the benchmark's point: 94 bytes with its newline, three
// tags and three float fields, as issue 5 describes the workload. The host
// tag carries the series number and the timestamp the point number, so that
// every point has an identity of its own and none replaces another.
const lineTemplate = "cpu,host=server000000,region=uswest,dc=dc1 user=10.0,system=1.0,idle=80.0 1700000000000000000\n"

// lineSize is the length of one line, newline included.
const lineSize = len(lineTemplate)

// baseTime is the timestamp of point 0; point n carries baseTime+n ns.
const baseTime = 1700000000000000000

// maxSeries is how many series the six digits of the host tag can tell apart.
const maxSeries = 1_000_000

// Offsets of the digits the generator rewrites.
var (
	offHost   = strings.Index(lineTemplate, "server") + len("server")
	offUser   = strings.Index(lineTemplate, "user=") + len("user=")
	offSystem = strings.Index(lineTemplate, "system=") + len("system=")
	offIdle   = strings.Index(lineTemplate, "idle=") + len("idle=")
	offTime   = strings.LastIndex(lineTemplate, " ") + 1
)

// lineGen writes benchmark lines. Point n belongs to series n mod series.
type lineGen struct{ series int }

func newLineGen(series int) (lineGen, error) {
	if series < 1 || series > maxSeries {
		return lineGen{}, fmt.Errorf("series %d is out of range: use 1 to %d", series, maxSeries)
	}
	return lineGen{series: series}, nil
}

// appendLine appends point n as one line, newline included.
func (g lineGen) appendLine(dst []byte, n int64) []byte {
	start := len(dst)
	dst = append(dst, lineTemplate...)
	b := dst[start:]
	putDigits(b[offHost:offHost+6], n%int64(g.series))
	putDigits(b[offUser:offUser+2], 10+n%90)
	putDigits(b[offUser+3:offUser+4], n%10)
	putDigits(b[offSystem:offSystem+1], n%7)
	putDigits(b[offSystem+2:offSystem+3], n%3)
	putDigits(b[offIdle:offIdle+2], 10+n%89)
	putDigits(b[offTime:offTime+19], baseTime+n)
	return dst
}

// appendLines appends points first .. first+count-1.
func (g lineGen) appendLines(dst []byte, first int64, count int) []byte {
	for i := range int64(count) {
		dst = g.appendLine(dst, first+i)
	}
	return dst
}

// putDigits writes v right-aligned into b in decimal, zero-padded; the
// caller sizes b for v.
func putDigits(b []byte, v int64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}
