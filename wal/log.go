package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// segment is what the log knows of one segment file.
type segment struct {
	seq      uint64
	first    Position // from the header
	prevLast Position // from the header
	name     string   // base name
	firstRec Position // first readable position; 0 when none
	last     Position // last readable position; first-1 when none
	size     int64    // bytes holding readable records, header included
	records  int
	skips    []span // damaged byte ranges; set at open, never changed after
	damaged  bool
	index    []indexEntry
}

type span struct{ from, to int64 }

// indexEntry locates a record so that readers and Behind need not scan a
// whole segment.
type indexEntry struct {
	pos Position
	off int64
}

const indexEvery = 1024

func (s *segment) addRecords(first Position, n int, off, size int64) {
	if len(s.index) == 0 || first-s.index[len(s.index)-1].pos >= indexEvery {
		s.index = append(s.index, indexEntry{first, off})
	}
	if s.firstRec == 0 {
		s.firstRec = first
	}
	s.last = first + Position(n) - 1
	s.records += n
	s.size = size
}

// offsetOf estimates the offset of position p in the segment, exact at
// index entries and interpolated between them.
func (s *segment) offsetOf(p Position) int64 {
	if s.records == 0 || p <= s.firstRec {
		return segmentHeaderSize
	}
	if p > s.last {
		return s.size
	}
	i, _ := slices.BinarySearchFunc(s.index, p, func(e indexEntry, p Position) int {
		if e.pos > p {
			return 1
		}
		if e.pos < p {
			return -1
		}
		return 0
	})
	if i < len(s.index) && s.index[i].pos == p {
		return s.index[i].off
	}
	if i == 0 {
		return segmentHeaderSize
	}
	lo := s.index[i-1]
	hiPos, hiOff := s.last+1, s.size
	if i < len(s.index) {
		hiPos, hiOff = s.index[i].pos, s.index[i].off
	}
	return lo.off + int64(float64(hiOff-lo.off)*float64(p-lo.pos)/float64(hiPos-lo.pos))
}

// seekFor returns the offset of an index entry at or before p.
func (s *segment) seekFor(p Position) int64 {
	off := int64(segmentHeaderSize)
	for _, e := range s.index {
		if e.pos > p {
			break
		}
		off = e.off
	}
	return off
}

// Log is a write-ahead log in one directory. Its methods are safe for
// concurrent use.
type Log struct {
	dir  string
	opts Options
	fs   FS
	log  *slog.Logger
	lock io.Closer

	// wmu serialises the file writes: the flusher, AdvanceTo and Close.
	wmu        sync.Mutex
	active     File // nil between a rotation and the next write
	activeBorn time.Time
	dirty      bool     // written since the last fsync
	written    Position // last position written to a segment file
	nextSeq    uint64

	mu        sync.Mutex
	pending   *batch // records waiting for the next write
	flushing  bool   // a goroutine holds the writer role
	idle      *sync.Cond
	spare     []byte
	nextPos   Position // the position the next appended record gets
	segs      []*segment
	activeSeg *segment
	closed    bool
	notify    chan struct{} // closed when visible grows
	problems  []error
	doomed    []doomed // segments whose removal failed, retried by RemoveBefore

	nsegs    atomic.Int64  // len(segs), for wantSpare
	visible  atomic.Uint64 // LastPosition
	synced   atomic.Uint64 // highest position known to be fsynced
	isClosed atomic.Bool

	rmu sync.Mutex // serialises RemoveBefore

	kick chan struct{}
	quit chan struct{}
	done chan struct{}

	// Preallocation: a zero-filled file (preallocName), prepared by the
	// preallocator goroutine, becomes the next segment.
	spareReady  atomic.Bool // the spare file is complete and synced
	spareMu     sync.Mutex  // held while the spare's name is written, renamed or taken
	activePre   bool        // the active file is longer than its records: cut it when sealing (wmu)
	preKick     chan struct{}
	preDone     chan struct{}
	preFailing  bool // the last preparation failed (preallocator only)
	preallocs   atomic.Uint64
	recycled    atomic.Uint64
	preFailures atomic.Uint64

	fsyncs, fsyncNanos, lastFsync, maxFsync atomic.Int64
	corruptions, gaps, writeErrors          atomic.Uint64
}

