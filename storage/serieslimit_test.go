package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"testing"
)

// writeKeys stores one point per key and returns the batch as the store left
// it: the points it kept and the rejects it added.
func writeKeys(t *testing.T, s *Store, ts int64, keys ...string) *Batch {
	t.Helper()
	b := &Batch{Source: "test"}
	for i, k := range keys {
		b.Points = append(b.Points, pt(k, ts+int64(i), float64(i)))
	}
	if err := s.WriteBatch(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return b
}

func keptKeys(b *Batch) []string {
	var keys []string
	for _, p := range b.Points {
		keys = append(keys, p.Key)
	}
	return keys
}

func TestSeriesLimit(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.MaxSeries = 3
	s := openTest(t, dir, cfg)
	waitReady(t, s)

	steps := []struct {
		keys    []string
		kept    []string
		refused int
	}{
		{[]string{"m,k=a", "m,k=b"}, []string{"m,k=a", "m,k=b"}, 0},
		// The third series fits; the fourth and fifth do not, and the
		// points around them keep their order.
		{[]string{"m,k=c", "m,k=d", "m,k=a", "m,k=e", "m,k=b"}, []string{"m,k=c", "m,k=a", "m,k=b"}, 2},
		// Known series are always taken; a refused one stays refused.
		{[]string{"m,k=a", "m,k=d", "m,k=c"}, []string{"m,k=a", "m,k=c"}, 1},
	}
	ts := int64(1e18)
	refused := 0
	for i, st := range steps {
		b := writeKeys(t, s, ts, st.keys...)
		ts += 100
		if got := keptKeys(b); strings.Join(got, " ") != strings.Join(st.kept, " ") {
			t.Errorf("step %d: kept %v, want %v", i, got, st.kept)
		}
		if len(b.Rejects) != st.refused {
			t.Fatalf("step %d: %d rejects, want %d", i, len(b.Rejects), st.refused)
		}
		refused += st.refused
		for _, r := range b.Rejects {
			if !strings.Contains(r.Reason, "series limit reached: 3 series") || !strings.Contains(r.Reason, "storage.max_series") {
				t.Errorf("step %d: reason %q does not name the limit and its setting", i, r.Reason)
			}
			var rec map[string]any
			if err := json.Unmarshal(r.Payload, &rec); err != nil || rec["measurement"] != "m" || rec["fields"] == nil {
				t.Errorf("step %d: payload %s is not the point's record: %v", i, r.Payload, err)
			}
		}
	}
	if st := s.Stats(); st.SeriesRefused != uint64(refused) || st.SeriesLimit != 3 {
		t.Errorf("stats: refused %d, limit %d; want %d and 3", st.SeriesRefused, st.SeriesLimit, refused)
	}
	mustFlush(t, s)
	if n := queryInt(t, s.DB(), `SELECT count(*) FROM series`); n != 3 {
		t.Errorf("%d series in DuckDB, want 3", n)
	}
	if n := queryInt(t, s.DB(), `SELECT count(*) FROM points`); n != 7 {
		t.Errorf("%d points in DuckDB, want 7", n)
	}
	// The refused points are not lost: each is a dead letter with its record.
	if n := queryInt(t, s.DB(), `SELECT count(*) FROM dead_letters WHERE reason LIKE 'series limit reached%' AND json_extract_string(decode(payload), '$.tags.k') IN ('d', 'e')`); n != int64(refused) {
		t.Errorf("%d dead letters of refused series, want %d", n, refused)
	}
	s.Close()

	// After a restart the series in DuckDB count again.
	s = openTest(t, dir, cfg)
	defer s.Close()
	waitReady(t, s)
	b := writeKeys(t, s, ts, "m,k=b", "m,k=f")
	if got := keptKeys(b); len(got) != 1 || got[0] != "m,k=b" || len(b.Rejects) != 1 {
		t.Errorf("after restart: kept %v with %d rejects, want [m,k=b] and 1", got, len(b.Rejects))
	}
}

// Series the WAL holds but DuckDB does not yet (stored before a crash) count
// once recovery has met them.
func TestSeriesLimitCountsTheWALBacklog(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.MaxSeries = 2
	held := cfg
	held.flushHook = func() error { return fmt.Errorf("held back") }
	s := openTest(t, dir, held)
	writeKeys(t, s, 1, "m,k=a", "m,k=b")
	s.abandon()

	s = openTest(t, dir, cfg)
	defer s.Close()
	waitReady(t, s)
	b := writeKeys(t, s, 100, "m,k=c", "m,k=a")
	if got := keptKeys(b); len(got) != 1 || got[0] != "m,k=a" || len(b.Rejects) != 1 {
		t.Errorf("kept %v with %d rejects, want [m,k=a] and 1", got, len(b.Rejects))
	}
}

// Racing writers of new series never take more than the limit together.
func TestSeriesLimitConcurrent(t *testing.T) {
	const max, writers, each = 100, 8, 50
	l := newSeriesLimit(max, maphash.MakeSeed())
	var mu sync.Mutex
	admitted := map[string]bool{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				// Half the keys are shared between pairs of writers.
				key := fmt.Sprintf("m,w=%d,i=%d", w/2, i)
				if l.admit(maphash.String(l.seed, key)) {
					mu.Lock()
					admitted[key] = true
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(admitted) != max || l.count.Load() != max {
		t.Errorf("%d distinct series admitted, count %d; want %d", len(admitted), l.count.Load(), max)
	}
	for key := range admitted {
		if !l.admit(maphash.String(l.seed, key)) {
			t.Errorf("admitted series %s refused later", key)
		}
	}
}

func BenchmarkSeriesAdmit(b *testing.B) {
	l := newSeriesLimit(1<<20, maphash.MakeSeed())
	hashes := make([]uint64, 1000)
	for i := range hashes {
		hashes[i] = maphash.String(l.seed, fmt.Sprintf("cpu,dc=dc1,host=server%06d,region=uswest", i))
		l.admit(hashes[i])
	}
	for i := 0; b.Loop(); i++ {
		if !l.admit(hashes[i%len(hashes)]) {
			b.Fatal("refused")
		}
	}
}
