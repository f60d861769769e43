package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fpagent/fpagent/wal"
)

func feedConfig(dir string, feeds ...FeedConfig) Config {
	cfg := testConfig(dir)
	cfg.Feeds = feeds
	return cfg
}

func mustFeed(t *testing.T, s *Store, name string) *Feed {
	t.Helper()
	f, err := s.Feed(name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// readTimes reads from f until it has n points (or fails the test) and
// returns their timestamps and the last batch's position.
func readTimes(t *testing.T, f *Feed, n, maxPoints int) ([]int64, wal.Position) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var times []int64
	var last wal.Position
	for len(times) < n {
		b, err := f.Read(ctx, maxPoints)
		if err != nil {
			t.Fatalf("after %d of %d points: %v", len(times), n, err)
		}
		for _, p := range b.Points {
			times = append(times, p.Time)
		}
		last = b.Last
	}
	return times, last
}

func TestFeedReadsCommitsAndResumes(t *testing.T) {
	dir := t.TempDir()
	cfg := feedConfig(dir, FeedConfig{Name: "out"})
	s := openTest(t, dir, cfg)
	for i := range 10 {
		var pts []Point
		for j := range 10 {
			pts = append(pts, pt("m,k=a", int64(i*10+j), 1))
		}
		mustStore(t, s, pts...)
	}
	f := mustFeed(t, s, "out")
	// maxPoints 25: whole records, so 30 points in 3 records.
	times, last := readTimes(t, f, 25, 25)
	if len(times) != 30 || times[0] != 0 || times[29] != 29 {
		t.Fatalf("first read: %d points %v", len(times), times)
	}
	if err := f.Commit(last); err != nil {
		t.Fatal(err)
	}
	// Read on without committing: after a restart these come again.
	if more, _ := readTimes(t, f, 10, 10); more[0] != 30 {
		t.Fatalf("second read starts at %d, want 30", more[0])
	}
	mustFlush(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, dir, cfg)
	defer s.Close()
	f = mustFeed(t, s, "out")
	if got := f.Cursor(); got != last {
		t.Fatalf("cursor after restart %d, want %d", got, last)
	}
	times, _ = readTimes(t, f, 70, 1000)
	if len(times) != 70 || times[0] != 30 || times[69] != 99 {
		t.Fatalf("after restart: %d points from %d to %d, want 70 from 30 to 99", len(times), times[0], times[len(times)-1])
	}
	if st := f.Stats(); st.LagRecords != 7 || st.LagBytes <= 0 || st.Cursor != uint64(last) {
		t.Fatalf("stats %+v: want 7 records behind cursor %d", st, last)
	}
}

// Segments that DuckDB has but an output has not sent stay on disk, also
// across a clean close, and go once the output commits.
func TestFeedHoldsSegments(t *testing.T) {
	dir := t.TempDir()
	cfg := feedConfig(dir, FeedConfig{Name: "out"})
	cfg.MaxWALSize = 4096
	s := openTest(t, dir, cfg)
	for i := range 300 {
		mustStore(t, s, pt(fmt.Sprintf("m,k=%d", i%7), int64(i), 1))
	}
	mustFlush(t, s)
	if n, _ := s.wal.Behind(0); n != 300 {
		t.Fatalf("after a flush the WAL holds %d records, want all 300 (the output has sent none)", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, cfg)
	defer s.Close()
	waitReady(t, s)
	f := mustFeed(t, s, "out")
	times, last := readTimes(t, f, 300, 1000)
	if len(times) != 300 {
		t.Fatalf("read %d points, want 300", len(times))
	}
	before := s.wal.Stats().Segments
	if err := f.Commit(last); err != nil {
		t.Fatal(err)
	}
	if after := s.wal.Stats().Segments; after >= before || after > 2 {
		t.Fatalf("segments %d before the commit, %d after: want them removed", before, after)
	}
	if st := f.Stats(); st.LagRecords != 0 || st.LagSeconds != 0 {
		t.Fatalf("caught up, stats %+v", st)
	}
}

func TestFeedOverBudgetBlocks(t *testing.T) {
	dir := t.TempDir()
	cfg := feedConfig(dir, FeedConfig{Name: "slow", DiskBudget: 16 << 10, Policy: FeedBlock})
	cfg.MaxWALSize = 4096
	cfg.StoreTimeout = 100 * time.Millisecond
	s := openTest(t, dir, cfg)
	defer s.Close()
	var err error
	stored := 0
	for ; stored < 10000 && err == nil; stored++ {
		err = s.WriteBatch(context.Background(), &Batch{Source: "test", Points: []Point{pt("m,k=a", int64(stored), 1)}})
	}
	var bp *BackpressureError
	if !errors.As(err, &bp) || !strings.Contains(bp.Reason, `output "slow"`) {
		t.Fatalf("after %d stores: %v, want backpressure naming the output", stored, err)
	}
	mustFlush(t, s) // DuckDB having it all does not help: the output must catch up
	if err := s.Store(context.Background(), pt("m,k=a", 1e6, 1)); !errors.As(err, &bp) {
		t.Fatalf("after a flush: %v, want backpressure still", err)
	}
	f := mustFeed(t, s, "slow")
	_, last := readTimes(t, f, stored-1, 1<<20)
	if err := f.Commit(last); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(context.Background(), pt("m,k=a", 2e6, 1)); err != nil {
		t.Fatalf("after the output caught up: %v", err)
	}
}

func TestFeedOverBudgetDropsOldest(t *testing.T) {
	dir := t.TempDir()
	const budget = 16 << 10
	cfg := feedConfig(dir, FeedConfig{Name: "lossy", DiskBudget: budget, Policy: FeedDropOldest}, FeedConfig{Name: "keeper"})
	cfg.MaxWALSize = 4096
	cfg.StoreTimeout = 100 * time.Millisecond
	s := openTest(t, dir, cfg)
	defer s.Close()
	for i := range 2000 {
		mustStore(t, s, pt("m,k=a", int64(i), 1)) // never refused
	}
	f := mustFeed(t, s, "lossy")
	st := f.Stats()
	if st.Drops == 0 || st.DroppedRecords == 0 || st.DroppedBytes == 0 {
		t.Fatalf("no drop counted: %+v", st)
	}
	if st.LagBytes > budget+4096 {
		t.Fatalf("lag %d bytes, over the budget %d by more than a segment", st.LagBytes, budget)
	}
	times, _ := readTimes(t, f, 1, 1<<20)
	if want := int64(st.DroppedRecords); times[0] != want {
		t.Fatalf("after dropping %d records the output reads from time %d, want %d", st.DroppedRecords, times[0], want)
	}
	// The other output keeps everything: nothing was deleted under it.
	k := mustFeed(t, s, "keeper")
	if all, _ := readTimes(t, k, 2000, 1<<20); len(all) != 2000 || all[0] != 0 {
		t.Fatalf("keeper read %d points from %d", len(all), all[0])
	}
}

// After a power loss under sync=none the WAL may end before a cursor: the
// positions an output has already sent must not be handed out again.
func TestFeedCursorAheadOfWAL(t *testing.T) {
	dir := t.TempDir()
	cfg := feedConfig(dir, FeedConfig{Name: "out"})
	if err := os.MkdirAll(filepath.Join(dir, "outputs"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := writeCursor(filepath.Join(dir, "outputs", "out.cursor"), 1000); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, dir, cfg)
	defer s.Close()
	mustStore(t, s, pt("m,k=a", 1, 1))
	if last := s.wal.LastPosition(); last != 1001 {
		t.Fatalf("first record after a cursor at 1000 got position %d, want 1001", last)
	}
	if times, _ := readTimes(t, mustFeed(t, s, "out"), 1, 10); times[0] != 1 {
		t.Fatalf("read %v", times)
	}
}

func TestFeedCursorFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.cursor")
	if err := writeCursor(path, 123456789); err != nil {
		t.Fatal(err)
	}
	if p, err := readCursor(path); err != nil || p != 123456789 {
		t.Fatalf("readCursor = %d, %v", p, err)
	}
	good, _ := os.ReadFile(path)
	for name, b := range map[string][]byte{
		"empty":     {},
		"truncated": good[:7],
		"flipped":   append([]byte{good[0] ^ 1}, good[1:]...),
		"longer":    append(append([]byte{}, good...), 0),
	} {
		os.WriteFile(path, b, 0o640)
		if _, err := readCursor(path); err == nil {
			t.Errorf("%s cursor file accepted", name)
		}
	}
	// A damaged cursor resends from the oldest record instead of failing.
	cfg := feedConfig(dir, FeedConfig{Name: "out"})
	s := openTest(t, dir, cfg)
	mustStore(t, s, pt("m,k=a", 7, 1))
	s.Close()
	os.WriteFile(filepath.Join(dir, "outputs", "out.cursor"), []byte("garbage"), 0o640)
	s = openTest(t, dir, cfg)
	defer s.Close()
	if times, _ := readTimes(t, mustFeed(t, s, "out"), 1, 10); times[0] != 7 {
		t.Fatalf("after a damaged cursor read %v, want the stored point again", times)
	}
}

func TestFeedConfigErrors(t *testing.T) {
	for _, fc := range [][]FeedConfig{
		{{Name: ""}},
		{{Name: "a/b"}},
		{{Name: ".."}},
		{{Name: "a"}, {Name: "a"}},
		{{Name: "a", Policy: "sometimes"}},
	} {
		dir := t.TempDir()
		s, err := Open(filepath.Join(dir, "db.duckdb"), feedConfig(dir, fc...))
		if err == nil {
			s.Close()
			t.Errorf("feeds %+v accepted", fc)
		}
	}
}