type doomed struct {
	name    string
	damaged bool
	size    int64 // bytes of records, header included
}

// Open opens the log in dir, creating the directory if needed, and takes
// an exclusive lock on it. It recovers what is there: a torn tail of the
// last segment is cut, damaged regions and garbage are set aside and
// reported (see Problems), and writing continues in a new segment.
func Open(dir string, opts Options) (*Log, error) {
	opts, err := opts.withDefaults(dir)
	if err != nil {
		return nil, err
	}
	l := &Log{
		dir:  dir,
		opts: opts,
		fs:   opts.FS,
		log:  opts.Logger,
		kick: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	if err := l.fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: create directory %s: %w", dir, err)
	}
	if err := l.takeLock(); err != nil {
		return nil, err
	}
	if err := l.recover(); err != nil {
		l.lock.Close()
		return nil, err
	}
	l.pending = &batch{}
	l.idle = sync.NewCond(&l.mu)
	go l.run()
	if l.opts.Preallocate && !l.opts.preallocInline {
		l.preKick = make(chan struct{}, 1)
		l.preDone = make(chan struct{})
		go l.preallocator()
		// The first segment too: nothing can be recycled yet, and a spare
		// zero-filled now, before the load comes, keeps those writes (and
		// their flush) from queuing in front of the first appends' fsyncs.
		l.kickPrealloc()
	}
	return l, nil
}

func (l *Log) path(name string) string { return filepath.Join(l.dir, name) }

func (l *Log) takeLock() error {
	name := l.path(lockName)
	c, err := l.fs.Lock(name)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return &LockedError{Dir: l.dir, Holder: l.lockHolder(name)}
	}
	if err != nil {
		return fmt.Errorf("wal: lock %s: %w", name, err)
	}
	l.lock = c
	holder := fmt.Sprintf("pid %d (%s), since %s\n", os.Getpid(), filepath.Base(os.Args[0]), time.Now().UTC().Format(time.RFC3339))
	f, err := l.fs.OpenFile(name, os.O_RDWR, 0)
	if err == nil {
		if err = f.Truncate(0); err == nil {
			_, err = f.Write([]byte(holder))
		}
		f.Close()
	}
	if err != nil {
		// The lock holds without the note; only the message of a second opener suffers.
		l.log.Warn("wal: cannot record the lock holder", "file", name, "err", err)
	}
	return nil
}

func (l *Log) lockHolder(name string) string {
	f, err := l.fs.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return "another process"
	}
	defer f.Close()
	b := make([]byte, 256)
	n, _ := f.ReadAt(b, 0)
	if s := strings.TrimSpace(strings.ToValidUTF8(string(b[:n]), "?")); s != "" {
		return s
	}
	return "another process"
}

