package storage

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"strconv"
	"sync/atomic"
	"time"
)

// span is a slice of the flush arena.
type span struct{ off, end int }

// row is one point on its way into a point table: with width 0 into
// points_json, fields its JSON in the arena; else into points_f<width>,
// fields its values in floats.
type row struct {
	ts     int64
	series uint32
	fields span
	width  uint8
	dead   bool // rewritten by a later point of the same flush
}

type rewrite struct {
	id uint32
	ts int64
}

// latestRow is the newest point of a series in the flush; its record is
// rendered only when the flush is written, once per series.
type latestRow struct {
	series *seriesInfo
	ts     int64
	row    int
}

// flushBatch is one flush transaction being built from WAL records. It is
// reused from flush to flush so that a steady flow allocates little.
type flushBatch struct {
	gen      uint64
	arena    []byte
	floats   []float64
	widths   [maxFloatFields + 1]int // rows per width, dead ones included
	rows     []row
	rewrites []rewrite
	// rewriteIn has bit n set when a rewritten point may be in
	// points_f<n>, bit 0 for points_json: a series' points are in one or
	// the other.
	rewriteIn  uint32
	rewriteMin int64
	rewriteMax int64
	latest     []latestRow
	newSeries  []*seriesInfo
	touched    []*seriesInfo
	retyped    []*seriesInfo // series whose field types changed in this batch
	types      []seriesTypes // their field types, as of the end of the batch
	rejects    []Reject
	rejectIDs  []uint64 // identity of each reject; 0 where a later one replaces it
	records    int      // WAL records in the batch
	lastPos    uint64   // the checkpoint this flush writes
	// backwards lists the series that went back in time within this flush:
	// only their rows can hold a point written twice (see dedupe).
	backwards []*seriesInfo
	raw       rawPoint // the point being decoded
	// prev is the batch built before this one on the same series table, or
	// nil (see mayBeStored); index is this batch's own rows by point, built
	// when the next batch first asks.
	prev    *flushBatch
	index   []int32
	indexed bool

	// dedupe's scratch: a bitset of series ids and a hash table of rows.
	flagged []uint64
	seen    []int32
}

func (fb *flushBatch) reset(gen uint64, prev *flushBatch) {
	fb.gen = gen
	fb.prev = prev
	fb.indexed = false
	fb.arena = fb.arena[:0]
	fb.floats = fb.floats[:0]
	fb.widths = [maxFloatFields + 1]int{}
	fb.rows = fb.rows[:0]
	fb.rewrites = fb.rewrites[:0]
	fb.rewriteIn = 0
	fb.rewriteMin, fb.rewriteMax = math.MaxInt64, math.MinInt64
	fb.latest = fb.latest[:0]
	fb.newSeries = fb.newSeries[:0]
	fb.touched = fb.touched[:0]
	fb.retyped = fb.retyped[:0]
	fb.types = fb.types[:0]
	fb.rejects = fb.rejects[:0]
	fb.rejectIDs = fb.rejectIDs[:0]
	fb.records, fb.lastPos = 0, 0
	fb.backwards = fb.backwards[:0]
}

// seriesTable is the flusher's view of the series table.
type seriesTable struct {
	byKey  map[string]*seriesInfo
	nextID uint32
	count  *atomic.Int64 // len(byKey), for Stats; nil in tests
	limit  *seriesLimit  // told of series met in the WAL; nil in tests
}

// add decodes one WAL record into the batch.
func (fb *flushBatch) add(rec []byte, pos uint64, st *seriesTable) error {
	d := decoder{b: rec}
	d.batchHeader()
	n := d.count("point count", 4)
	for i := 0; i < n && d.err == nil; i++ {
		d.point(&fb.raw)
		if d.err != nil {
			break
		}
		if err := fb.addPoint(&fb.raw, st); err != nil {
			return fmt.Errorf("WAL record %d: %w", pos, err)
		}
	}
	nr := d.count("reject count", 6)
	for i := 0; i < nr && d.err == nil; i++ {
		fb.rejects = append(fb.rejects, d.reject())
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errCorruptRecord, len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("WAL record %d: %w", pos, d.err)
	}
	fb.records++
	fb.lastPos = pos
	return nil
}

