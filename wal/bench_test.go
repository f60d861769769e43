package wal

import (
	"io"
	"sync"
	"testing"
	"time"
)

const benchRecordSize = 100

// benchDir is on the test's temporary directory, which must be a real disk
// for the fsync figures to mean anything.
func benchLog(b *testing.B, sync SyncPolicy) *Log {
	b.Helper()
	l, err := Open(b.TempDir(), Options{Sync: sync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

func reportRecords(b *testing.B, records int, elapsed time.Duration) {
	b.ReportMetric(float64(records)/elapsed.Seconds(), "records/s")
}

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
		b.Run(itoa(writers)+"writers", func(b *testing.B) {
			l := benchLog(b, SyncAlways)
			b.SetBytes(benchRecordSize)
			b.ReportAllocs()
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
			el := time.Since(start)
			reportRecords(b, b.N, el)
			st := l.Stats()
			b.ReportMetric(float64(b.N)/float64(max(st.Fsyncs, 1)), "records/fsync")
		})
	}
}

// BenchmarkAppendBatchAlways appends durable batches of 1000 records.
func BenchmarkAppendBatchAlways(b *testing.B) {
	l := benchLog(b, SyncAlways)
	batch := make([][]byte, 1000)
	for i := range batch {
		batch[i] = make([]byte, benchRecordSize)
	}
	b.SetBytes(int64(len(batch) * benchRecordSize))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := l.AppendBatch(batch); err != nil {
			b.Fatal(err)
		}
	}
	reportRecords(b, b.N*len(batch), time.Since(start))
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
