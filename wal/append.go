package wal

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
)

// batch is the unit of group commit: the records queued while the previous
// batch was being written, framed in one buffer, written with one write and
// made durable with one fsync.
type batch struct {
	buf   []byte
	first Position // may change until written: see renumber
	n     int
	calls int           // appenders waiting on it
	done  chan struct{} // made by the first appender who waits; closed once written (and synced under SyncAlways) or failed
	err   error
}

// maxSpare bounds the buffer kept for reuse between batches.
const maxSpare = 4 << 20

// Append appends one record and returns its position once the record is
// durable under the sync policy. rec is copied before Append returns.
func (l *Log) Append(rec []byte) (Position, error) {
	return l.AppendBatch([][]byte{rec})
}

// AppendBatch appends records at the contiguous positions last-len(recs)+1
// .. last, all or none. With no records it returns 0 and no error.
func (l *Log) AppendBatch(recs [][]byte) (last Position, err error) {
	if len(recs) == 0 {
		return 0, nil
	}
	for i, r := range recs {
		if len(r) > l.opts.MaxRecordSize {
			return 0, fmt.Errorf("wal: record %d of the batch is %d bytes, over the maximum record size of %d: split it or raise MaxRecordSize", i, len(r), l.opts.MaxRecordSize)
		}
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	b := l.pending
	if b.n == 0 {
		b.first = l.nextPos
	}
	idx := b.n
	for _, r := range recs {
		b.buf = appendRecord(b.buf, l.nextPos, r)
		l.nextPos++
	}
	b.n += len(recs)
	b.calls++
	// Whoever finds no writer at work writes the batch itself, saving a
	// goroutine switch when appends come one at a time; under load the
	// flusher goroutine takes over and appenders only queue and wait.
	lead := !l.flushing
	if lead {
		l.flushing = true
	} else if b.done == nil {
		b.done = make(chan struct{})
	}
	l.mu.Unlock()
	if lead {
		l.flushOne()
		l.mu.Lock()
		if l.pending.n > 0 {
			select {
			case l.kick <- struct{}{}:
			default:
			}
		} else {
			l.releaseRoleLocked()
		}
		l.mu.Unlock()
	} else {
		<-b.done
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.first + Position(idx+len(recs)-1), nil
}

// releaseRoleLocked ends a writer's turn. Invariant: while records are
// pending, some goroutine holds the writer role (l.flushing). l.mu is held.
func (l *Log) releaseRoleLocked() {
	l.flushing = false
	l.idle.Broadcast()
}

// run is the flusher: it writes the batches queued while others were being
// written, syncs under SyncInterval and rotates old segments while idle.
func (l *Log) run() {
	defer close(l.done)
	var syncTick, ageTick <-chan time.Time
	if l.opts.Sync == SyncInterval {
		t := time.NewTicker(l.opts.SyncInterval)
		defer t.Stop()
		syncTick = t.C
	}
	if l.opts.MaxSegmentAge > 0 {
		t := time.NewTicker(max(l.opts.MaxSegmentAge/8, time.Millisecond))
		defer t.Stop()
		ageTick = t.C
	}
	for {
		select {
		case <-l.kick:
			for {
				l.gather(l.flushOne())
				l.mu.Lock()
				if l.pending.n == 0 {
					l.releaseRoleLocked()
					l.mu.Unlock()
					break
				}
				l.mu.Unlock()
			}
		case <-syncTick:
			l.syncIdle()
		case <-ageTick:
			l.rotateIfOld()
		case <-l.quit:
			return
		}
	}
}

// gather lets the appenders just released by a write come back before the
// next batch is taken, so that under steady concurrent load one fsync
// covers every writer (want: those released plus those already queued)
// instead of two alternating groups. It yields the processor to them for
// at most half the last fsync.
func (l *Log) gather(want int) {
	if want < 2 || l.opts.Sync != SyncAlways {
		return
	}
	limit := time.Duration(l.lastFsync.Load()) / 2
	start := time.Now()
	last := -1
	for {
		l.mu.Lock()
		n := l.pending.calls
		l.mu.Unlock()
		if n >= want || n == last || time.Since(start) >= limit {
			return
		}
		last = n
		runtime.Gosched()
	}
}

// flushOne writes the pending batch and returns how many appenders it
// released plus how many were queued behind it then. Only the holder of
// the writer role calls it.
func (l *Log) flushOne() int {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	b := l.pending
	if b.n == 0 {
		l.mu.Unlock()
		return 0
	}
	l.pending = &batch{buf: l.spare}
	l.spare = nil
	l.mu.Unlock()

	off := int64(0)
	err := l.write(b, &off)

	l.mu.Lock()
	if err == nil {
		last := b.first + Position(b.n) - 1
		l.activeSeg.addRecords(b.first, b.n, off, off+int64(len(b.buf)))
		l.publishLocked(last)
	} else {
		b.err = err
		l.writeErrors.Add(1)
		// The failed batch's positions go to the records queued behind it,
		// so that no position is handed out for a record that is not there.
		if p := l.pending; p.n > 0 {
			p.first = b.first
			renumber(p.buf, p.first)
		}
		l.nextPos = b.first + Position(l.pending.n)
	}
	if cap(b.buf) <= maxSpare {
		l.spare = b.buf[:0]
	}
	if b.done != nil {
		close(b.done)
	}
	waiting := l.pending.calls
	l.mu.Unlock()
	return b.calls + waiting
}

// write puts b in the active segment, rotating first when needed, and
// syncs under SyncAlways. On failure the segment is abandoned: the next
// batch goes to a fresh segment. off receives the batch's offset.
func (l *Log) write(b *batch, off *int64) error {
	now := time.Now()
	if l.active != nil {
		s := l.activeSeg
		full := s.records > 0 && s.size+int64(len(b.buf)) > l.opts.MaxSegmentSize
		old := l.opts.MaxSegmentAge > 0 && s.records > 0 && now.Sub(l.activeBorn) >= l.opts.MaxSegmentAge
		if full || old || b.first != max(s.last, s.first-1)+1 {
			l.seal()
		}
	}
	if l.active == nil {
		if err := l.create(b.first, b.first-1); err != nil {
			return err
		}
	}
	s := l.activeSeg
	*off = s.size
	n, err := l.active.Write(b.buf)
	if err == nil && n != len(b.buf) {
		err = fmt.Errorf("short write of %d of %d bytes", n, len(b.buf))
	}
	if err != nil {
		l.abandon()
		return fmt.Errorf("wal: write %d records (%d bytes) to %s: %w", b.n, len(b.buf), l.path(s.name), err)
	}
	l.dirty = true
	l.written = b.first + Position(b.n) - 1
	if l.opts.Sync == SyncAlways {
		if err := l.fsync(); err != nil {
			l.abandon()
			return fmt.Errorf("wal: fsync %s after writing %d records: %w", l.path(s.name), b.n, err)
		}
	}
	l.wantSpare(s.size + int64(len(b.buf)))
	return nil
}

// create starts a new active segment at first and makes it durable,
// header and directory entry, before anything is written into it.
func (l *Log) create(first, prevLast Position) error {
	seq := l.nextSeq
	l.nextSeq++ // never reuse a name, even after a failure
	name := segmentName(seq, first)
	path := l.path(name)
	f, pre, err := l.openNew(path)
	if err != nil {
		l.writeErrors.Add(1)
		return fmt.Errorf("wal: create segment %s: %w", path, err)
	}
	hdr := encodeSegmentHeader(segmentHeader{seq: seq, first: first, prevLast: prevLast})
	if _, err = f.Write(hdr); err == nil {
		if err = l.timedSync(f); err == nil {
			err = l.fs.SyncDir(l.dir)
		}
	}
	if err != nil {
		l.writeErrors.Add(1)
		f.Close()
		if rerr := l.fs.Remove(path); rerr == nil {
			l.fs.SyncDir(l.dir)
		}
		return fmt.Errorf("wal: create segment %s: %w", path, err)
	}
	s := &segment{seq: seq, first: first, prevLast: prevLast, name: name, last: first - 1, size: segmentHeaderSize}
	l.mu.Lock()
	l.segs = append(l.segs, s)
	l.nsegs.Store(int64(len(l.segs)))
	l.activeSeg = s
	l.mu.Unlock()
	l.active, l.activeBorn, l.dirty, l.activePre = f, time.Now(), false, pre
	if pre {
		l.preallocs.Add(1)
	}
	return nil
}

// wantSpare is called after each write: once the active segment is half
// full and no spare is ready (none was recycled by RemoveBefore, which is
// cheaper), a zero-filled one is prepared for the next rotation. Not while
// sealed segments wait for their reader, though: when the reader catches
// up their removal recycles them, and when it lags (ingest outruns DuckDB)
// writing every segment twice costs the CPU and disk it lacks (7% of the
// agent's CPU, and the zero-filling held off recycling meanwhile).
func (l *Log) wantSpare(activeSize int64) {
	if !l.opts.Preallocate || l.spareReady.Load() || activeSize < l.opts.MaxSegmentSize/2 {
		return
	}
	behind := int64(maxSealedForZeroFill)
	if l.opts.zeroFillBehind > 0 {
		behind = int64(l.opts.zeroFillBehind)
	}
	if l.nsegs.Load() > behind+1 {
		return
	}
	if l.opts.preallocInline {
		l.prepareSpare(nil)
		return
	}
	l.kickPrealloc()
}

// openNew opens the file for a new segment at path: the spare, renamed,
// when one is ready (pre is then true: the file is longer than what is
// written into it), else a new empty file.
func (l *Log) openNew(path string) (f File, pre bool, err error) {
	// TryLock: while the preallocator holds it, the spare is not ready anyway.
	if l.spareReady.Load() && l.spareMu.TryLock() {
		f, pre = l.takeSpare(path)
		l.spareMu.Unlock()
		if pre {
			return f, true, nil
		}
	}
	f, err = l.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	return f, false, err
}

// takeSpare renames the spare to path and opens it. l.spareMu is held.
func (l *Log) takeSpare(path string) (File, bool) {
	if !l.spareReady.Swap(false) {
		return nil, false
	}
	spare := l.path(preallocName)
	if err := l.fs.Rename(spare, path); err != nil {
		l.log.Warn("wal: cannot use the preallocated spare segment; creating one without", "file", spare, "err", err)
		return nil, false
	}
	f, err := l.fs.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		l.fs.Remove(path)
		l.log.Warn("wal: cannot open the preallocated spare segment; creating one without", "file", path, "err", err)
		return nil, false
	}
	return f, true
}

// recycle makes the removed segment name the spare, when none is ready and
// the preallocator is not at work: its blocks are allocated and written,
// which is all an append needs, and no zeros are written. The stale
// records in it carry positions below any the log will write there, which
// is how recovery tells them from new ones. Reports whether it did.
func (l *Log) recycle(d doomed) bool {
	// A segment sealed early (by age) is not worth keeping.
	if !l.opts.Preallocate || d.size < l.opts.MaxSegmentSize/2 || l.spareReady.Load() || !l.spareMu.TryLock() {
		return false
	}
	defer l.spareMu.Unlock()
	if l.spareReady.Load() {
		return false
	}
	if err := l.fs.Rename(l.path(d.name), l.path(preallocName)); err != nil {
		return false
	}
	l.recycled.Add(1)
	l.spareReady.Store(true)
	return true
}

// maxSealedForZeroFill is the most sealed segments there may be for
// wantSpare to zero-fill a spare.
const maxSealedForZeroFill = 1

func (l *Log) kickPrealloc() {
	select {
	case l.preKick <- struct{}{}:
	default:
	}
}

// preallocator zero-fills a spare segment when asked (see wantSpare).
func (l *Log) preallocator() {
	defer close(l.preDone)
	for {
		select {
		case <-l.preKick:
			if !l.spareReady.Load() {
				l.prepareSpare(l.quit)
			}
		case <-l.quit:
			return
		}
	}
}

// prepareSpare writes a zero-filled, synced file of MaxSegmentSize bytes
// under preallocName. It gives up when stop is closed. A failure (a full
// disk, most often) is logged once per run of failures; segments are then
// created empty and appended to, as without preallocation.
func (l *Log) prepareSpare(stop <-chan struct{}) {
	l.spareMu.Lock()
	defer l.spareMu.Unlock()
	if l.spareReady.Load() {
		return // recycled meanwhile
	}
	path := l.path(preallocName)
	err := func() error {
		f, err := l.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		zeros := make([]byte, min(l.opts.MaxSegmentSize, 1<<20))
		for left := l.opts.MaxSegmentSize; left > 0 && err == nil; left -= int64(len(zeros)) {
			select {
			case <-stop:
				err = ErrClosed
			default:
				_, err = f.Write(zeros[:min(left, int64(len(zeros)))])
			}
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}()
	if err != nil {
		l.fs.Remove(path)
		if err == ErrClosed {
			return
		}
		l.preFailures.Add(1)
		if !l.preFailing {
			l.log.Warn("wal: cannot preallocate the next segment; segments are created without until it works again", "file", path, "bytes", l.opts.MaxSegmentSize, "err", err)
		}
		l.preFailing = true
		return
	}
	if l.preFailing {
		l.log.Info("wal: preallocating segments again", "file", path)
		l.preFailing = false
	}
	l.spareReady.Store(true)
}

// dropSpare removes the spare at Close: the next Open makes its own.
func (l *Log) dropSpare() {
	if l.opts.Preallocate {
		l.spareReady.Store(false)
		if err := l.fs.Remove(l.path(preallocName)); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.log.Warn("wal: cannot remove the preallocated spare segment", "file", l.path(preallocName), "err", err)
		}
	}
}

// seal syncs and closes the active segment. A failed fsync here concerns
// records already acknowledged under SyncInterval or SyncNone: it is
// logged and counted, and returned to Close.
func (l *Log) seal() error {
	if l.active == nil {
		return nil
	}
	var err error
	if l.activePre {
		// Cut the unwritten zeros, so that a sealed segment ends at its
		// last record; recovery copes if this fails (see recover).
		if terr := l.active.Truncate(l.activeSeg.size); terr != nil {
			l.log.Warn("wal: cannot cut the preallocated end of a sealed segment", "file", l.path(l.activeSeg.name), "err", terr)
		} else {
			l.dirty = true
		}
		l.activePre = false
	}
	if l.dirty {
		if err = l.fsync(); err != nil {
			l.writeErrors.Add(1)
			l.log.Error("wal: fsync failed while sealing a segment; records acknowledged since the last fsync may be lost on power failure", "file", l.path(l.activeSeg.name), "err", err)
			err = fmt.Errorf("wal: fsync %s while sealing it: %w", l.path(l.activeSeg.name), err)
		}
	}
	if cerr := l.active.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("wal: close %s: %w", l.path(l.activeSeg.name), cerr)
	}
	l.active = nil
	l.mu.Lock()
	l.activeSeg = nil
	l.mu.Unlock()
	return err
}

