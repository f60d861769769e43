package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"strconv"
)

// Format constants. Changing any of them changes the on-disk format.
const (
	segmentMagic      = "FPWALSG\n" // format: first 8 bytes of every segment
	segmentVersion    = 1           // format: bumped on any incompatible change
	segmentHeaderSize = 40          // format: magic(8) version(4) crc(4) seq(8) first(8) prevLast(8)
	recordHeaderSize  = 16          // format: crc(4) length(4) position(8)
	maxFormatLength   = math.MaxUint32
	segmentSuffix     = ".wal"
	segmentNameLen    = 16 + 1 + 16 + len(segmentSuffix) // format: %016x-%016x.wal
	brokenSuffix      = ".broken"
	lockName          = "LOCK"
	preallocName      = "next.wal.tmp" // format: a zero-filled spare; removed at open
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func segmentName(seq uint64, first Position) string {
	return fmt.Sprintf("%016x-%016x%s", seq, uint64(first), segmentSuffix)
}

// parseSegmentName accepts exactly the names segmentName produces.
func parseSegmentName(name string) (seq uint64, first Position, ok bool) {
	if len(name) != segmentNameLen || name[16] != '-' || name[33:] != segmentSuffix {
		return 0, 0, false
	}
	for i, c := range name[:33] {
		if i == 16 {
			continue
		}
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return 0, 0, false
		}
	}
	s, err1 := strconv.ParseUint(name[:16], 16, 64)
	f, err2 := strconv.ParseUint(name[17:33], 16, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return s, Position(f), true
}

// segmentHeader is what a segment says about itself. prevLast is the last
// position the writer had when it created the segment: positions between
// prevLast and first were skipped on purpose (AdvanceTo), while positions
// at or below prevLast missing from earlier segments are a gap.
type segmentHeader struct {
	seq      uint64
	first    Position
	prevLast Position
}

func encodeSegmentHeader(sh segmentHeader) []byte {
	h := make([]byte, segmentHeaderSize)
	copy(h, segmentMagic)
	binary.LittleEndian.PutUint32(h[8:], segmentVersion)
	binary.LittleEndian.PutUint64(h[16:], sh.seq)
	binary.LittleEndian.PutUint64(h[24:], uint64(sh.first))
	binary.LittleEndian.PutUint64(h[32:], uint64(sh.prevLast))
	binary.LittleEndian.PutUint32(h[12:], segmentHeaderCRC(h))
	return h
}

func segmentHeaderCRC(h []byte) uint32 {
	c := crc32.Update(0, castagnoli, h[:12])
	return crc32.Update(c, castagnoli, h[16:segmentHeaderSize])
}

// decodeSegmentHeader returns a reason when h is not a valid header.
func decodeSegmentHeader(h []byte) (sh segmentHeader, reason string) {
	if len(h) < segmentHeaderSize {
		return sh, fmt.Sprintf("header is %d bytes, want %d", len(h), segmentHeaderSize)
	}
	if string(h[:8]) != segmentMagic {
		return sh, fmt.Sprintf("bad magic %q", h[:8])
	}
	if v := binary.LittleEndian.Uint32(h[8:]); v != segmentVersion {
		return sh, fmt.Sprintf("unsupported version %d (this build reads %d)", v, segmentVersion)
	}
	if got, want := binary.LittleEndian.Uint32(h[12:]), segmentHeaderCRC(h); got != want {
		return sh, fmt.Sprintf("header checksum %08x, want %08x", got, want)
	}
	sh.seq = binary.LittleEndian.Uint64(h[16:])
	sh.first = Position(binary.LittleEndian.Uint64(h[24:]))
	sh.prevLast = Position(binary.LittleEndian.Uint64(h[32:]))
	if sh.first == 0 || sh.prevLast >= sh.first {
		return sh, fmt.Sprintf("first position %d after previous last %d", sh.first, sh.prevLast)
	}
	return sh, ""
}

// appendRecord frames rec at position pos onto buf. The checksum covers the
// length, the position and the payload, which are contiguous after it.
func appendRecord(buf []byte, pos Position, rec []byte) []byte {
	n := len(buf)
	buf = append(buf, make([]byte, recordHeaderSize)...)
	binary.LittleEndian.PutUint32(buf[n+4:], uint32(len(rec)))
	binary.LittleEndian.PutUint64(buf[n+8:], uint64(pos))
	buf = append(buf, rec...)
	binary.LittleEndian.PutUint32(buf[n:], crc32.Checksum(buf[n+4:], castagnoli))
	return buf
}

// renumber rewrites the positions of the framed records in buf to start at first.
func renumber(buf []byte, first Position) {
	for off := 0; off < len(buf); {
		l := int(binary.LittleEndian.Uint32(buf[off+4:]))
		binary.LittleEndian.PutUint64(buf[off+8:], uint64(first))
		end := off + recordHeaderSize + l
		binary.LittleEndian.PutUint32(buf[off:], crc32.Checksum(buf[off+4:end], castagnoli))
		first++
		off = end
	}
}

// badRecord says why the bytes at an offset are not a record.
type badRecord uint8

const (
	recordOK badRecord = iota
	recordTruncatedHeader
	recordTooLong
	recordPastEnd
	recordBadChecksum
	recordReadError
)

// scanner decodes records from a segment through a window buffer, so that a
// record is read with one ReadAt in the common case and nothing is allocated
// per record. A length is checked against the bytes left and the maximum
// before the window grows to hold it.
type scanner struct {
	f      io.ReaderAt
	size   int64 // bytes of the segment that may be read
	maxRec int
	mem    []byte
	win    []byte // bytes of the file at winOff
	winOff int64
	rerr   error // last read error
}

const scanChunk = 1 << 20

func (s *scanner) reset(f io.ReaderAt, size int64) {
	s.f, s.size, s.win, s.winOff, s.rerr = f, size, nil, 0, nil
}

// at returns n bytes at off; the caller ensures off+n <= s.size.
func (s *scanner) at(off int64, n int) []byte {
	if off >= s.winOff && off+int64(n) <= s.winOff+int64(len(s.win)) {
		return s.win[off-s.winOff:][:n]
	}
	want := int64(max(n, scanChunk))
	if left := s.size - off; want > left {
		want = left
	}
	if int64(cap(s.mem)) < want {
		s.mem = make([]byte, want)
	}
	b := s.mem[:want]
	k, err := s.f.ReadAt(b, off)
	if k < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		s.rerr, s.win = err, nil
		return nil
	}
	s.win, s.winOff = b[:k], off
	return s.win[:n]
}

