package storage

import (
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// seriesLimit bounds the number of distinct series the store accepts. Every
// series costs memory for as long as the agent runs (the flusher's series
// table, 430-670 bytes each) and is loaded again at every start, so a
// sender that puts a timestamp or a UUID in a tag would otherwise grow the
// agent until it is killed, and then again at each restart. A point that
// would start a series beyond the limit is stored as a dead letter instead
// (nothing acknowledged is lost), counted, and named in the input's answer.
//
// The set holds 64-bit hashes of series keys, not the keys: two keys with
// one hash (odds of about 1 in 10^8 among a million series) count as one
// series, which lets one more series in; it never refuses a known one.
type seriesLimit struct {
	max     int64
	seed    maphash.Seed
	count   atomic.Int64 // hashes in the set
	refused atomic.Uint64
	shards  [seriesShards]seriesShard
}

const seriesShards = 16

type seriesShard struct {
	mu sync.RWMutex
	m  map[uint64]struct{}
}

// newSeriesLimit makes a limit whose key hashes are seed's: the cache's, so
// that a store hashes each key once for both.
func newSeriesLimit(max int, seed maphash.Seed) *seriesLimit {
	l := &seriesLimit{max: int64(max), seed: seed}
	for i := range l.shards {
		l.shards[i].m = make(map[uint64]struct{})
	}
	return l
}

// known records a series the store already holds (in DuckDB, or in the WAL
// when the flusher meets it), whatever the limit: it was accepted once.
func (l *seriesLimit) known(key string) {
	h := maphash.String(l.seed, key)
	s := &l.shards[h%seriesShards]
	s.mu.Lock()
	if _, ok := s.m[h]; !ok {
		s.m[h] = struct{}{}
		l.count.Add(1)
	}
	s.mu.Unlock()
}

// admit reports whether a point of the key hashed to h may be stored: its
// series is known, or there is room for one more, which it then takes.
func (l *seriesLimit) admit(h uint64) bool {
	s := &l.shards[h%seriesShards]
	s.mu.RLock()
	_, ok := s.m[h]
	s.mu.RUnlock()
	if ok {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[h]; ok {
		return true
	}
	// The count is shared by all shards: reserve a place in it before
	// taking it, so that racing admits cannot pass the limit together.
	for {
		n := l.count.Load()
		if n >= l.max {
			return false
		}
		if l.count.CompareAndSwap(n, n+1) {
			break
		}
	}
	s.m[h] = struct{}{}
	return true
}

// apply moves every point of b whose key k did not admit into b.Rejects, as
// a dead letter holding the point's JSON record. The other points keep their
// order, and k.groups follows them.
func (l *seriesLimit) apply(b *Batch, k *batchKeys) {
	kept, moved := 0, 0
	var now int64
	for i := range b.Points {
		p := &b.Points[i]
		if g := k.groups[i]; k.slots[g].ok {
			if kept != i {
				b.Points[kept] = *p
				k.groups[kept] = g
			}
			kept++
			continue
		}
		if now == 0 {
			now = time.Now().UnixNano()
		}
		moved++
		b.Rejects = append(b.Rejects, Reject{
			Time:   now,
			Source: b.Source,
			Reason: fmt.Sprintf("series limit reached: %d series are stored (storage.max_series); the point would start series %q: raise the limit or drop the tag that makes every point a series of its own",
				l.max, p.Key),
			Payload: p.AppendJSON(nil),
		})
	}
	if moved == 0 {
		return
	}
	clear(b.Points[kept:]) // let the moved points' strings go
	b.Points = b.Points[:kept]
	k.groups = k.groups[:kept]
	l.refused.Add(uint64(moved))
}
