package storage

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// cache holds the latest point per key, bounded by a number of keys. It is
// sharded so that concurrent stores and gets rarely meet on one lock.
//
// An entry remembers the WAL position that wrote it. Eviction prefers entries
// already flushed to DuckDB, where Get finds them again; when it must drop one
// that is not, it records the position, and a Get that misses waits for the
// flusher to pass it before asking DuckDB (see Store.Get).
type cache struct {
	seed      maphash.Seed
	shards    [cacheShards]cacheShard
	perShard  int
	size      atomic.Int64
	evictions atomic.Uint64
	// dirtyEvicted is the highest WAL position of an evicted entry that
	// was not yet flushed when it was dropped.
	dirtyEvicted atomic.Uint64
}

const cacheShards = 32

type cacheShard struct {
	mu sync.RWMutex
	m  map[string]*cacheEntry
}

type cacheEntry struct {
	time   int64
	pos    uint64
	point  Point  // set (Fields non-nil) for entries stored since start
	record []byte // set for entries loaded from DuckDB (the JSON record)
}

func newCache(maxKeys int) *cache {
	c := &cache{seed: maphash.MakeSeed(), perShard: max(1, (maxKeys+cacheShards-1)/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]*cacheEntry)
	}
	return c
}

func (c *cache) shard(key string) *cacheShard {
	return &c.shards[maphash.String(c.seed, key)%cacheShards]
}

// put keeps p under its key unless the cache holds a newer point for it.
// h is the key's hash under the cache's seed (the series limit computed it
// already); flushed is the position up to which DuckDB has everything.
func (c *cache) put(p *Point, h, pos, flushed uint64) {
	s := &c.shards[h%cacheShards]
	s.mu.Lock()
	if e, ok := s.m[p.Key]; ok {
		if p.Time >= e.time {
			e.time, e.pos, e.record = p.Time, pos, nil
			e.point.copyFrom(p)
		}
		s.mu.Unlock()
		return
	}
	if len(s.m) >= c.perShard {
		c.evictLocked(s, flushed)
	} else {
		c.size.Add(1)
	}
	e := &cacheEntry{time: p.Time, pos: pos}
	e.point.copyFrom(p)
	s.m[p.Key] = e
	s.mu.Unlock()
}

// putRecord keeps a record loaded from DuckDB unless a newer one is there.
// It never evicts: loading fills free room only.
func (c *cache) putRecord(key string, t int64, rec []byte) bool {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		if t > e.time {
			e.time, e.pos, e.point, e.record = t, 0, Point{}, rec
		}
		return true
	}
	if len(s.m) >= c.perShard {
		return false
	}
	c.size.Add(1)
	s.m[key] = &cacheEntry{time: t, record: rec}
	return true
}

// evictLocked drops one entry of s, preferring one already flushed. Go's map
// iteration starts at a random place, which makes this a random sample.
func (c *cache) evictLocked(s *cacheShard, flushed uint64) {
	const sample = 8
	var victim string
	var victimPos uint64
	n := 0
	for k, e := range s.m {
		if e.pos <= flushed {
			victim, victimPos = k, e.pos
			break
		}
		if n == 0 || e.pos < victimPos {
			victim, victimPos = k, e.pos
		}
		if n++; n == sample {
			break
		}
	}
	delete(s.m, victim)
	c.evictions.Add(1)
	if victimPos > flushed {
		for {
			cur := c.dirtyEvicted.Load()
			if victimPos <= cur || c.dirtyEvicted.CompareAndSwap(cur, victimPos) {
				break
			}
		}
	}
}

// get appends the JSON record for key to dst.
func (c *cache) get(dst []byte, key string) ([]byte, bool) {
	s := c.shard(key)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.m[key]
	switch {
	case !ok:
		return dst, false
	case e.point.Fields != nil:
		// Rendered under the lock: put updates entries in place.
		return e.point.AppendJSON(dst), true
	default:
		return append(dst, e.record...), true
	}
}

func (c *cache) len() int { return int(c.size.Load()) }

// copyFrom makes q a copy of p that the cache owns (inputs reuse their
// slices), reusing q's slices: the same key mostly comes back with the same
// shape, so an update allocates nothing.
func (q *Point) copyFrom(p *Point) {
	q.Key, q.Measurement, q.Time = p.Key, p.Measurement, p.Time
	q.Tags = append(q.Tags[:0], p.Tags...)
	q.Fields = append(q.Fields[:0], p.Fields...)
	if q.Fields == nil {
		q.Fields = []Field{}
	}
}