// recover reads the directory and builds the segment list.
func (l *Log) recover() error {
	names, err := l.fs.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("wal: read directory %s: %w", l.dir, err)
	}
	type found struct {
		name string
		seq  uint64
		f    File
		size int64
		hdr  segmentHeader
	}
	var cands []*found
	for _, name := range names {
		if base, ok := strings.CutSuffix(name, brokenSuffix); ok {
			// Evidence; its sequence number is not to be reused.
			if seq, _, ok := parseSegmentName(base); ok {
				l.nextSeq = max(l.nextSeq, seq+1)
			}
			continue
		}
		if name == lockName {
			continue
		}
		if name == preallocName {
			// A spare of the previous run: its content is not known to
			// be complete, and a new one is made in the background.
			if err := l.fs.Remove(l.path(name)); err != nil {
				return fmt.Errorf("wal: remove the leftover preallocated file %s: %w", l.path(name), err)
			}
			continue
		}
		seq, _, ok := parseSegmentName(name)
		if !ok {
			l.log.Warn("wal: ignoring a file that is not a segment", "file", l.path(name))
			continue
		}
		l.nextSeq = max(l.nextSeq, seq+1)
		cands = append(cands, &found{name: name, seq: seq})
	}
	slices.SortFunc(cands, func(a, b *found) int {
		if a.seq < b.seq {
			return -1
		}
		if a.seq > b.seq {
			return 1
		}
		return 0
	})
	defer func() {
		for _, c := range cands {
			if c.f != nil {
				c.f.Close()
			}
		}
	}()

	// Headers first: each segment's extent depends on the next one's.
	var good []*found
	for i, c := range cands {
		f, err := l.fs.OpenFile(l.path(c.name), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("wal: open segment %s: %w", l.path(c.name), err)
		}
		c.f = f
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("wal: stat segment %s: %w", l.path(c.name), err)
		}
		c.size = st.Size()
		h := make([]byte, segmentHeaderSize)
		n, _ := f.ReadAt(h, 0)
		sh, reason := decodeSegmentHeader(h[:n])
		_, nameFirst, _ := parseSegmentName(c.name)
		recycledOnly := false // the header of the file's earlier use
		if reason == "" && (sh.seq != c.seq || sh.first != nameFirst) {
			reason = fmt.Sprintf("header says sequence %d and first position %d, the name says %d and %d", sh.seq, sh.first, c.seq, nameFirst)
			recycledOnly = sh.seq < c.seq && sh.first < nameFirst
		}
		if reason == "" {
			c.hdr = sh
			good = append(good, c)
			continue
		}
		f.Close()
		c.f = nil
		if i == len(cands)-1 && (allZero(h[:n]) || recycledOnly) {
			// Created, or renamed from the spare, but its header never
			// written: a crash while rotating. Nothing in it was ever
			// acknowledged: records are written after the header is synced.
			l.log.Info("wal: removing a segment whose creation did not complete", "file", l.path(c.name), "bytes", c.size)
			if err := l.fs.Remove(l.path(c.name)); err != nil {
				return fmt.Errorf("wal: remove incomplete segment %s: %w", l.path(c.name), err)
			}
		} else {
			l.setAside(c.name, &CorruptionError{Segment: c.name, Offset: 0, Reason: "bad segment header: " + reason})
		}
		if err := l.fs.SyncDir(l.dir); err != nil {
			return fmt.Errorf("wal: sync directory %s: %w", l.dir, err)
		}
	}

	// A segment's records end below the first position of every later
	// segment: what lies beyond was superseded after a failed write.
	limits := make([]Position, len(good))
	limit := Position(math.MaxUint64)
	for i := len(good) - 1; i >= 0; i-- {
		limits[i] = limit
		limit = min(limit, good[i].hdr.first-1)
	}
	var sc scanner
	sc.maxRec = l.opts.MaxRecordSize
	var prev *segment
	for i, c := range good {
		limit := limits[i]
		seg := &segment{seq: c.seq, first: c.hdr.first, prevLast: c.hdr.prevLast, name: c.name}
		sc.reset(c.f, c.size)
		res := l.scanSegment(&sc, seg, limit)
		isLast := i == len(good)-1
		// What follows the last record of the newest segment is cut. Zeros,
		// or records of a recycled file's earlier use, are space never
		// written (a run that did not close, or a seal whose cut failed):
		// they end an older segment cleanly too when nothing the next
		// segment expects is missing. Anything else there is damage.
		unwritten := res.zeroTail && (isLast || max(seg.last, seg.first-1) >= good[i+1].hdr.prevLast)
		switch {
		case res.tail < 0:
		case unwritten || isLast:
			if unwritten {
				l.log.Info("wal: cutting the unwritten preallocated end of a segment", "file", l.path(c.name), "offset", res.tail, "bytes", c.size-seg.size, "found", res.tailReason)
			} else {
				l.log.Warn("wal: cutting a torn tail", "file", l.path(c.name), "offset", res.tail, "bytes", c.size-seg.size, "reason", res.tailReason)
			}
			if err := c.f.Truncate(seg.size); err != nil {
				return fmt.Errorf("wal: cut the end of %s at offset %d: %w", l.path(c.name), seg.size, err)
			}
		default:
			l.corrupt(seg, &CorruptionError{Segment: c.name, Offset: res.tail, Reason: res.tailReason + "; nothing readable follows in this segment"})
		}
		if isLast || unwritten {
			// The newest segment's tail may be in the page cache only
			// (SyncInterval, SyncNone): make it durable before building on
			// it, or a power loss could leave a hole below records synced
			// later. An older segment's cut is made durable too.
			if err := c.f.Sync(); err != nil {
				return fmt.Errorf("wal: sync %s: %w", l.path(c.name), err)
			}
		}
		if res.stale > 0 {
			l.log.Info("wal: ignoring records superseded by a later segment (left by a failed write)", "file", l.path(c.name), "offset", seg.size, "bytes", res.stale)
		}
		if prev != nil {
			prevEnd := max(prev.last, prev.first-1)
			if prevEnd < seg.prevLast {
				l.gap(prevEnd+1, seg.prevLast)
			}
		}
		prev = seg
		l.segs = append(l.segs, seg)
	}
	l.nsegs.Store(int64(len(l.segs)))
	if err := l.fs.SyncDir(l.dir); err != nil {
		return fmt.Errorf("wal: sync directory %s: %w", l.dir, err)
	}
	if n := len(l.segs); n > 0 {
		s := l.segs[n-1]
		l.nextPos = max(s.last, s.first-1) + 1
	} else {
		l.nextPos = 1
	}
	l.visible.Store(uint64(l.nextPos - 1))
	l.synced.Store(uint64(l.nextPos - 1))
	l.written = l.nextPos - 1
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