func (fb *flushBatch) addPoint(p *rawPoint, st *seriesTable) error {
	s := st.byKey[string(p.key)]
	if s == nil {
		var err error
		if s, err = st.create(p); err != nil {
			return err
		}
		s.createdGen = fb.gen
		fb.newSeries = append(fb.newSeries, s)
	}
	if s.batchGen != fb.gen {
		s.batchGen, s.batchMax, s.latest = fb.gen, math.MinInt64, -1
		fb.touched = append(fb.touched, s)
	}
	// A point at or before the newest one of its series in this flush may
	// rewrite one of them: dedupe sorts that out once the batch is built.
	if p.time <= s.batchMax && s.backwardsGen != fb.gen {
		s.backwardsGen = fb.gen
		fb.backwards = append(fb.backwards, s)
	}
	// A point at or before the newest one already in DuckDB may rewrite a
	// stored point: it is removed in the flush transaction first.
	if p.time <= s.maxFlushed && fb.mayBeStored(s, p.time) {
		fb.rewrites = append(fb.rewrites, rewrite{s.id, p.time})
		fb.rewriteIn |= 1 | 1<<len(s.floatNames)
		fb.rewriteMin = min(fb.rewriteMin, p.time)
		fb.rewriteMax = max(fb.rewriteMax, p.time)
	}
	r := row{ts: p.time, series: s.id}
	if start := len(fb.floats); s.floatNames != nil {
		var ok bool
		if fb.floats, ok = s.appendFloats(fb.floats, p.fields, p.nfields); ok {
			r.fields, r.width = span{start, len(fb.floats)}, uint8(len(s.floatNames))
			if !s.floatKinds { // a JSON point changed a kind since
				for _, name := range s.floatNames {
					s.noteKind([]byte(name), KindFloat)
				}
				s.floatKinds = true
			}
		}
	}
	if r.width == 0 {
		start := len(fb.arena)
		fb.arena = appendFieldsJSONTyped(fb.arena, p.fields, p.nfields, s)
		r.fields = span{start, len(fb.arena)}
		s.floatKinds = false
	}
	if s.typesChanged && s.typesGen != fb.gen {
		s.typesGen = fb.gen
		fb.retyped = append(fb.retyped, s)
	}
	fb.widths[r.width]++
	fb.rows = append(fb.rows, r)
	s.batchMax = max(s.batchMax, p.time)

	// latest keeps the newest point per key; on equal times the later write.
	if s.latest < 0 || p.time >= fb.latest[s.latest].ts {
		l := latestRow{series: s, ts: p.time, row: len(fb.rows) - 1}
		if s.latest < 0 {
			s.latest = len(fb.latest)
			fb.latest = append(fb.latest, l)
		} else {
			fb.latest[s.latest] = l
		}
	}
	return nil
}

// create makes a series for a key the table has not seen.
func (st *seriesTable) create(p *rawPoint) (*seriesInfo, error) {
	if st.nextID == math.MaxUint32 {
		return nil, errors.New("series table is full (4294967295 series)")
	}
	s := &seriesInfo{id: st.nextID, key: string(p.key), maxFlushed: math.MinInt64}
	if p.canonical {
		m, tags, ok := ParseSeriesKey(s.key)
		if !ok {
			return nil, fmt.Errorf("%w: key %q is not canonical", errCorruptRecord, s.key)
		}
		s.measurement = m
		s.tagsJSON = AppendTagsJSON(nil, tags)
	} else {
		s.measurement = string(p.measurement)
		s.tagsJSON = append(s.tagsJSON, '{')
		for i, t := range p.tags {
			if i > 0 {
				s.tagsJSON = append(s.tagsJSON, ',')
			}
			s.tagsJSON = appendJSONBytes(s.tagsJSON, t[0])
			s.tagsJSON = append(s.tagsJSON, ':')
			s.tagsJSON = appendJSONBytes(s.tagsJSON, t[1])
		}
		s.tagsJSON = append(s.tagsJSON, '}')
	}
	s.floatNames = floatShape(p.fields, p.nfields)
	st.nextID++
	st.byKey[s.key] = s
	if st.limit != nil {
		// A series of the WAL backlog after a restart, accepted before it.
		st.limit.known(s.key)
	}
	if st.count != nil {
		st.count.Store(int64(len(st.byKey)))
	}
	return s, nil
}

