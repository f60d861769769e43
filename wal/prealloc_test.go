package wal

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func appendBatches(t testing.TB, l *Log, batches, size int) {
	t.Helper()
	for b := 0; b < batches; b++ {
		recs := make([][]byte, size)
		first := l.LastPosition() + 1
		for i := range recs {
			recs[i] = rec(first + Position(i))
		}
		if last, err := l.AppendBatch(recs); err != nil || last != first+Position(size)-1 {
			t.Fatalf("AppendBatch = %d, %v; want %d", last, err, first+Position(size)-1)
		}
	}
}

func waitSpare(t testing.TB, l *Log) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !l.spareReady.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("no spare segment after 10s: %+v", l.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestPreallocate: segments start in a zero-filled spare, sealed segments
// are cut to their records, a crash leaves zeros that recovery cuts without
// calling them damage, and Close removes the spare.
func TestPreallocate(t *testing.T) {
	dir := t.TempDir()
	if !preallocHelps(dir) {
		t.Skipf("%s is on a memory file system, where preallocation is off", dir)
	}
	const segSize = 64 << 10
	opts := Options{Preallocate: true, MaxSegmentSize: segSize, MaxSegmentAge: -1, zeroFillBehind: 1 << 20}
	l := openT(t, dir, opts)
	// Batches of about 16 KiB; past half a segment, a spare is made.
	for i := 0; i < 40 && l.Stats().Preallocated < 4; i++ {
		appendBatches(t, l, 1, 500)
		if l.Stats().ActiveSegmentSize >= segSize/2 {
			waitSpare(t, l)
		}
	}
	st := l.Stats()
	if st.Preallocated < 4 || st.PreallocFailures != 0 {
		t.Fatalf("Preallocated = %d, PreallocFailures = %d; want >= 4 and 0", st.Preallocated, st.PreallocFailures)
	}
	l.mu.Lock()
	for _, s := range l.segs {
		size := fileSize(t, filepath.Join(dir, s.name))
		if s == l.activeSeg {
			if size != segSize {
				t.Errorf("active segment %s is %d bytes on disk, want the preallocated %d", s.name, size, segSize)
			}
		} else if size != s.size {
			t.Errorf("sealed segment %s is %d bytes on disk, want %d (its records)", s.name, size, s.size)
		}
	}
	l.mu.Unlock()
	last := l.LastPosition()

	// A crash: the files as they are, zeros after the active segment's records.
	crashed := t.TempDir()
	names, _ := os.ReadDir(dir)
	for _, e := range names {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(crashed, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A spare left by the crashed run may hold anything: it is replaced
	// by one zero-filled at open.
	if err := os.WriteFile(filepath.Join(crashed, preallocName), []byte("not zeros"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := openT(t, crashed, opts)
	waitSpare(t, c)
	if b, err := os.ReadFile(filepath.Join(crashed, preallocName)); err != nil || len(b) != segSize || !allZero(b) {
		t.Fatalf("the spare after open: %d bytes, all zero %v, err %v; want %d zero bytes", len(b), allZero(b), err, segSize)
	}
	if got := positions(t, readAll(t, c, 0)); len(got) != int(last) || got[len(got)-1] != last {
		t.Fatalf("after a crash: read %d records ending at %v, want 1..%d", len(got), got[len(got)-1:], last)
	}
	if p := c.Problems(); len(p) != 0 {
		t.Fatalf("preallocated zeros reported as damage: %v", p)
	}
	c.Close()

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, preallocName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left the spare behind: %v", err)
	}
	for _, name := range segFiles(t, dir) {
		if b, _ := os.ReadFile(filepath.Join(dir, name)); bytes.HasSuffix(b, make([]byte, recordHeaderSize)) {
			t.Errorf("%s ends in zeros after Close", name)
		}
	}
	r := openT(t, dir, opts)
	defer r.Close()
	if got := positions(t, readAll(t, r, 0)); len(got) != int(last) {
		t.Fatalf("after Close and Open: %d records, want %d", len(got), last)
	}
}

// TestPreallocateFailure: a spare that cannot be written (a full disk) is
// counted and logged once, segments are then created the plain way, and
// preallocation resumes when the disk has room again.
func TestPreallocateFailure(t *testing.T) {
	fs := newMemFS()
	full := true
	fs.fault = func(op, name string) error {
		if full && op == "write" && strings.HasSuffix(name, preallocName) {
			return syscall.ENOSPC
		}
		return nil
	}
	var logs syncBuffer
	l := openT(t, "/wal", Options{FS: fs, Preallocate: true, preallocInline: true, MaxSegmentSize: 4096, MaxSegmentAge: -1,
		zeroFillBehind: 1 << 20, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer l.Close()
	appendBatches(t, l, 6, 50) // several rotations
	st := l.Stats()
	if st.PreallocFailures < 2 || st.Preallocated != 0 {
		t.Fatalf("disk full: PreallocFailures = %d, Preallocated = %d; want >= 2 and 0", st.PreallocFailures, st.Preallocated)
	}
	if n := strings.Count(logs.String(), "cannot preallocate"); n != 1 {
		t.Fatalf("the failure was logged %d times, want once:\n%s", n, logs.String())
	}
	if _, err := fs.OpenFile("/wal/"+preallocName, os.O_RDONLY, 0); err == nil {
		t.Fatal("a failed spare was left behind")
	}
	full = false
	appendBatches(t, l, 6, 50)
	if st := l.Stats(); st.Preallocated == 0 {
		t.Fatalf("room again, but no segment was preallocated: %+v", st)
	}
	if !strings.Contains(logs.String(), "preallocating segments again") {
		t.Fatalf("recovery from the failure not logged:\n%s", logs.String())
	}
	if got := positions(t, readAll(t, l, 0)); len(got) != 600 {
		t.Fatalf("read %d records, want 600", len(got))
	}
}

// TestPreallocateSkippedOnTmpfs: fsync on tmpfs is free; a spare would only take memory.
func TestPreallocateSkippedOnTmpfs(t *testing.T) {
	if preallocHelps("/dev/shm") {
		t.Skip("/dev/shm is not a memory file system here")
	}
	dir, err := os.MkdirTemp("/dev/shm", "wal-test-")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(dir)
	l := openT(t, dir, Options{Preallocate: true, MaxSegmentSize: 4096})
	defer l.Close()
	appendBatches(t, l, 4, 100)
	if st := l.Stats(); st.Preallocated != 0 || l.opts.Preallocate {
		t.Fatalf("preallocation on tmpfs: %+v", st)
	}
}

// TestPreallocateRecycles: a segment RemoveBefore would delete becomes the
// spare instead, the next rotation writes over its old records, and after
// a crash those old records end the segment without being called damage.
func TestPreallocateRecycles(t *testing.T) {
	fs := newMemFS()
	const segSize = 4096
	opts := Options{FS: fs, Preallocate: true, preallocInline: true, MaxSegmentSize: segSize, MaxSegmentAge: -1}
	l := openT(t, "/wal", opts)
	// Stop right after a rotation, when no spare is ready.
	for l.Stats().Segments < 4 || l.spareReady.Load() {
		appendBatches(t, l, 1, 20)
	}
	removed, err := l.RemoveBefore(l.LastPosition())
	if err != nil || removed < 3 {
		t.Fatalf("RemoveBefore = %d, %v; want at least 3", removed, err)
	}
	if st := l.Stats(); st.Recycled != 1 || !l.spareReady.Load() {
		t.Fatalf("Recycled = %d, spare ready %v; want 1 and true", st.Recycled, l.spareReady.Load())
	}
	before := l.Stats()
	for l.Stats().ActiveSegmentSeq == before.ActiveSegmentSeq {
		appendBatches(t, l, 1, 5)
	}
	if st := l.Stats(); st.Preallocated != before.Preallocated+1 {
		t.Fatalf("the rotation did not use the recycled spare: %+v", st)
	}
	first, last := l.FirstPosition(), l.LastPosition()

	fs.processDied() // the old records after the new ones stay in the file
	c := openT(t, "/wal", opts)
	defer c.Close()
	got := positions(t, readAll(t, c, 0))
	if len(got) == 0 || got[0] != first || got[len(got)-1] != last || len(got) != int(last-first+1) {
		t.Fatalf("after a crash: read %d records %v..%v, want %d..%d", len(got), got[:1], got[len(got)-1:], first, last)
	}
	if p := c.Problems(); len(p) != 0 {
		t.Fatalf("a recycled segment's old records reported as damage: %v", p)
	}
}

// TestPreallocateNotWhileBehind: with sealed segments waiting for their
// reader, no spare is zero-filled (their removal will recycle them); once
// the reader has caught up, spares are made again.
func TestPreallocateNotWhileBehind(t *testing.T) {
	fs := newMemFS()
	l := openT(t, "/wal", Options{FS: fs, Preallocate: true, preallocInline: true, MaxSegmentSize: 4096, MaxSegmentAge: -1})
	defer l.Close()
	appendBatches(t, l, 8, 50) // several rotations, nothing removed
	behind := l.Stats()
	if behind.Segments < 4 {
		t.Fatalf("want a backlog of segments, have %+v", behind)
	}
	appendBatches(t, l, 4, 50)
	if st := l.Stats(); st.Preallocated != behind.Preallocated {
		t.Fatalf("%d more spares zero-filled while %d segments waited for their reader", st.Preallocated-behind.Preallocated, behind.Segments-1)
	}
	if behind.Preallocated > maxSealedForZeroFill+1 {
		t.Fatalf("Preallocated = %d with no reader; want at most %d", behind.Preallocated, maxSealedForZeroFill+1)
	}
	// The reader catches up: a removed segment is recycled, and once that
	// spare is used, a zero-filled one is made again (until the reader is
	// behind once more).
	before := l.Stats()
	if _, err := l.RemoveBefore(l.LastPosition() + 1); err != nil {
		t.Fatal(err)
	}
	appendBatches(t, l, 6, 50)
	st := l.Stats()
	if st.Recycled-before.Recycled != 1 || st.Preallocated-before.Preallocated < 2 {
		t.Fatalf("after the reader caught up: %d segments from spares (%d recycled), want >= 2 (1): %+v",
			st.Preallocated-before.Preallocated, st.Recycled-before.Recycled, st)
	}
}