type scanResult struct {
	tail       int64 // offset of damage with nothing readable after it; -1 when none
	tailReason string
	zeroTail   bool  // from tail on: zeros or a recycled file's old records, never written by this segment
	stale      int64 // bytes of records superseded by the next segment
}

// scanSegment reads every record of a segment, recording the readable
// extent, the index and the damaged spans. Records at positions above limit
// belong to the next segment and end the scan.
func (l *Log) scanSegment(sc *scanner, seg *segment, limit Position) scanResult {
	res := scanResult{tail: -1}
	seg.last, seg.size = seg.first-1, segmentHeaderSize
	expect := seg.first
	off := int64(segmentHeaderSize)
	for off < sc.size {
		if expect > limit {
			res.stale = sc.size - off
			return res
		}
		_, pos, n, bad := sc.decode(off)
		if bad == recordOK && pos >= expect && pos <= limit {
			if pos > expect {
				l.gap(expect, pos-1)
			}
			seg.addRecords(pos, 1, off, off+n)
			expect = pos + 1
			off += n
			continue
		}
		if bad == recordOK && pos > limit {
			res.stale = sc.size - off
			return res
		}
		if bad == recordOK && pos < seg.first {
			// A record of the file's earlier use: a recycled segment is
			// overwritten from its start, so nothing of this one follows.
			res.tail, res.tailReason, res.zeroTail = off, fmt.Sprintf("a record at position %d, left from the file's use before it was recycled", pos), true
			return res
		}
		if bad != recordOK && bad != recordReadError && sc.zeroFrom(off) {
			res.tail, res.tailReason, res.zeroTail = off, "zero bytes to the end of the file", true
			return res
		}
		reason := sc.describe(bad, pos, n, off)
		if bad == recordOK {
			reason = fmt.Sprintf("record at position %d where %d was expected", pos, expect)
		}
		// Every record takes at least a header, which bounds the positions
		// that can follow in the bytes left.
		hi := min(limit, expect+Position((sc.size-off)/recordHeaderSize))
		o, ok := sc.resync(off, expect, hi)
		if !ok {
			res.tail, res.tailReason = off, reason
			return res
		}
		seg.skips = append(seg.skips, span{off, o})
		l.corrupt(seg, &CorruptionError{Segment: seg.name, Offset: off, Reason: fmt.Sprintf("%s; %d bytes set aside, reading resumes at offset %d", reason, o-off, o)})
		off = o
	}
	return res
}

func (l *Log) corrupt(seg *segment, e *CorruptionError) {
	seg.damaged = true
	l.corruptions.Add(1)
	l.addProblem(e)
	l.log.Error("wal: damaged segment; the damaged records are skipped and the file is kept as evidence", "file", l.path(e.Segment), "offset", e.Offset, "reason", e.Reason)
}

