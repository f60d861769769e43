package wal

import (
	"io"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

const benchRecordSize = 100

// benchDir is on the test's temporary directory, which must be a real disk
// for the fsync figures to mean anything.
func benchLog(b *testing.B, sync SyncPolicy) *Log {
	return benchLogFS(b, sync, nil)
}

// benchLogFS preallocates segments, as the agent does by default.
func benchLogFS(b *testing.B, sync SyncPolicy, fs FS) *Log {
	return benchLogOpts(b, Options{Sync: sync, FS: fs, Preallocate: true})
}

func benchLogOpts(b *testing.B, o Options) *Log {
	b.Helper()
	l, err := Open(b.TempDir(), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

func reportRecords(b *testing.B, records int, elapsed time.Duration) {
	b.ReportMetric(float64(records)/elapsed.Seconds(), "records/s")
}

func reportFsyncs(b *testing.B, l *Log, records int) {
	st := l.Stats()
	if st.Preallocated > 0 {
		b.ReportMetric(float64(st.Recycled)/float64(st.Preallocated), "recycled/prealloc")
	}
	if st.Fsyncs > 0 {
		b.ReportMetric(float64(records)/float64(st.Fsyncs), "records/fsync")
		b.ReportMetric(float64(st.FsyncTotal.Microseconds())/float64(st.Fsyncs), "µs/fsync")
	}
}

// simulatedSyncFS writes to the OS file system but replaces fsync with a
// 130 µs sleep in the kernel (about one fsync of this machine's disk when
// idle): it shows what group commit does with a steady fsync, apart from
// the disk's mood. Nothing it writes is durable.
type simulatedSyncFS struct{ FS }

type simulatedSyncFile struct{ File }

func (fs simulatedSyncFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := fs.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return simulatedSyncFile{f}, nil
}

func (simulatedSyncFile) Sync() error {
	ts := syscall.NsecToTimespec(int64(simulatedFsync))
	for {
		var left syscall.Timespec
		err := syscall.Nanosleep(&ts, &left)
		if err != syscall.EINTR {
			return err
		}
		ts = left
	}
}

var simulatedFsync = 130 * time.Microsecond

func BenchmarkAppendNone(b *testing.B) {
	l := benchLog(b, SyncNone)
	rec := make([]byte, benchRecordSize)
	b.SetBytes(benchRecordSize)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := l.Append(rec); err != nil {
			b.Fatal(err)
		}
	}
	reportRecords(b, b.N, time.Since(start))
}

// BenchmarkAppendAlways appends from a fixed number of concurrent writers,
// each waiting for its own fsync: group commit is what makes many writers
// faster than one.
func BenchmarkAppendAlways(b *testing.B) {
	for _, writers := range []int{1, 16, 256} {
		b.Run(itoa(writers)+"writers", func(b *testing.B) { benchAppendAlways(b, writers, nil) })
	}
	b.Run("256writers-nopreallocation", func(b *testing.B) {
		benchAppendAlwaysLog(b, 256, benchLogOpts(b, Options{Sync: SyncAlways}))
	})
	for _, writers := range []int{1, 16, 256} {
		b.Run(itoa(writers)+"writers-simulated130us", func(b *testing.B) {
			benchAppendAlways(b, writers, simulatedSyncFS{OSFS()})
		})
	}
}

func benchAppendAlways(b *testing.B, writers int, fs FS) {
	benchAppendAlwaysLog(b, writers, benchLogFS(b, SyncAlways, fs))
}

func benchAppendAlwaysLog(b *testing.B, writers int, l *Log) {
	b.SetBytes(benchRecordSize)
	b.ReportAllocs()
	stop := consume(l)
	defer stop()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		n := b.N / writers
		if w < b.N%writers {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := make([]byte, benchRecordSize)
			for i := 0; i < n; i++ {
				if _, err := l.Append(rec); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	reportRecords(b, b.N, time.Since(start))
	reportFsyncs(b, l, b.N)
}

// consume removes covered segments every 20 ms, as the agent's flusher
// does once DuckDB holds them: the log stays small, and removed segments
// are recycled as spares when preallocating.
func consume(l *Log) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.RemoveBefore(l.LastPosition())
			case <-quit:
				return
			}
		}
	}()
	return func() { close(quit); <-done }
}

// BenchmarkAppendBatchAlways appends durable batches of 1000 records,
// from one writer and from four (whose batches share fsyncs).
func BenchmarkAppendBatchAlways(b *testing.B) {
	for _, writers := range []int{1, 4, -1} {
		name, o := itoa(writers)+"writers", Options{Sync: SyncAlways, Preallocate: true}
		if writers < 0 {
			writers, name, o.Preallocate = 1, "1writer-nopreallocation", false
		}
		b.Run(name, func(b *testing.B) {
			l := benchLogOpts(b, o)
			const size = 1000
			b.SetBytes(size * benchRecordSize)
			b.ReportAllocs()
			stop := consume(l)
			defer stop()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for w := 0; w < writers; w++ {
				n := b.N / writers
				if w < b.N%writers {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					batch := make([][]byte, size)
					for i := range batch {
						batch[i] = make([]byte, benchRecordSize)
					}
					for i := 0; i < n; i++ {
						if _, err := l.AppendBatch(batch); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			reportRecords(b, b.N*size, time.Since(start))
			reportFsyncs(b, l, b.N*size)
		})
	}
}

// BenchmarkReplay reads 64 MiB of 100-byte records (several segments) from
// the page cache, as recovery and the flusher do.
func BenchmarkReplay(b *testing.B) {
	l := benchLog(b, SyncNone)
	batch := make([][]byte, 1000)
	for i := range batch {
		batch[i] = make([]byte, benchRecordSize)
	}
	const total = 64 << 20
	for n := 0; n < total/benchRecordSize; n += len(batch) {
		if _, err := l.AppendBatch(batch); err != nil {
			b.Fatal(err)
		}
	}
	records := int(l.LastPosition())
	b.SetBytes(int64(records * benchRecordSize))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		r, err := l.NewReader(1)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			_, _, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		r.Close()
		if n != records {
			b.Fatalf("read %d records, want %d", n, records)
		}
	}
	reportRecords(b, b.N*records, time.Since(start))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