// abandon gives up the active segment after a failed write or fsync. The
// unacknowledged bytes are cut off when the file system still lets us;
// when it does not, recovery ignores them because the next segment starts
// at their positions.
func (l *Log) abandon() {
	s := l.activeSeg
	if err := l.active.Truncate(s.size); err == nil {
		l.active.Sync()
	}
	l.active.Close()
	l.active, l.dirty, l.activePre = nil, false, false
	l.mu.Lock()
	l.activeSeg = nil
	l.mu.Unlock()
}

func (l *Log) fsync() error {
	if err := l.timedSync(l.active); err != nil {
		return err
	}
	l.dirty = false
	if uint64(l.written) > l.synced.Load() {
		l.synced.Store(uint64(l.written))
	}
	return nil
}

func (l *Log) timedSync(f File) error {
	start := time.Now()
	err := f.Sync()
	d := time.Since(start)
	l.fsyncs.Add(1)
	l.fsyncNanos.Add(int64(d))
	l.lastFsync.Store(int64(d))
	for {
		m := l.maxFsync.Load()
		if int64(d) <= m || l.maxFsync.CompareAndSwap(m, int64(d)) {
			break
		}
	}
	if d > l.opts.SlowSync {
		l.log.Warn("wal: slow fsync", "duration", d, "threshold", l.opts.SlowSync)
	}
	return err
}

// syncIdle is the SyncInterval tick. A failed fsync seals the segment so
// that writing continues in a fresh one.
func (l *Log) syncIdle() {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.active == nil || !l.dirty {
		return
	}
	if err := l.fsync(); err != nil {
		l.writeErrors.Add(1)
		l.log.Error("wal: background fsync failed; records acknowledged since the last fsync may be lost on power failure; continuing in a new segment", "file", l.path(l.activeSeg.name), "err", err)
		l.dirty = false
		l.seal()
	}
}

func (l *Log) rotateIfOld() {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.active != nil && l.activeSeg.records > 0 && time.Since(l.activeBorn) >= l.opts.MaxSegmentAge {
		l.seal()
	}
}