// appendRecordJSON builds the JSON record of a point from its series and
// its fields already rendered; it matches Point.AppendJSON byte for byte.
func appendRecordJSON(dst []byte, s *seriesInfo, fields []byte, ts int64) []byte {
	dst = append(dst, `{"measurement":`...)
	dst = appendJSONString(dst, s.measurement)
	dst = append(dst, `,"tags":`...)
	dst = append(dst, s.tagsJSON...)
	dst = append(dst, `,"fields":`...)
	dst = append(dst, fields...)
	dst = append(dst, `,"time":"`...)
	dst = time.Unix(0, ts).UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, `"}`...)
}

// dedupe marks dead every row that a later row of the same series and time
// rewrites (the later write wins). Only series that went back in time
// within the batch can have such rows, so only their rows are looked at,
// through a hash table of (series, time) reused from flush to flush: a
// sender on several connections sends every series back and forth in
// time, and sorting those rows took 0.88 s of the 2.97 s spent building
// batches in a 10 s profile of the e2e TCP bench.
func (fb *flushBatch) dedupe() {
	if len(fb.backwards) == 0 {
		return
	}
	maxID := uint32(0)
	for _, s := range fb.backwards {
		maxID = max(maxID, s.id)
	}
	if need := int(maxID/64) + 1; len(fb.flagged) < need {
		fb.flagged = make([]uint64, need)
	}
	for _, s := range fb.backwards {
		fb.flagged[s.id/64] |= 1 << (s.id % 64)
	}
	defer func() {
		for _, s := range fb.backwards {
			fb.flagged[s.id/64] = 0
		}
	}()
	fb.seen = hashTable(fb.seen, len(fb.rows))
	mask := uint64(len(fb.seen) - 1)
	for i := range fb.rows {
		r := &fb.rows[i]
		if w := int(r.series / 64); w >= len(fb.flagged) || fb.flagged[w]&(1<<(r.series%64)) == 0 {
			continue
		}
		for k := pointHash(r.series, r.ts) & mask; ; k = (k + 1) & mask {
			j := fb.seen[k] - 1 // slots hold row index + 1; 0 is empty
			if j < 0 {
				fb.seen[k] = int32(i + 1)
				break
			}
			if o := &fb.rows[j]; o.series == r.series && o.ts == r.ts {
				o.dead = true
				fb.seen[k] = int32(i + 1)
				break
			}
		}
	}
}

// rejectID is the identity of a dead letter: the same input from the same
// origin is the same dead letter, as a point is the same point. A message the
// broker delivers again after a lost acknowledgement is then kept once. Zero
// is reserved.
func rejectID(r *Reject) uint64 {
	h := fnv.New64a()
	h.Write([]byte(r.Source))
	h.Write([]byte{0})
	h.Write([]byte(r.Origin))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(r.Line)))
	h.Write([]byte{0})
	h.Write(r.Payload)
	return max(h.Sum64(), 1)
}

// identifyRejects computes the rejects' identities; within the batch the
// last copy of a dead letter wins.
func (fb *flushBatch) identifyRejects() {
	last := make(map[uint64]int, len(fb.rejects))
	for i := range fb.rejects {
		id := rejectID(&fb.rejects[i])
		if j, ok := last[id]; ok {
			fb.rejectIDs[j] = 0
		}
		last[id] = i
		fb.rejectIDs = append(fb.rejectIDs, id)
	}
}

