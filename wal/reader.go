package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Reader reads records in position order, tailing the log as it is written
// and across rotations. It is not safe for concurrent use; open one per
// consumer.
type Reader struct {
	l       *Log
	next    Position // the lowest position still wanted
	limit   Position // LastPosition when last looked at
	seg     *segment
	f       File
	sc      scanner
	off     int64
	segLast Position
	skipIdx int
	closed  bool
}

// NewReader returns a Reader of the records at positions >= from. Positions
// no longer on disk are skipped.
func (l *Log) NewReader(from Position) (*Reader, error) {
	if l.isClosed.Load() {
		return nil, ErrClosed
	}
	r := &Reader{l: l, next: max(from, 1)}
	r.sc.maxRec = l.opts.MaxRecordSize
	return r, nil
}

// Next returns the next record and its position. rec is valid until the
// next call. At the end of what is visible it returns io.EOF: call again
// later (after Log.Wait) for more. Damaged records are skipped, counted in
// Stats.Corruptions and logged. Once the log is closed and everything
// visible has been read, Next returns ErrClosed.
func (r *Reader) Next() (rec []byte, pos Position, err error) {
	if r.closed {
		return nil, 0, ErrClosed
	}
	for {
		if r.next > r.limit {
			r.limit = r.l.LastPosition()
			if r.next > r.limit {
				if r.l.isClosed.Load() {
					return nil, 0, ErrClosed
				}
				return nil, 0, io.EOF
			}
		}
		if r.seg == nil || r.next > r.segLast {
			ok, err := r.locate()
			if err != nil {
				return nil, 0, err
			}
			if !ok {
				// Visible positions with no record: skipped by AdvanceTo.
				r.next = r.limit + 1
				continue
			}
		}
		for r.skipIdx < len(r.seg.skips) && r.seg.skips[r.skipIdx].from <= r.off {
			if s := r.seg.skips[r.skipIdx]; r.off < s.to {
				r.off = s.to
			}
			r.skipIdx++
		}
		if r.off >= r.sc.size {
			r.damaged(r.off, "segment ends before its last record")
			r.next = r.segLast + 1
			continue
		}
		rec, pos, n, bad := r.sc.decode(r.off)
		if bad != recordOK {
			reason := r.sc.describe(bad, pos, n, r.off)
			if bad == recordReadError {
				return nil, 0, fmt.Errorf("wal: read %s at offset %d: %w", r.l.path(r.seg.name), r.off, r.sc.rerr)
			}
			r.damaged(r.off, reason)
			if o, ok := r.sc.resync(r.off, r.next, r.segLast); ok {
				r.off = o
			} else {
				r.next = r.segLast + 1
			}
			continue
		}
		r.off += n
		if pos < r.next {
			continue
		}
		if pos > r.segLast {
			r.next = r.segLast + 1
			continue
		}
		r.next = pos + 1
		return rec, pos, nil
	}
}

// damaged reports damage that appeared after Open.
func (r *Reader) damaged(off int64, reason string) {
	e := &CorruptionError{Segment: r.seg.name, Offset: off, Reason: reason}
	r.l.corruptions.Add(1)
	r.l.mu.Lock()
	r.l.addProblem(e)
	r.l.mu.Unlock()
	r.l.log.Error("wal: damaged record found while reading; skipping it", "file", r.l.path(r.seg.name), "offset", off, "reason", reason)
}

// locate finds the segment holding r.next, or the first one after it, and
// refreshes how far it may be read.
func (r *Reader) locate() (bool, error) {
	for {
		l := r.l
		l.mu.Lock()
		var s *segment
		for _, c := range l.segs {
			if c.records > 0 && c.last >= r.next {
				s = c
				break
			}
		}
		if s == nil {
			l.mu.Unlock()
			return false, nil
		}
		last, size := s.last, s.size
		seek := s.seekFor(r.next)
		l.mu.Unlock()
		if s == r.seg {
			r.segLast, r.sc.size = last, size
			return true, nil
		}
		f, err := l.fs.OpenFile(l.path(s.name), os.O_RDONLY, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile: look again
		}
		if err != nil {
			return false, fmt.Errorf("wal: open segment %s for reading: %w", l.path(s.name), err)
		}
		if r.f != nil {
			r.f.Close()
		}
		r.f, r.seg, r.segLast, r.skipIdx = f, s, last, 0
		r.sc.reset(f, size)
		r.off = seek
		return true, nil
	}
}

// Close releases the reader's file.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.f != nil {
		return r.f.Close()
	}
	return nil
}