// decode reads the record at off. n is the framed size.
func (s *scanner) decode(off int64) (rec []byte, pos Position, n int64, bad badRecord) {
	left := s.size - off
	if left < recordHeaderSize {
		return nil, 0, 0, recordTruncatedHeader
	}
	h := s.at(off, recordHeaderSize)
	if h == nil {
		return nil, 0, 0, recordReadError
	}
	l := int64(binary.LittleEndian.Uint32(h[4:]))
	pos = Position(binary.LittleEndian.Uint64(h[8:]))
	sum := binary.LittleEndian.Uint32(h)
	if l > int64(s.maxRec) {
		return nil, pos, l, recordTooLong
	}
	if l > left-recordHeaderSize {
		return nil, pos, l, recordPastEnd
	}
	b := s.at(off, recordHeaderSize+int(l))
	if b == nil {
		return nil, 0, 0, recordReadError
	}
	if crc32.Checksum(b[4:], castagnoli) != sum {
		return nil, pos, l, recordBadChecksum
	}
	return b[recordHeaderSize:], pos, recordHeaderSize + l, recordOK
}

// describe explains a bad record for a CorruptionError.
func (s *scanner) describe(bad badRecord, pos Position, l int64, off int64) string {
	switch bad {
	case recordTruncatedHeader:
		return fmt.Sprintf("%d bytes left, too few for a record header", s.size-off)
	case recordTooLong:
		return fmt.Sprintf("record length %d exceeds the maximum record size %d", l, s.maxRec)
	case recordPastEnd:
		return fmt.Sprintf("record length %d exceeds the %d bytes left", l, s.size-off-recordHeaderSize)
	case recordBadChecksum:
		return fmt.Sprintf("checksum mismatch in record claiming position %d", pos)
	case recordReadError:
		return fmt.Sprintf("read error: %v", s.rerr)
	}
	return "unknown"
}

// zeroFrom reports whether every byte from off to the end is zero.
func (s *scanner) zeroFrom(off int64) bool {
	for off < s.size {
		n := int(min(s.size-off, scanChunk))
		b := s.at(off, n)
		if b == nil || !allZero(b) {
			return false
		}
		off += int64(n)
	}
	return true
}

// resync looks for the first offset after off holding a valid record whose
// position lies in [lo, hi]. It is the slow path taken only after damage.
func (s *scanner) resync(off int64, lo, hi Position) (int64, bool) {
	for o := off + 1; o+recordHeaderSize <= s.size; o++ {
		h := s.at(o, recordHeaderSize)
		if h == nil {
			return 0, false
		}
		p := Position(binary.LittleEndian.Uint64(h[8:]))
		if p < lo || p > hi {
			continue
		}
		// Every record takes at least a header, which bounds how far
		// positions can run ahead in the bytes that remain.
		if uint64(p-lo) > uint64((s.size-off)/recordHeaderSize) {
			continue
		}
		if _, _, _, bad := s.decode(o); bad == recordOK {
			return o, true
		}
	}
	return 0, false
}
