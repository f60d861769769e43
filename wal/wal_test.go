package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rec returns the deterministic payload of position p in the tests.
func rec(p Position) []byte {
	return fmt.Appendf(nil, "record-%06d|%s", p, strings.Repeat("x", int(p%7)))
}

func openT(t testing.TB, dir string, o Options) *Log {
	t.Helper()
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return l
}

func appendN(t testing.TB, l *Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		want := l.LastPosition() + 1
		got, err := l.Append(rec(want))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if got != want {
			t.Fatalf("Append returned position %d, want %d", got, want)
		}
	}
}

type readRec struct {
	pos Position
	rec string
}

// readAll reads everything visible from `from`.
func readAll(t testing.TB, l *Log, from Position) []readRec {
	t.Helper()
	r, err := l.NewReader(from)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer r.Close()
	var out []readRec
	for {
		b, p, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, readRec{p, string(b)})
	}
}

// positions returns the positions read, checking every payload.
func positions(t testing.TB, rs []readRec) []Position {
	t.Helper()
	var ps []Position
	for _, r := range rs {
		if r.rec != string(rec(r.pos)) {
			t.Fatalf("position %d holds %q, want %q", r.pos, r.rec, rec(r.pos))
		}
		ps = append(ps, r.pos)
	}
	return ps
}

