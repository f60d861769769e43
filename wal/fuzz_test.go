package wal

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"testing"
	"time"
)

// validRecords frames a few records from position first, as a seed.
func validRecords(first Position, payloads ...string) []byte {
	var b []byte
	for i, p := range payloads {
		b = appendRecord(b, first+Position(i), []byte(p))
	}
	return b
}

// watchdog crashes the fuzz worker when one input runs too long, so that
// the fuzzer saves it: a hang on some file content is a bug like a panic.
func watchdog(d time.Duration) (stop func() bool) {
	return time.AfterFunc(d, func() { panic(fmt.Sprintf("one input ran for over %v", d)) }).Stop
}

func addScanSeeds(f *testing.F) {
	good := validRecords(1, "alpha", "", "gamma gamma", "delta")
	f.Add(good, uint64(1), uint64(0))
	f.Add(good[:len(good)-3], uint64(1), uint64(0))
	f.Add(good, uint64(1), uint64(2))
	f.Add(append(bytes.Clone(good[:20]), good...), uint64(1), uint64(0))
	bad := bytes.Clone(good)
	bad[25] ^= 0x40
	f.Add(bad, uint64(1), uint64(0))
	f.Add(make([]byte, 100), uint64(5), uint64(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, uint64(1), uint64(0))
}

// FuzzScanSegment runs the recovery scan over arbitrary bytes following a
// segment header. It must not panic or allocate beyond the input, and
// what it accepts must be consistent: positions increase, every accepted
// record decodes again at its offset, damaged spans are in bounds.
func FuzzScanSegment(f *testing.F) {
	addScanSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte, first, limit uint64) {
		defer watchdog(5 * time.Second)()
		if first == 0 || first > math.MaxUint64/2 {
			first = 1
		}
		if limit == 0 || limit < first {
			limit = math.MaxUint64
		}
		file := append(encodeSegmentHeader(segmentHeader{seq: 1, first: Position(first), prevLast: Position(first - 1)}), body...)
		l := &Log{log: slog.New(slog.DiscardHandler)}
		seg := &segment{first: Position(first), name: "fuzz"}
		sc := scanner{maxRec: 1 << 16}
		sc.reset(bytes.NewReader(file), int64(len(file)))
		res := l.scanSegment(&sc, seg, Position(limit))
		if seg.size > int64(len(file)) || seg.size < segmentHeaderSize {
			t.Fatalf("readable size %d of a %d-byte file", seg.size, len(file))
		}
		if res.tail >= 0 && (res.tail < segmentHeaderSize || res.tail > int64(len(file))) {
			t.Fatalf("tail offset %d out of bounds", res.tail)
		}
		prevEnd := int64(segmentHeaderSize)
		for _, s := range seg.skips {
			if s.from < prevEnd || s.to <= s.from || s.to > int64(len(file)) {
				t.Fatalf("bad skip %+v after %d", s, prevEnd)
			}
			prevEnd = s.to
		}
		// Read back through a fresh scanner, the way a Reader does.
		rd := scanner{maxRec: 1 << 16}
		rd.reset(bytes.NewReader(file), seg.size)
		off, n, last := int64(segmentHeaderSize), 0, Position(0)
		for skipIdx := 0; off < seg.size; {
			for skipIdx < len(seg.skips) && seg.skips[skipIdx].from <= off {
				off = max(off, seg.skips[skipIdx].to)
				skipIdx++
			}
			if off >= seg.size {
				break
			}
			_, pos, size, bad := rd.decode(off)
			if bad != recordOK {
				t.Fatalf("accepted region does not decode at offset %d: %v", off, bad)
			}
			if pos <= last && n > 0 || pos < Position(first) || pos > Position(limit) {
				t.Fatalf("position %d after %d (first %d, limit %d)", pos, last, first, limit)
			}
			last, off = pos, off+size
			n++
		}
		if n != seg.records || (n > 0 && last != seg.last) {
			t.Fatalf("read back %d records ending at %d; scan said %d ending at %d", n, last, seg.records, seg.last)
		}
	})
}

// FuzzOpen puts arbitrary bytes in a directory as a segment between two
// good ones and as the newest segment, opens it, reads, appends, and
// opens again: never a panic or an error, the good records always survive.
func FuzzOpen(f *testing.F) {
	good := validRecords(11, "eleven", "twelve")
	f.Add(append(encodeSegmentHeader(segmentHeader{seq: 1, first: 11, prevLast: 10}), good...), true)
	f.Add(append(encodeSegmentHeader(segmentHeader{seq: 1, first: 11, prevLast: 10}), good[:30]...), false)
	f.Add([]byte("garbage"), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, data []byte, middle bool) {
		defer watchdog(5 * time.Second)()
		fs := newMemFS()
		write := func(name string, b []byte) {
			fl, _ := fs.OpenFile("/wal/"+name, os.O_CREATE|os.O_RDWR, 0o644)
			fl.Write(b)
			fl.Close()
		}
		write(segmentName(0, 1), append(encodeSegmentHeader(segmentHeader{seq: 0, first: 1, prevLast: 0}), validRecords(1, "one", "two")...))
		write(segmentName(1, 11), data)
		if middle {
			write(segmentName(2, 21), append(encodeSegmentHeader(segmentHeader{seq: 2, first: 21, prevLast: 20}), validRecords(21, "twenty-one")...))
		}
		opts := Options{FS: fs, MaxRecordSize: 1 << 16}
		l, err := Open("/wal", opts)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		must := map[Position]string{1: "one", 2: "two"}
		if middle {
			must[21] = "twenty-one"
		}
		check := func() {
			t.Helper()
			r, _ := l.NewReader(0)
			defer r.Close()
			seen := map[Position]bool{}
			var prev Position
			for {
				rec, pos, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("Next: %v", err)
				}
				if pos <= prev {
					t.Fatalf("position %d after %d", pos, prev)
				}
				if want, ok := must[pos]; ok && want != string(rec) {
					t.Fatalf("position %d holds %q, want %q", pos, rec, want)
				}
				prev = pos
				seen[pos] = true
			}
			for p := range must {
				if !seen[p] {
					t.Fatalf("position %d lost", p)
				}
			}
		}
		check()
		p, err := l.Append([]byte("appended"))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		must[p] = "appended"
		l.Close()
		if l, err = Open("/wal", opts); err != nil {
			t.Fatalf("second Open: %v", err)
		}
		defer l.Close()
		check()
	})
}
