package storage

import (
	"context"
	"hash/maphash"
	"strings"
	"testing"
)

func TestBatchKeys(t *testing.T) {
	shared := strings.Repeat("m,k=a", 1) // one string for several points
	other := "m,k=b"
	copyOfA := string([]byte("m,k=a")) // equal to shared, elsewhere in memory
	points := []Point{
		{Key: shared, Time: 5},
		{Key: other, Time: 1},
		{Key: shared, Time: 9},
		{Key: shared, Time: 9}, // a tie: the later one
		{Key: copyOfA, Time: 3},
		{Key: shared, Time: 2},
	}
	seed := maphash.MakeSeed()
	asked := map[uint64]int{}
	k := batchKeysPool.Get().(*batchKeys)
	defer k.release()
	k.group(points, seed, func(h uint64) bool { asked[h]++; return true })
	if len(k.used) != 3 {
		t.Fatalf("%d groups, want 3 (a, b, and a's copy at another address)", len(k.used))
	}
	if asked[maphash.String(seed, "m,k=a")] != 2 || asked[maphash.String(seed, "m,k=b")] != 1 {
		t.Errorf("admit asked %v: want a's hash twice (two addresses) and b's once", asked)
	}
	k.pickNewest(points)
	best := map[int32]bool{}
	for _, j := range k.used {
		best[k.slots[j].best] = true
		if want := maphash.String(seed, points[k.slots[j].best].Key); k.slots[j].hash != want {
			t.Errorf("group of %s: hash %x, want %x", points[k.slots[j].best].Key, k.slots[j].hash, want)
		}
	}
	for _, i := range []int32{3, 1, 4} {
		if !best[i] {
			t.Errorf("point %d is not a group's newest; newest: %v", i, best)
		}
	}
	// Released slots are free for the next batch.
	k.release()
	k = batchKeysPool.Get().(*batchKeys)
	k.group(points[:1], seed, func(uint64) bool { return false })
	if len(k.used) != 1 || k.slots[k.used[0]].ok {
		t.Errorf("after release: %d groups, ok %v; want 1 refused", len(k.used), k.slots[k.used[0]].ok)
	}
}

// The cache holds the newest point of each key of a batch, whatever the
// order within it.
func TestCacheTakesNewestOfBatch(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, testConfig(dir))
	defer s.Close()
	waitReady(t, s)
	key := "m,k=a"
	b := &Batch{Source: "test", Normalized: true}
	for _, ts := range []int64{5, 9, 2, 9, 7} {
		p := pt(key, ts, float64(ts*10))
		p.Key = key // one string, as the parser shares it
		b.Points = append(b.Points, p)
	}
	b.Points[3].Fields = []Field{{"v", FloatValue(91)}} // the later of the two at 9
	if err := s.WriteBatch(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	rec, ok, err := s.Get(context.Background(), key)
	if err != nil || !ok {
		t.Fatalf("Get: %v %v", ok, err)
	}
	if want := b.Points[3].AppendJSON(nil); string(rec) != string(want) {
		t.Errorf("cached %s, want %s", rec, want)
	}
}