func seq(from, to Position) []Position {
	var ps []Position
	for p := from; p <= to; p++ {
		ps = append(ps, p)
	}
	return ps
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if strings.HasSuffix(e.Name(), segmentSuffix) {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	for _, policy := range []SyncPolicy{SyncAlways, SyncInterval, SyncNone} {
		t.Run(string(policy), func(t *testing.T) {
			dir := filepath.Join(dir, string(policy))
			l := openT(t, dir, Options{Sync: policy, MaxSegmentSize: 1000})
			appendN(t, l, 100)
			last, err := l.AppendBatch([][]byte{rec(101), rec(102), rec(103)})
			if err != nil || last != 103 {
				t.Fatalf("AppendBatch = %d, %v; want 103, nil", last, err)
			}
			if got := positions(t, readAll(t, l, 0)); !slices.Equal(got, seq(1, 103)) {
				t.Fatalf("read %v", got)
			}
			if got := positions(t, readAll(t, l, 50)); !slices.Equal(got, seq(50, 103)) {
				t.Fatalf("read from 50: %v", got)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openT(t, dir, Options{Sync: policy, MaxSegmentSize: 1000})
			defer l.Close()
			if l.LastPosition() != 103 || l.FirstPosition() != 1 {
				t.Fatalf("after reopen: first %d last %d", l.FirstPosition(), l.LastPosition())
			}
			appendN(t, l, 10)
			if got := positions(t, readAll(t, l, 0)); !slices.Equal(got, seq(1, 113)) {
				t.Fatalf("after reopen read %v", got)
			}
			if st := l.Stats(); st.Corruptions != 0 || st.Gaps != 0 || st.WriteErrors != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestRotationBySize(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{MaxSegmentSize: 500})
	defer l.Close()
	appendN(t, l, 100)
	st := l.Stats()
	if st.Segments < 5 {
		t.Fatalf("%d segments after 100 records in 500-byte segments", st.Segments)
	}
	for _, name := range segFiles(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 500 {
			t.Errorf("%s is %d bytes, over MaxSegmentSize 500", name, fi.Size())
		}
	}
	if st.ActiveSegmentSeq != uint64(st.Segments-1) {
		t.Errorf("ActiveSegmentSeq %d with %d segments", st.ActiveSegmentSeq, st.Segments)
	}
	if got := positions(t, readAll(t, l, 0)); !slices.Equal(got, seq(1, 100)) {
		t.Fatalf("read %v", got)
	}
}

func TestRotationByAge(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{MaxSegmentAge: 40 * time.Millisecond})
	defer l.Close()
	appendN(t, l, 3)
	// Idle: the timer seals the segment; the next append starts a new one.
	deadline := time.Now().Add(5 * time.Second)
	for l.Stats().ActiveSegmentSize != 0 {
		if time.Now().After(deadline) {
			t.Fatal("an idle segment older than MaxSegmentAge was not sealed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	appendN(t, l, 1)
	if got := segFiles(t, dir); len(got) != 2 {
		t.Fatalf("segments %v, want 2", got)
	}
	// Busy: checked on append too.
	time.Sleep(50 * time.Millisecond)
	appendN(t, l, 1)
	if got := segFiles(t, dir); len(got) < 3 {
		t.Fatalf("segments %v, want at least 3", got)
	}
	if got := positions(t, readAll(t, l, 0)); !slices.Equal(got, seq(1, 5)) {
		t.Fatalf("read %v", got)
	}
}

func TestReaderTailsAcrossRotations(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncAlways, SyncNone} {
		t.Run(string(policy), func(t *testing.T) {
			l := openT(t, t.TempDir(), Options{Sync: policy, MaxSegmentSize: 400})
			defer l.Close()
			const n = 500
			var wg sync.WaitGroup
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < n/4; i++ {
						if _, err := l.Append([]byte("payload")); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			r, err := l.NewReader(1)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			want := Position(1)
			for want <= n {
				b, p, err := r.Next()
				if err == io.EOF {
					if err := l.Wait(ctx, want-1); err != nil {
						t.Fatalf("Wait(%d): %v", want-1, err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if p != want || string(b) != "payload" {
					t.Fatalf("read %d %q, want %d", p, b, want)
				}
				if p > l.LastPosition() {
					t.Fatalf("read position %d beyond LastPosition %d", p, l.LastPosition())
				}
				want++
			}
			wg.Wait()
			if l.Stats().Segments < 5 {
				t.Fatalf("only %d segments: the reader did not cross rotations", l.Stats().Segments)
			}
		})
	}
}

func TestRemoveBefore(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{MaxSegmentSize: 300})
	defer l.Close()
	appendN(t, l, 60)
	before := l.Stats()
	r, _ := l.NewReader(1) // a reader positioned in a segment about to go
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	removed, err := l.RemoveBefore(30)
	if err != nil || removed == 0 {
		t.Fatalf("RemoveBefore(30) = %d, %v", removed, err)
	}
	first := l.FirstPosition()
	if first > 30 || first < 2 {
		t.Fatalf("FirstPosition %d after RemoveBefore(30)", first)
	}
	if got := positions(t, readAll(t, l, 0)); !slices.Equal(got, seq(first, 60)) {
		t.Fatalf("read %v", got)
	}
	if st := l.Stats(); st.Segments != before.Segments-removed || st.TotalBytes >= before.TotalBytes {
		t.Fatalf("stats before %+v after %+v", before, st)
	}
	// The open reader goes on from where it was, then skips what is gone.
	_, p, err := r.Next()
	if err != nil || p != 2 {
		t.Fatalf("reader after removal: %d, %v", p, err)
	}
	r.Close()
	// Everything below the newest segment may go; the newest stays.
	if _, err := l.RemoveBefore(1000); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Segments != 1 || st.LastPosition != 60 {
		t.Fatalf("after RemoveBefore(1000): %+v", st)
	}
	if n, err := l.RemoveBefore(1000); n != 0 || err != nil {
		t.Fatalf("nothing left to remove: %d, %v", n, err)
	}
}

func TestRemoveBeforeRetriesFailedDeletes(t *testing.T) {
	fs := newMemFS()
	failing := true
	fs.fault = func(op, name string) error {
		if op == "remove" && failing {
			return syscall.EIO
		}
		return nil
	}
	var logs bytes.Buffer
	l := openT(t, "/wal", Options{FS: fs, MaxSegmentSize: 300, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer l.Close()
	appendN(t, l, 40)
	segs := l.Stats().Segments
	removed, err := l.RemoveBefore(20)
	if removed != 0 || !errors.Is(err, syscall.EIO) {
		t.Fatalf("RemoveBefore with failing deletes = %d, %v", removed, err)
	}
	if !strings.Contains(logs.String(), "cannot remove a segment; will retry") {
		t.Fatalf("failed delete not logged: %s", logs.String())
	}
	failing = false
	removed, err = l.RemoveBefore(20)
	if err != nil || removed == 0 {
		t.Fatalf("retry = %d, %v", removed, err)
	}
	names, _ := fs.ReadDir("/wal")
	if got := len(names) - 1; got != segs-removed { // LOCK aside
		t.Fatalf("%d files left, want %d: %v", got, segs-removed, names)
	}
}

func TestRemoveBeforeKeepsDamagedSegmentAsEvidence(t *testing.T) {
	dir := t.TempDir()
	writeThreeSegments(t, dir)
	editFile(t, filepath.Join(dir, cSegName(0)), func(b []byte) []byte { b[cOff(1, 5)+20] ^= 1; return b })
	l := openT(t, dir, Options{})
	defer l.Close()
	if n, err := l.RemoveBefore(21); n != 2 || err != nil {
		t.Fatalf("RemoveBefore(21) = %d, %v", n, err)
	}
	if got, want := dirFiles(t, dir), []string{cSegName(0) + brokenSuffix, cSegName(2)}; !slices.Equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
}

func TestAdvanceTo(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	appendN(t, l, 5)
	if err := l.AdvanceTo(3); err != nil { // behind: nothing to do
		t.Fatal(err)
	}
	if p, _ := l.Append([]byte("six")); p != 6 {
		t.Fatalf("after AdvanceTo(3): append got %d, want 6", p)
	}
	if err := l.AdvanceTo(100); err != nil {
		t.Fatal(err)
	}
	if l.LastPosition() != 100 {
		t.Fatalf("LastPosition %d after AdvanceTo(100)", l.LastPosition())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// The advance is durable: it survives a reopen before any append.
	l = openT(t, dir, Options{})
	defer l.Close()
	if l.LastPosition() != 100 || len(l.Problems()) != 0 {
		t.Fatalf("after reopen: LastPosition %d, problems %v", l.LastPosition(), l.Problems())
	}
	if p, err := l.Append([]byte("101")); p != 101 || err != nil {
		t.Fatalf("append after AdvanceTo(100) = %d, %v", p, err)
	}
	var got []Position
	for _, r := range readAll(t, l, 0) {
		got = append(got, r.pos)
	}
	if want := []Position{1, 2, 3, 4, 5, 6, 101}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	if recs, _ := l.Behind(6); recs != 1 {
		t.Fatalf("Behind(6) = %d records, want 1", recs)
	}
}

func TestBehindAndStats(t *testing.T) {
	l := openT(t, t.TempDir(), Options{MaxSegmentSize: 64 << 10})
	defer l.Close()
	rec := make([]byte, 84) // framed: 100 bytes
	batch := make([][]byte, 3000)
	for i := range batch {
		batch[i] = rec
	}
	if last, err := l.AppendBatch(batch); err != nil || last != 3000 {
		t.Fatalf("AppendBatch = %d, %v", last, err)
	}
	f := func(pos Position, wantRecs uint64, wantBytes int64) {
		t.Helper()
		recs, bytes := l.Behind(pos)
		if recs != wantRecs {
			t.Errorf("Behind(%d) = %d records, want %d", pos, recs, wantRecs)
		}
		// Exact at index points, interpolated between: within one record.
		if d := bytes - wantBytes; d < -100 || d > 100 {
			t.Errorf("Behind(%d) = %d bytes, want about %d", pos, bytes, wantBytes)
		}
	}
	f(0, 3000, 300000)
	f(1000, 2000, 200000)
	f(2999, 1, 100)
	f(3000, 0, 0)
	f(5000, 0, 0)
	st := l.Stats()
	if st.FirstPosition != 1 || st.LastPosition != 3000 || st.Segments != 1 ||
		st.ActiveSegmentRecords != 3000 || st.ActiveSegmentSize != segmentHeaderSize+300000 ||
		st.TotalBytes != st.ActiveSegmentSize || st.Fsyncs < 2 || st.FsyncTotal <= 0 ||
		st.LastFsync <= 0 || st.MaxFsync < st.LastFsync {
		t.Fatalf("Stats %+v", st)
	}
	appendN(t, l, 1) // over 64 KiB: rotates
	st = l.Stats()
	if st.Segments != 2 || st.ActiveSegmentRecords != 1 || st.ActiveSegmentSeq != 1 {
		t.Fatalf("Stats after rotation %+v", st)
	}
}

func TestLockedError(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	_, err := Open(dir, Options{})
	var le *LockedError
	if !errors.As(err, &le) || le.Dir != dir || !strings.Contains(le.Holder, fmt.Sprintf("pid %d (", os.Getpid())) {
		t.Fatalf("second Open: %v", err)
	}
	if !strings.Contains(err.Error(), "in use by pid") {
		t.Fatalf("message %q does not name the holder", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openT(t, dir, Options{})
	l.Close()
}

// TestWriteErrors injects failures into writes, fsyncs and segment
// creation: the callers of the failed batch get the error, the log goes on
// in a fresh segment, and positions stay contiguous, now and after reopen.
func TestWriteErrors(t *testing.T) {
	cases := map[string]func(op string) error{
		"ENOSPC on write": func(op string) error {
			if op == "write" {
				return syscall.ENOSPC
			}
			return nil
		},
		"short write": func(op string) error {
			if op == "write" {
				return errShortWrite
			}
			return nil
		},
		"fsync fails": func(op string) error {
			if op == "sync" {
				return syscall.EIO
			}
			return nil
		},
		"segment creation fails": func(op string) error {
			if op == "create" {
				return syscall.ENOSPC
			}
			return nil
		},
	}
	for name, fault := range cases {
		t.Run(name, func(t *testing.T) {
			fs := newMemFS()
			l := openT(t, "/wal", Options{FS: fs, MaxSegmentSize: 300})
			appendN(t, l, 10) // crosses rotations
			segsBefore := l.Stats().Segments
			fs.mu.Lock()
			fs.fault = func(op, name string) error { return fault(op) }
			fs.mu.Unlock()
			// Appends fail once the fault is met: at once for writes and
			// fsyncs, at the next rotation for segment creation.
			var err error
			for i := 0; i < 20 && err == nil; i++ {
				_, err = l.Append(rec(l.LastPosition() + 1))
			}
			wantErr := error(syscall.ENOSPC)
			if name == "fsync fails" {
				wantErr = syscall.EIO
			}
			if !errors.Is(err, wantErr) {
				t.Fatalf("Append with %s: %v, want %v", name, err, wantErr)
			}
			if l.Stats().WriteErrors == 0 {
				t.Fatal("WriteErrors not counted")
			}
			fs.mu.Lock()
			fs.fault = nil
			fs.mu.Unlock()
			last := l.LastPosition()
			appendN(t, l, 5)
			if l.LastPosition() != last+5 {
				t.Fatalf("LastPosition %d after 5 appends from %d", l.LastPosition(), last)
			}
			if l.Stats().Segments <= segsBefore {
				t.Fatalf("no fresh segment after the failure: %d segments", l.Stats().Segments)
			}
			check := func() {
				t.Helper()
				if got := positions(t, readAll(t, l, 0)); !slices.Equal(got, seq(1, last+5)) {
					t.Fatalf("read %v, want 1..%d", got, last+5)
				}
			}
			check()
			l.Close()
			l = openT(t, "/wal", Options{FS: fs, MaxSegmentSize: 300})
			defer l.Close()
			check()
			if len(l.Problems()) != 0 {
				t.Fatalf("problems after reopen: %v", l.Problems())
			}
		})
	}
}

// TestFailedBatchRenumbersQueue fails one batch while others queue behind
// it: every acknowledged position holds its record and there is no hole.
func TestFailedBatchRenumbersQueue(t *testing.T) {
	fs := newMemFS()
	var mu sync.Mutex
	fails, syncs := 0, 0
	fs.fault = func(op, name string) error {
		mu.Lock()
		defer mu.Unlock()
		if op == "sync" {
			syncs++
			if syncs%5 == 0 {
				fails++
				return syscall.EIO
			}
		}
		return nil
	}
	l := openT(t, "/wal", Options{FS: fs, MaxSegmentSize: 2000})
	var wg sync.WaitGroup
	var amu sync.Mutex
	acked := map[Position]string{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				payload := fmt.Sprintf("w%d-%d", w, i)
				if p, err := l.Append([]byte(payload)); err == nil {
					amu.Lock()
					acked[p] = payload
					amu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	check := func() {
		t.Helper()
		got := readAll(t, l, 0)
		if len(got) != len(acked) {
			t.Fatalf("read %d records, %d acknowledged", len(got), len(acked))
		}
		for i, r := range got {
			if r.pos != Position(i+1) || acked[r.pos] != r.rec {
				t.Fatalf("record %d: position %d %q, acknowledged %q", i, r.pos, r.rec, acked[r.pos])
			}
		}
	}
	check()
	l.Close()
	mu.Lock()
	fs.fault = nil
	mu.Unlock()
	l = openT(t, "/wal", Options{FS: fs, MaxSegmentSize: 2000})
	defer l.Close()
	check()
	if fails == 0 || len(acked) == 0 || len(acked) == 800 {
		t.Fatalf("%d fsync failures, %d of 800 records acknowledged: the test did not test", fails, len(acked))
	}
}

func TestAppendRefusesOversizedRecord(t *testing.T) {
	l := openT(t, t.TempDir(), Options{MaxRecordSize: 10})
	defer l.Close()
	_, err := l.AppendBatch([][]byte{[]byte("ok"), make([]byte, 11)})
	if err == nil || !strings.Contains(err.Error(), "record 1 of the batch is 11 bytes, over the maximum record size of 10") {
		t.Fatalf("oversized append: %v", err)
	}
	if l.LastPosition() != 0 {
		t.Fatal("a refused batch was partly written")
	}
}

func TestOptionsAndPolicies(t *testing.T) {
	for _, s := range []string{"always", "interval", "none"} {
		if p, err := ParseSyncPolicy(s); err != nil || string(p) != s {
			t.Errorf("ParseSyncPolicy(%q) = %q, %v", s, p, err)
		}
	}
	if _, err := ParseSyncPolicy("sometimes"); err == nil || !strings.Contains(err.Error(), `"sometimes"`) {
		t.Errorf("ParseSyncPolicy(sometimes): %v", err)
	}
	bad := map[string]Options{
		"negative size":     {MaxSegmentSize: -1},
		"bad policy":        {Sync: "often"},
		"negative interval": {SyncInterval: -time.Second},
		"huge record":       {MaxRecordSize: -5},
	}
	for name, o := range bad {
		if _, err := Open(t.TempDir(), o); err == nil {
			t.Errorf("%s: Open accepted %+v", name, o)
		}
	}
}

func TestCloseAndWait(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	appendN(t, l, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with nothing new: %v", err)
	}
	if err := l.Wait(context.Background(), 0); err != nil {
		t.Fatalf("Wait(0) with one record: %v", err)
	}
	waited := make(chan error)
	go func() { waited <- l.Wait(context.Background(), 1) }()
	r, _ := l.NewReader(1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait across Close: %v", err)
	}
	if _, err := l.Append(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, p, err := r.Next(); err != nil || p != 1 {
		t.Fatalf("reading what is there after Close: %d, %v", p, err)
	}
	if _, _, err := r.Next(); !errors.Is(err, ErrClosed) {
		t.Fatalf("reader at the end of a closed log: %v", err)
	}
	if _, err := l.NewReader(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewReader after Close: %v", err)
	}
}

func TestEmptyRecordsAndBatches(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	defer l.Close()
	if p, err := l.AppendBatch(nil); p != 0 || err != nil {
		t.Fatalf("empty batch: %d, %v", p, err)
	}
	if p, err := l.Append(nil); p != 1 || err != nil {
		t.Fatalf("empty record: %d, %v", p, err)
	}
	got := readAll(t, l, 0)
	if len(got) != 1 || got[0].pos != 1 || got[0].rec != "" {
		t.Fatalf("read %v", got)
	}
}

func TestSlowFsyncIsLogged(t *testing.T) {
	fs := newMemFS()
	fs.fault = func(op, name string) error {
		if op == "sync" && strings.HasSuffix(name, segmentSuffix) {
			time.Sleep(30 * time.Millisecond)
		}
		return nil
	}
	var logs syncBuffer
	l := openT(t, "/wal", Options{FS: fs, SlowSync: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer l.Close()
	appendN(t, l, 1)
	if s := logs.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "slow fsync") || !strings.Contains(s, "duration=") {
		t.Fatalf("no slow fsync warning with its duration in:\n%s", s)
	}
	if st := l.Stats(); st.MaxFsync < 30*time.Millisecond {
		t.Fatalf("MaxFsync %v, want at least 30ms", st.MaxFsync)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSyncInterval checks that under SyncInterval an append does not wait
// for an fsync and a background one follows, and that SyncNone does not sync.
func TestSyncInterval(t *testing.T) {
	fsyncsAfter := func(o Options) (*Log, uint64) {
		l := openT(t, t.TempDir(), o)
		t.Cleanup(func() { l.Close() })
		before := l.Stats().Fsyncs
		appendN(t, l, 3)
		return l, l.Stats().Fsyncs - before
	}
	// The creation of the segment is the one fsync an append may cause.
	if _, n := fsyncsAfter(Options{Sync: SyncInterval, SyncInterval: time.Hour}); n != 1 {
		t.Errorf("interval: %d fsyncs for 3 appends, want 1 (segment creation)", n)
	}
	l, _ := fsyncsAfter(Options{Sync: SyncInterval, SyncInterval: 5 * time.Millisecond})
	deadline := time.Now().Add(5 * time.Second)
	for l.synced.Load() != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("interval: synced up to %d after 5s, want 3", l.synced.Load())
		}
		time.Sleep(time.Millisecond)
	}
	l, n := fsyncsAfter(Options{Sync: SyncNone, SyncInterval: 5 * time.Millisecond})
	time.Sleep(50 * time.Millisecond)
	if n != 1 || l.synced.Load() != 0 {
		t.Errorf("none: %d fsyncs, synced up to %d; want 1 (segment creation) and 0", n, l.synced.Load())
	}
}

func TestCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for i := 0; i < 5; i++ {
		l := openT(t, t.TempDir(), Options{Sync: SyncInterval, MaxSegmentAge: time.Second})
		appendN(t, l, 10)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines before, %d after closing", before, runtime.NumGoroutine())
		}
		time.Sleep(time.Millisecond)
	}
}
