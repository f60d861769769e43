package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// benchPoints makes n points of 3 tags and 3 fields over keys series.
func benchPoints(n, keys, offset int) []Point {
	pts := make([]Point, n)
	for i := range pts {
		k := (offset + i) % keys
		pts[i] = Point{
			Measurement: "cpu",
			Tags: []Tag{{"dc", fmt.Sprintf("dc%d", k%3)}, {"host", fmt.Sprintf("server%05d", k)},
				{"region", "us-west"}},
			Fields: []Field{{"usage_idle", FloatValue(84.3)}, {"usage_system", FloatValue(3.2)},
				{"usage_user", FloatValue(float64(i))}},
			Time: 1_700_000_000_000_000_000 + int64(offset+i),
		}
	}
	return pts
}

// TestBoundedMemory holds the flusher back, stores millions of readings,
// and checks that the Go heap stays bounded: the backlog lives on disk.
func TestBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("stores millions of readings")
	}
	total := 5_000_000
	if raceEnabled {
		total = 500_000 // the race detector makes this many times slower
	}
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.BatchSize = 1000
	cfg.FlushInterval = 10 * time.Millisecond
	// Small transactions: the flusher's two reusable batches reach their
	// full size within the first sample, so later growth would be a leak.
	cfg.MaxFlushRows = 25_000
	release := make(chan struct{})
	var once sync.Once
	held := 0
	cfg.flushHook = func() error {
		select {
		case <-release:
			return nil
		default:
			held++
			return errors.New("flusher held back by the test")
		}
	}
	s := openTest(t, dir, cfg)
	defer s.Close()
	ctx := context.Background()
	// The live heap (after a GC) is what must not grow with the backlog;
	// the heap between GCs also holds garbage and depends on when the GC
	// ran, which a busy machine shifts.
	var live []float64
	var peak uint64
	var ms runtime.MemStats
	batch := &Batch{Source: "test"}
	for i := 0; i < total; i += 1000 {
		batch.Points = append(batch.Points[:0], benchPoints(1000, 10000, i)...)
		if err := s.WriteBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if i%(total/5) == 0 || i+1000 >= total {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			runtime.GC()
			runtime.ReadMemStats(&ms)
			live = append(live, float64(ms.HeapAlloc)/1e6)
		}
	}
	st := s.Stats()
	t.Logf("stored %d readings with the flusher held back: live heap %.1f MB (samples %.1f), heap seen between GCs up to %.1f MB, backlog %.1f MB on disk in %d segments",
		total, slices.Max(live), live, float64(peak)/1e6, float64(st.BacklogBytes)/1e6, st.WALFilesCount)
	if slices.Max(live) > 60 {
		t.Fatalf("live heap reached %.1f MB storing %d readings, want under 60 MB", slices.Max(live), total)
	}
	if growth := live[len(live)-1] - live[1]; growth > 10 {
		t.Fatalf("live heap grew by %.1f MB while the backlog grew from a fifth to all of %d readings: %.1f", growth, total, live)
	}
	if st.FlushedTotal != 0 {
		t.Fatalf("the flusher was not held back: %d flushed", st.FlushedTotal)
	}
	once.Do(func() { close(release) })
	start := time.Now()
	flushCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		err := s.ForceFlush(flushCtx)
		if err == nil {
			break
		}
		if flushCtx.Err() != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&ms)
	t.Logf("released: %d readings flushed in %s, heap now %.1f MB", total, time.Since(start).Round(time.Millisecond), float64(ms.HeapAlloc)/1e6)
	if n := queryInt(t, s.DB(), `SELECT count(*) FROM points`); n != int64(total) {
		t.Fatalf("points after release: %d, want %d", n, total)
	}
}

// TestDiskFull puts the WAL on a small tmpfs, fills it, and checks that
// stores fail with a clear error, that nothing acknowledged is lost, and
// that storing resumes by itself once room returns.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (CI runs as root)")
	}
	dir := t.TempDir()
	walDir := filepath.Join(dir, "wal")
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", walDir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	defer exec.Command("umount", "-l", walDir).Run()

	cfg := testConfig(dir)
	cfg.MaxWALSize = 64 << 10
	cfg.flushHook = nil
	var mu sync.Mutex
	hold := true
	cfg.flushHook = func() error {
		mu.Lock()
		defer mu.Unlock()
		if hold {
			return errors.New("flusher held back until the disk is full")
		}
		return nil
	}
	s := openTest(t, dir, cfg)
	defer s.Close()
	ctx := context.Background()
	acked := 0
	var err error
	for i := 0; i < 100000; i++ {
		err = s.WriteBatch(ctx, &Batch{Points: benchPoints(100, 1000, i*100)})
		if err != nil {
			break
		}
		acked++
	}
	if err == nil {
		t.Fatal("1 MiB tmpfs never filled up")
	}
	if !errors.Is(err, ErrBackpressure) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "disk") {
		t.Fatalf("store on a full disk = %v; want a backpressure error wrapping ENOSPC", err)
	}
	t.Logf("disk full after %d acknowledged batches: %v", acked, err)
	// Room returns when the flusher catches up and removes segments.
	mu.Lock()
	hold = false
	mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = s.WriteBatch(ctx, &Batch{Points: benchPoints(100, 1000, acked*100)})
		if err == nil {
			acked++
			break
		}
		if time.Now().After(deadline) {
			out, _ := exec.Command("ls", "-la", walDir).CombinedOutput()
			t.Fatalf("storing did not resume after room returned: %v\n%+v\n%s", err, s.Stats(), out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mustFlush(t, s)
	if n := queryInt(t, s.DB(), `SELECT count(*) FROM points`); n != int64(acked*100) {
		t.Fatalf("points: %d, acknowledged: %d", n, acked*100)
	}
}