func (l *Log) gap(from, to Position) {
	e := &GapError{From: from, To: to}
	l.gaps.Add(1)
	l.addProblem(e)
	l.log.Error("wal: records are missing", "from", from, "to", to, "records", to-from+1)
}

// setAside renames a file that cannot be read as a segment to *.broken.
func (l *Log) setAside(name string, e *CorruptionError) {
	l.corruptions.Add(1)
	l.addProblem(e)
	to := l.path(name + brokenSuffix)
	err := l.fs.Rename(l.path(name), to)
	l.log.Error("wal: setting aside a file that is not a readable segment", "file", l.path(name), "to", to, "reason", e.Reason, "rename_err", err)
}

// maxProblems bounds the list Problems returns; the counters in Stats go on.
const maxProblems = 1000

// addProblem records e for Problems. The caller holds l.mu, or is Open.
func (l *Log) addProblem(e error) {
	if len(l.problems) < maxProblems {
		l.problems = append(l.problems, e)
	}
}

// Problems returns the damage (*CorruptionError) and missing ranges
// (*GapError) found since Open, oldest first, at most the first 1000.
func (l *Log) Problems() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.problems)
}

// LastPosition returns the highest position readers may see. Under
// SyncAlways only fsynced records are visible.
func (l *Log) LastPosition() Position { return Position(l.visible.Load()) }

// FirstPosition returns the lowest position still on disk, 0 when the log holds no record.
func (l *Log) FirstPosition() Position {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		if s.records > 0 {
			return s.firstRec
		}
	}
	return 0
}

// Wait blocks until LastPosition() > after, ctx is done, or the log is closed.
func (l *Log) Wait(ctx context.Context, after Position) error {
	for {
		if l.LastPosition() > after {
			return nil
		}
		l.mu.Lock()
		if l.LastPosition() > after {
			l.mu.Unlock()
			return nil
		}
		if l.closed {
			l.mu.Unlock()
			return ErrClosed
		}
		if l.notify == nil {
			l.notify = make(chan struct{})
		}
		ch := l.notify
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// publishLocked makes positions up to last visible. l.mu is held.
func (l *Log) publishLocked(last Position) {
	l.visible.Store(uint64(last))
	if l.notify != nil {
		close(l.notify)
		l.notify = nil
	}
}

// AdvanceTo makes the next append get position pos+1 when the log is
// behind pos, as after a power loss under SyncNone when a downstream
// checkpoint is ahead of what survived. It seals the active segment and
// durably starts a new one at pos+1; positions up to pos read as absent.
func (l *Log) AdvanceTo(pos Position) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if l.nextPos > pos {
		l.mu.Unlock()
		return nil
	}
	// With wmu held nothing is being written: all of nextPos-1 is visible.
	prevLast := l.nextPos - 1
	l.mu.Unlock()
	l.seal()
	if err := l.create(pos+1, prevLast); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.pending; p.n > 0 {
		p.first = pos + 1
		renumber(p.buf, p.first)
	}
	l.nextPos = pos + 1 + Position(l.pending.n)
	l.publishLocked(pos)
	return nil
}

// RemoveBefore deletes the sealed segments whose records all lie below
// pos; never the newest segment. A damaged segment is renamed to *.broken
// instead, as evidence. A failed deletion is logged, returned and retried
// on the next call.
func (l *Log) RemoveBefore(pos Position) (removed int, err error) {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	l.mu.Lock()
	todo := l.doomed
	l.doomed = nil
	for len(l.segs) > 1 && l.segs[0].last < pos && l.segs[0] != l.activeSeg {
		s := l.segs[0]
		todo = append(todo, doomed{s.name, s.damaged, s.size})
		l.segs = l.segs[1:]
	}
	l.nsegs.Store(int64(len(l.segs)))
	l.mu.Unlock()
	if len(todo) == 0 {
		return 0, nil
	}
	var failed []doomed
	var errs []error
	for _, d := range todo {
		var err error
		switch {
		case d.damaged:
			err = l.fs.Rename(l.path(d.name), l.path(d.name+brokenSuffix))
		case l.recycle(d):
		default:
			err = l.fs.Remove(l.path(d.name))
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			l.log.Warn("wal: cannot remove a segment; will retry", "file", l.path(d.name), "err", err)
			failed = append(failed, d)
			errs = append(errs, fmt.Errorf("wal: remove segment %s (retried on the next call): %w", l.path(d.name), err))
			continue
		}
		removed++
	}
	if removed > 0 {
		if err := l.fs.SyncDir(l.dir); err != nil {
			errs = append(errs, fmt.Errorf("wal: sync directory %s after removing segments: %w", l.dir, err))
		}
	}
	l.mu.Lock()
	l.doomed = append(l.doomed, failed...)
	l.mu.Unlock()
	return removed, errors.Join(errs...)
}

// Behind returns how many records, and about how many bytes of segment
// files, lie at positions above pos. Bytes are exact at segment
// boundaries and every 1024 records, interpolated in between.
func (l *Log) Behind(pos Position) (records uint64, bytes int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		if s.records == 0 || s.last <= pos {
			continue
		}
		if s.firstRec > pos {
			records += uint64(s.records)
			bytes += s.size - segmentHeaderSize
			continue
		}
		records += min(uint64(s.last-pos), uint64(s.records))
		bytes += s.size - s.offsetOf(pos+1)
	}
	return records, bytes
}

