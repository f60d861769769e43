package storage

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fpagent/fpagent/wal"
)

// BenchmarkStoreAndFlush stores batches of 1000 readings (3 tags, 3 fields,
// 10k distinct keys) with sync=always from 4 writers and includes the time
// to flush everything into DuckDB, so that readings/s is what the store
// sustains end to end. max_backlog_MB shows whether the flusher kept up.
func BenchmarkStoreAndFlush(b *testing.B) {
	for _, sync := range []wal.SyncPolicy{wal.SyncAlways, wal.SyncInterval} {
		b.Run("sync="+string(sync), func(b *testing.B) { benchStore(b, sync) })
	}
}

// benchConfig is testConfig with DuckDB's threads as the agent has them
// (FPAGENT_BENCH_THREADS overrides).
func benchConfig(dir string) Config {
	cfg := testConfig(dir)
	cfg.Threads = DefaultConfig().Threads
	if v, err := strconv.Atoi(os.Getenv("FPAGENT_BENCH_THREADS")); err == nil && v > 0 {
		cfg.Threads = v
	}
	cfg.FlushNice = 10 // as the agent's storage.duckdb.nice
	if v, err := strconv.Atoi(os.Getenv("FPAGENT_BENCH_NICE")); err == nil && v >= 0 {
		cfg.FlushNice = v
	}
	return cfg
}

func benchStore(b *testing.B, policy wal.SyncPolicy) {
	dir := b.TempDir()
	cfg := benchConfig(dir)
	cfg.Sync = policy
	cfg.BatchSize = 1000
	cfg.FlushInterval = time.Second
	if v, err := strconv.Atoi(os.Getenv("FPAGENT_BENCH_FLUSH_ROWS")); err == nil {
		cfg.MaxFlushRows = v
	}
	s := openTest(b, dir, cfg)
	defer s.Close()
	waitReady(b, s)
	const writers, batch, keys = 4, 1000, 10000
	proto := make([][]Point, keys/batch)
	for i := range proto {
		proto[i] = benchPoints(batch, keys, i*batch)
	}
	var next atomic.Int64
	var maxBacklog atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if bl := s.Stats().BacklogBytes; bl > maxBacklog.Load() {
					maxBacklog.Store(bl)
				}
			}
		}
	}()
	b.SetBytes(batch * 94) // the line-protocol size of the same readings
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			bt := &Batch{Source: "bench", Points: make([]Point, batch)}
			for {
				n := next.Add(1) - 1
				if n >= int64(b.N) {
					return
				}
				copy(bt.Points, proto[n%int64(len(proto))])
				for i := range bt.Points {
					bt.Points[i].Time += n * batch
				}
				if err := s.WriteBatch(context.Background(), bt); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	stored := time.Since(start)
	if err := s.ForceFlush(context.Background()); err != nil {
		b.Fatal(err)
	}
	total := time.Since(start)
	b.StopTimer()
	close(stop)
	readings := float64(b.N) * batch
	b.ReportMetric(readings/total.Seconds(), "readings/s")
	b.ReportMetric(readings/stored.Seconds(), "stored_readings/s")
	b.ReportMetric(float64(maxBacklog.Load())/1e6, "max_backlog_MB")
	st := s.Stats()
	b.ReportMetric(float64(st.FlushedTotal)/float64(max(st.Flushes, 1)), "readings/flush")
}

// BenchmarkGet reads a record from the cache.
func BenchmarkGet(b *testing.B) {
	dir := b.TempDir()
	s := openTest(b, dir, testConfig(dir))
	defer s.Close()
	waitReady(b, s)
	pts := benchPoints(1000, 1000, 0)
	mustStore(b, s, pts...)
	keys := make([]string, len(pts))
	for i := range pts {
		keys[i] = pts[i].Key
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, ok, _ := s.Get(ctx, keys[i%len(keys)]); !ok {
			b.Fatal("miss")
		}
	}
}

// BenchmarkRecovery measures how fast a WAL backlog reaches DuckDB after a
// crash: the time from Open to ready. FPAGENT_BENCH_RECOVERY_READINGS sets
// the backlog size (default 2,000,000 readings, about 220 MB of WAL).
func BenchmarkRecovery(b *testing.B) {
	n := 2_000_000
	if v, err := strconv.Atoi(os.Getenv("FPAGENT_BENCH_RECOVERY_READINGS")); err == nil && v > 0 {
		n = v
	}
	for b.Loop() {
		b.StopTimer()
		dir := b.TempDir()
		cfg := benchConfig(dir)
		cfg.flushHook = func() error { return fmt.Errorf("held back") }
		s := openTest(b, dir, cfg)
		bt := &Batch{Source: "bench"}
		for i := 0; i < n; i += 1000 {
			bt.Points = append(bt.Points[:0], benchPoints(1000, 10000, i)...)
			if err := s.WriteBatch(context.Background(), bt); err != nil {
				b.Fatal(err)
			}
		}
		walBytes := s.Stats().BacklogBytes
		s.abandon()
		runtime.GC()
		b.StartTimer()
		start, cpu0 := time.Now(), cpuTime()
		s = openTest(b, dir, benchConfig(dir))
		waitReady(b, s)
		el, cpu := time.Since(start), cpuTime()-cpu0
		b.StopTimer()
		b.ReportMetric(float64(n)/el.Seconds(), "readings/s")
		// The machine is shared: CPU seconds (every thread, DuckDB's too)
		// per million readings is what a flush costs, whatever else runs.
		b.ReportMetric(cpu.Seconds()/float64(n)*1e6, "cpu-s/M")
		b.ReportMetric(float64(walBytes)/1e6/el.Seconds(), "WAL_MB/s")
		s.Close()
		b.StartTimer()
	}
}

// cpuTime is the CPU time of the whole process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