// seriesTypes is a series' field types to write with a flush: a snapshot,
// since the flusher builds the next batch while this one commits.
type seriesTypes struct {
	id    uint32
	isNew bool
	json  []byte
}

// snapshotTypes renders the field types of the series the batch created or
// retyped.
func (fb *flushBatch) snapshotTypes() {
	isNew := make(map[*seriesInfo]bool, len(fb.newSeries))
	for _, s := range fb.newSeries {
		isNew[s] = true
	}
	for _, s := range fb.retyped {
		fb.types = append(fb.types, seriesTypes{id: s.id, isNew: isNew[s], json: s.typesJSON()})
		s.typesChanged = false
	}
}

// noteKind records that field key of this series holds kind k.
func (s *seriesInfo) noteKind(key []byte, k Kind) {
	if old, ok := s.types[string(key)]; ok && old == k {
		return
	}
	if s.types == nil {
		s.types = make(map[string]Kind, 4)
	}
	s.types[string(key)] = k
	s.typesChanged = true
}

// typesJSON renders the field types as {"field":"float",…}, sorted by name.
func (s *seriesInfo) typesJSON() []byte {
	keys := make([]string, 0, len(s.types))
	for k := range s.types {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := []byte{'{'}
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, s.types[k].String())
	}
	return append(b, '}')
}

// committed records the batch's newest times in the series table, as if it
// were in DuckDB already (the flusher builds the next batch before this one
// commits; a failed commit reloads the table).
func (fb *flushBatch) committed() {
	for _, s := range fb.touched {
		s.prevFlushed, s.flushedGen = s.maxFlushed, fb.gen
		s.maxFlushed = max(s.maxFlushed, s.batchMax)
	}
}

// mayBeStored tells whether the point (s, ts), which is at or before the
// newest point of s already flushed, may be in DuckDB, so that its flush
// must remove the stored copy first. Points from several senders arrive
// interleaved: in the e2e recovery bench one in five was behind its
// series' newest flushed point, and each went through that removal (a
// staged row, and a DELETE that found nothing: 12% of a flush's time).
// The previous batch settles most of them: if it was the last to move s
// forward, every point of s in DuckDB newer than s.prevFlushed is one of
// its rows.
func (fb *flushBatch) mayBeStored(s *seriesInfo, ts int64) bool {
	prev := fb.prev
	if prev == nil || s.flushedGen != prev.gen || ts <= s.prevFlushed {
		return true
	}
	if !prev.indexed {
		prev.buildIndex()
	}
	mask := uint64(len(prev.index) - 1)
	for k := pointHash(s.id, ts) & mask; ; k = (k + 1) & mask {
		j := prev.index[k] - 1
		if j < 0 {
			return false
		}
		if r := &prev.rows[j]; r.series == s.id && r.ts == ts {
			return true
		}
	}
}

// buildIndex makes fb.index a hash table of fb's rows by (series, ts).
func (fb *flushBatch) buildIndex() {
	fb.index = hashTable(fb.index, len(fb.rows))
	mask := uint64(len(fb.index) - 1)
	for i := range fb.rows {
		r := &fb.rows[i]
		k := pointHash(r.series, r.ts) & mask
		for fb.index[k] != 0 {
			k = (k + 1) & mask
		}
		fb.index[k] = int32(i + 1) // row index + 1; 0 is empty
	}
	fb.indexed = true
}

// hashTable returns an empty open-addressing table for n entries, reusing t.
func hashTable(t []int32, n int) []int32 {
	size := 1024
	for size < 2*n {
		size *= 2
	}
	if cap(t) < size {
		return make([]int32, size)
	}
	t = t[:size]
	clear(t)
	return t
}

func pointHash(series uint32, ts int64) uint64 {
	return (uint64(ts)*0x9E3779B97F4A7C15 ^ uint64(series)*0xC2B2AE3D27D4EB4F) >> 20
}