// SkipTo is for a consumer at pos that may keep at most maxBytes of segment
// files behind it: it returns the position to move to so that it does,
// skipping the oldest whole segments (pos itself when it is within budget).
// The active segment is never skipped, whatever its size.
func (l *Log) SkipTo(pos Position, maxBytes int64) Position {
	l.mu.Lock()
	defer l.mu.Unlock()
	var kept int64
	for i := len(l.segs) - 1; i >= 0; i-- {
		s := l.segs[i]
		if s.records == 0 || s.last <= pos {
			continue
		}
		n := s.size - segmentHeaderSize
		if s.firstRec <= pos {
			n = s.size - s.offsetOf(pos+1)
		}
		if kept+n > maxBytes && s != l.activeSeg {
			return max(pos, s.last)
		}
		kept += n
	}
	return pos
}

// Stats returns the log's figures.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	st := Stats{Segments: len(l.segs), LastPosition: l.LastPosition()}
	for _, s := range l.segs {
		st.TotalBytes += s.size
		if st.FirstPosition == 0 && s.records > 0 {
			st.FirstPosition = s.firstRec
		}
	}
	if n := len(l.segs); n > 0 {
		st.ActiveSegmentSeq = l.segs[n-1].seq
	}
	if s := l.activeSeg; s != nil {
		st.ActiveSegmentSize = s.size
		st.ActiveSegmentRecords = s.records
	}
	l.mu.Unlock()
	st.Fsyncs = uint64(l.fsyncs.Load())
	st.FsyncTotal = time.Duration(l.fsyncNanos.Load())
	st.LastFsync = time.Duration(l.lastFsync.Load())
	st.MaxFsync = time.Duration(l.maxFsync.Load())
	st.Corruptions = l.corruptions.Load()
	st.Gaps = l.gaps.Load()
	st.WriteErrors = l.writeErrors.Load()
	st.Preallocated = l.preallocs.Load()
	st.Recycled = l.recycled.Load()
	st.PreallocFailures = l.preFailures.Load()
	return st
}

// Close writes what is queued, syncs and seals the active segment and
// releases the lock. Appends and Waits in progress return ErrClosed or
// their result.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.isClosed.Store(true)
	if l.notify != nil {
		close(l.notify)
		l.notify = nil
	}
	// Nothing is queued from now on; let the writer finish what is.
	for l.flushing {
		l.idle.Wait()
	}
	l.mu.Unlock()
	close(l.quit)
	<-l.done
	if l.preDone != nil {
		<-l.preDone
	}
	l.wmu.Lock()
	err := l.seal()
	l.wmu.Unlock()
	l.dropSpare()
	if cerr := l.lock.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("wal: release the lock on %s: %w", l.dir, cerr)
	}
	return err
}
