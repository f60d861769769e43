package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The corruption cases work on three segments of ten 200-byte records:
// positions 1-10, 11-20 and 21-30, written by three runs of the log.
const (
	cPayload = 200
	cFramed  = recordHeaderSize + cPayload
)

func cRec(p Position) []byte {
	b := fmt.Appendf(nil, "record-%06d|", p)
	return append(b, strings.Repeat("y", cPayload-len(b))...)
}

// cOff is the offset of position p in the segment starting at first.
func cOff(first, p Position) int64 { return segmentHeaderSize + int64(p-first)*cFramed }

func cSegName(seq uint64) string { return segmentName(seq, Position(seq*10+1)) }

func writeThreeSegments(t *testing.T, dir string) {
	t.Helper()
	for s := 0; s < 3; s++ {
		l := openT(t, dir, Options{})
		for i := 0; i < 10; i++ {
			p := l.LastPosition() + 1
			if got, err := l.Append(cRec(p)); err != nil || got != p {
				t.Fatalf("Append = %d, %v; want %d", got, err, p)
			}
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := segFiles(t, dir), []string{cSegName(0), cSegName(1), cSegName(2)}; !slices.Equal(got, want) {
		t.Fatalf("segments %v, want %v", got, want)
	}
}

func editFile(t *testing.T, path string, edit func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, edit(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func positionsExcept(lost ...Position) []Position {
	var ps []Position
	for p := Position(1); p <= 30; p++ {
		if !slices.Contains(lost, p) {
			ps = append(ps, p)
		}
	}
	return ps
}

type wantDamage struct {
	seg    string
	off    int64
	reason string // a substring
}

func TestCorruption(t *testing.T) {
	seg := func(seq uint64) string { return cSegName(seq) }
	cases := map[string]struct {
		damage  func(t *testing.T, dir string)
		read    []Position   // exactly the positions that survive
		damaged []wantDamage // *CorruptionError, in order
		gaps    []GapError
		files   []string // the directory afterwards, LOCK aside
		last    Position // LastPosition after open
		newSeq  uint64   // sequence of the segment the next append creates; 0: 3
	}{
		"torn last record": {
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(2)), func(b []byte) []byte { return b[:cOff(21, 30)+cFramed/2] })
			},
			read:  positionsExcept(30),
			files: []string{seg(0), seg(1), seg(2)},
			last:  29,
		},
		"torn tail of zeros": {
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(2)), func(b []byte) []byte { return append(b, make([]byte, 4096)...) })
			},
			read:  positionsExcept(),
			files: []string{seg(0), seg(1), seg(2)},
			last:  30,
		},
		"zero tail of a sealed segment, nothing missing": {
			// A preallocated segment whose cut at sealing failed.
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte { return append(b, make([]byte, 4096)...) })
			},
			read:  positionsExcept(),
			files: []string{seg(0), seg(1), seg(2)},
			last:  30,
		},
		"old records at the end of a sealed segment, nothing missing": {
			// A recycled segment whose cut at sealing failed: the records
			// of its earlier use (positions 1-10) follow its own.
			damage: func(t *testing.T, dir string) {
				old, err := os.ReadFile(filepath.Join(dir, seg(0)))
				if err != nil {
					t.Fatal(err)
				}
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte { return append(b, old[segmentHeaderSize:]...) })
			},
			read:  positionsExcept(),
			files: []string{seg(0), seg(1), seg(2)},
			last:  30,
		},
		"sealed segment zeroed from its last record on": {
			// The zeros look like preallocated space, but the next segment
			// says position 20 was written before it.
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte {
					clear(b[cOff(11, 20):])
					return append(b, make([]byte, 4096)...)
				})
			},
			read:    positionsExcept(20),
			damaged: []wantDamage{{seg(1), cOff(11, 20), "zero bytes to the end of the file; nothing readable follows"}},
			gaps:    []GapError{{20, 20}},
			files:   []string{seg(0), seg(1), seg(2)},
			last:    30,
		},
		"zeroed sector": {
			// Bytes 512-1023 of the middle segment: records 13 (472-687),
			// 14 (688-903) and 15 (904-1119) touch them.
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte { clear(b[512:1024]); return b })
			},
			read:    positionsExcept(13, 14, 15),
			damaged: []wantDamage{{seg(1), cOff(11, 13), "checksum mismatch"}},
			gaps:    []GapError{{13, 15}},
			files:   []string{seg(0), seg(1), seg(2)},
			last:    30,
		},
		"bad checksum": {
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte { b[cOff(11, 15)+recordHeaderSize+50] ^= 1; return b })
			},
			read:    positionsExcept(15),
			damaged: []wantDamage{{seg(1), cOff(11, 15), "checksum mismatch in record claiming position 15"}},
			gaps:    []GapError{{15, 15}},
			files:   []string{seg(0), seg(1), seg(2)},
			last:    30,
		},
		"bad length": {
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte {
					binary.LittleEndian.PutUint32(b[cOff(11, 15)+4:], cPayload-7)
					return b
				})
			},
			read:    positionsExcept(15),
			damaged: []wantDamage{{seg(1), cOff(11, 15), "checksum mismatch"}},
			gaps:    []GapError{{15, 15}},
			files:   []string{seg(0), seg(1), seg(2)},
			last:    30,
		},
		"huge length": {
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte {
					binary.LittleEndian.PutUint32(b[cOff(11, 15)+4:], 0xfffffff0)
					return b
				})
			},
			read:    positionsExcept(15),
			damaged: []wantDamage{{seg(1), cOff(11, 15), "record length 4294967280 exceeds the maximum record size 67108864"}},
			gaps:    []GapError{{15, 15}},
			files:   []string{seg(0), seg(1), seg(2)},
			last:    30,
		},
		"length past the end": {
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte {
					binary.LittleEndian.PutUint32(b[cOff(11, 15)+4:], 5000)
					return b
				})
			},
			read:    positionsExcept(15),
			damaged: []wantDamage{{seg(1), cOff(11, 15), "record length 5000 exceeds the 1280 bytes left"}},
			gaps:    []GapError{{15, 15}},
			files:   []string{seg(0), seg(1), seg(2)},
			last:    30,
		},
		"truncated header": {
			// A sealed segment cut inside the header of record 16.
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte { return b[:cOff(11, 16)+7] })
			},
			read:    positionsExcept(16, 17, 18, 19, 20),
			damaged: []wantDamage{{seg(1), cOff(11, 16), "7 bytes left, too few for a record header"}},
			gaps:    []GapError{{16, 20}},
			files:   []string{seg(0), seg(1), seg(2)},
			last:    30,
		},
		"truncated segment header": {
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte { return b[:20] })
			},
			read:    positionsExcept(11, 12, 13, 14, 15, 16, 17, 18, 19, 20),
			damaged: []wantDamage{{seg(1), 0, "bad segment header: header is 20 bytes, want 40"}},
			gaps:    []GapError{{11, 20}},
			files:   []string{seg(0), seg(1) + brokenSuffix, seg(2)},
			last:    30,
		},
		"bad segment header": {
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte { b[30] ^= 0xff; return b })
			},
			read:    positionsExcept(11, 12, 13, 14, 15, 16, 17, 18, 19, 20),
			damaged: []wantDamage{{seg(1), 0, "bad segment header: header checksum"}},
			gaps:    []GapError{{11, 20}},
			files:   []string{seg(0), seg(1) + brokenSuffix, seg(2)},
			last:    30,
		},
		"garbage file in the directory": {
			damage: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a segment"), 0o644)
				os.WriteFile(filepath.Join(dir, segmentName(0x99, 0x99)), []byte("garbage that is long enough to hold a header, and more"), 0o644)
			},
			read:    positionsExcept(),
			damaged: []wantDamage{{segmentName(0x99, 0x99), 0, "bad magic"}},
			files:   []string{seg(0), seg(1), seg(2), segmentName(0x99, 0x99) + brokenSuffix, "notes.txt"},
			last:    30,
			newSeq:  0x9a,
		},
		"missing middle segment": {
			damage: func(t *testing.T, dir string) {
				os.Remove(filepath.Join(dir, seg(1)))
			},
			read:  positionsExcept(11, 12, 13, 14, 15, 16, 17, 18, 19, 20),
			gaps:  []GapError{{11, 20}},
			files: []string{seg(0), seg(2)},
			last:  30,
		},
		"empty segment": {
			// A crash right after creating the next segment: a file of zero bytes.
			damage: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, segmentName(3, 31)), nil, 0o644)
			},
			read:   positionsExcept(),
			files:  []string{seg(0), seg(1), seg(2)},
			last:   30,
			newSeq: 4, // sequence numbers are never reused
		},
		"zeroed segment header": {
			// The same crash after the file size reached the disk but not its data.
			damage: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, segmentName(3, 31)), make([]byte, 300), 0o644)
			},
			read:   positionsExcept(),
			files:  []string{seg(0), seg(1), seg(2)},
			last:   30,
			newSeq: 4,
		},
		"damage in the middle of the last segment": {
			// Valid records follow the damage: not a torn tail, so nothing is cut.
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(2)), func(b []byte) []byte { b[cOff(21, 25)+recordHeaderSize] ^= 1; return b })
			},
			read:    positionsExcept(25),
			damaged: []wantDamage{{seg(2), cOff(21, 25), "checksum mismatch"}},
			gaps:    []GapError{{25, 25}},
			files:   []string{seg(0), seg(1), seg(2)},
			last:    30,
		},
		"records superseded by a later segment": {
			// A failed write left records 25-30 in segment 2, and the log
			// went on at 25 in segment 3: the later segment wins, silently.
			damage: func(t *testing.T, dir string) {
				b := encodeSegmentHeader(segmentHeader{seq: 3, first: 25, prevLast: 24})
				for p := Position(25); p <= 27; p++ {
					b = appendRecord(b, p, cRec(p))
				}
				os.WriteFile(filepath.Join(dir, segmentName(3, 25)), b, 0o644)
			},
			read:   positionsExcept(28, 29, 30),
			files:  []string{seg(0), seg(1), seg(2), segmentName(3, 25)},
			last:   27,
			newSeq: 4,
		},
		"damaged first record of a segment": {
			damage: func(t *testing.T, dir string) {
				editFile(t, filepath.Join(dir, seg(1)), func(b []byte) []byte { b[cOff(11, 11)+2] ^= 1; return b })
			},
			read:    positionsExcept(11),
			damaged: []wantDamage{{seg(1), cOff(11, 11), "checksum mismatch"}},
			gaps:    []GapError{{11, 11}},
			files:   []string{seg(0), seg(1), seg(2)},
			last:    30,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeThreeSegments(t, dir)
			tc.damage(t, dir)
			l := openT(t, dir, Options{})
			checkSurvivors(t, l, tc.read)
			if got := l.LastPosition(); got != tc.last {
				t.Errorf("LastPosition = %d, want %d", got, tc.last)
			}
			var damaged []wantDamage
			var gaps []GapError
			for _, p := range l.Problems() {
				var ce *CorruptionError
				var ge *GapError
				switch {
				case errors.As(p, &ce):
					damaged = append(damaged, wantDamage{ce.Segment, ce.Offset, ce.Reason})
				case errors.As(p, &ge):
					gaps = append(gaps, *ge)
				default:
					t.Errorf("unexpected problem %T: %v", p, p)
				}
			}
			if len(damaged) != len(tc.damaged) {
				t.Fatalf("damage reported: %+v, want %+v", damaged, tc.damaged)
			}
			for i, d := range damaged {
				w := tc.damaged[i]
				if d.seg != w.seg || d.off != w.off || !strings.Contains(d.reason, w.reason) {
					t.Errorf("damage %d: %+v, want %+v", i, d, w)
				}
			}
			if !slices.Equal(gaps, tc.gaps) {
				t.Errorf("gaps %v, want %v", gaps, tc.gaps)
			}
			st := l.Stats()
			if st.Corruptions != uint64(len(tc.damaged)) || st.Gaps != uint64(len(tc.gaps)) {
				t.Errorf("Stats: %d corruptions, %d gaps; want %d and %d", st.Corruptions, st.Gaps, len(tc.damaged), len(tc.gaps))
			}
			// Writing goes on, in a new segment, and the next open agrees.
			if p, err := l.Append(cRec(tc.last + 1)); err != nil || p != tc.last+1 {
				t.Fatalf("Append after recovery = %d, %v; want %d", p, err, tc.last+1)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			files := dirFiles(t, dir)
			if tc.newSeq == 0 {
				tc.newSeq = 3
			}
			want := append(slices.Clone(tc.files), segmentName(tc.newSeq, tc.last+1))
			slices.Sort(want)
			if !slices.Equal(files, want) {
				t.Errorf("files after: %v, want %v", files, want)
			}
			l = openT(t, dir, Options{})
			defer l.Close()
			checkSurvivors(t, l, append(slices.Clone(tc.read), tc.last+1))
			// Damage kept in place is found again; a file set aside is not.
			again := len(tc.damaged) + len(tc.gaps)
			if slices.ContainsFunc(tc.files, func(f string) bool { return strings.HasSuffix(f, brokenSuffix) }) {
				again = len(tc.gaps)
			}
			if got := l.Problems(); len(got) != again {
				t.Errorf("second open: problems %v, want %d", got, again)
			}
		})
	}
}

func checkSurvivors(t *testing.T, l *Log, want []Position) {
	t.Helper()
	var got []Position
	for _, r := range readAll(t, l, 0) {
		if r.rec != string(cRec(r.pos)) {
			t.Fatalf("position %d holds %.30q…, want %.30q…", r.pos, r.rec, cRec(r.pos))
		}
		got = append(got, r.pos)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("read positions %v, want %v", got, want)
	}
}

func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if e.Name() != lockName {
			names = append(names, e.Name())
		}
	}
	return names
}
