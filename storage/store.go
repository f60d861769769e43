// Package storage is fpagent's WAL-first store: every batch is made durable in
// the write-ahead log before it is acknowledged, is readable at once from a
// bounded cache of the latest record per key, and reaches DuckDB in batches,
// exactly once, whatever crashes.
//
// The WAL is the queue. One flusher goroutine reads it from the checkpoint
// kept in DuckDB and commits each batch of points together with the WAL
// position it reached in one transaction; segments wholly below the
// checkpoint are then deleted. Recovery after a crash is the same flusher
// catching up. Unflushed data lives on disk, so memory does not grow with the
// backlog; when the backlog reaches its disk budget, stores push back.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fpagent/fpagent/wal"
)

// Config configures a Store. Zero values take the defaults of DefaultConfig.
type Config struct {
	BaseDir       string        // WAL directory (the seed's base_dir); default "./storage"
	MaxWALSize    int64         // rotate a WAL segment at this size (max_wal_size); default 10 MiB
	MaxWALAge     time.Duration // rotate a WAL segment at this age (max_wal_age_seconds); default 300s
	NoPreallocate bool          // do not zero-fill WAL segments ahead of use (wal_preallocate: false)
	BatchSize     int           // flush once this many readings are pending (batch_size); default 1000
	FlushInterval time.Duration // flush at least this often when anything is pending; default 30s
	// MinFlushInterval spaces the flushes that BatchSize starts: one starts
	// no sooner than this after the previous one started (a backlog, Close,
	// ForceFlush and backpressure are not held back); default 1s, negative:
	// no spacing. Each flush costs DuckDB a fixed ~15-25 ms (the latest rows
	// of its series, COMMIT), which at one reading per MQTT message and a
	// flush every 1000 was 40% of the agent's CPU.
	MinFlushInterval time.Duration
	MaxFlushRows     int            // readings in one flush transaction at most (bounds its memory: two batches of ~100 B a reading); default 125000
	Sync             wal.SyncPolicy // "always" (default), "interval" or "none"
	SyncInterval     time.Duration  // with Sync "interval"; default 100ms
	CacheMaxKeys     int            // keys held in the cache; default 100000
	MaxSeries        int            // distinct series accepted; points of further series become dead letters; default 100000
	DiskBudget       int64          // unflushed WAL bytes before stores push back; default 1 GiB
	StoreTimeout     time.Duration  // how long a store waits under backpressure; default 5s
	MemoryLimit      string         // DuckDB memory_limit; default "256MB"
	Threads          int            // DuckDB threads; default 1 (see DefaultConfig)
	FlushNice        int            // nice value (0-19) of the thread DuckDB's flush work runs on; 0 leaves it alone (the agent's default is 10)
	Logger           *slog.Logger   // nil: discard
	Registerer       prometheus.Registerer
	Feeds            []FeedConfig // readers of the WAL besides the flusher (outputs)
	CursorDir        string       // where feeds keep their cursors; default <parent of BaseDir>/outputs
	ExportDir        string       // where Export writes Parquet files; "" = no export

	// flushHook, when set (tests only), runs before each flush transaction;
	// an error fails the flush as DuckDB would.
	flushHook func() error
}

// DefaultConfig returns the defaults, the seed's where it had them.
func DefaultConfig() Config {
	return Config{
		BaseDir:          "./storage",
		MaxWALSize:       10 << 20,
		MaxWALAge:        300 * time.Second,
		BatchSize:        1000,
		FlushInterval:    30 * time.Second,
		MaxFlushRows:     125000,
		MinFlushInterval: time.Second,
		Sync:             wal.SyncAlways,
		SyncInterval:     100 * time.Millisecond,
		CacheMaxKeys:     100000,
		MaxSeries:        100000,
		DiskBudget:       1 << 30,
		StoreTimeout:     5 * time.Second,
		MemoryLimit:      "256MB",
		// On two cores a second DuckDB thread competes with the flusher's
		// own goroutines: BenchmarkStoreAndFlush 660-693k readings/s with
		// one, 610-611k with two.
		Threads: 1,
	}
}

func (c *Config) applyDefaults() {
	d := DefaultConfig()
	orDefault(&c.BaseDir, d.BaseDir)
	orDefault(&c.MaxWALSize, d.MaxWALSize)
	orDefault(&c.MaxWALAge, d.MaxWALAge)
	orDefault(&c.BatchSize, d.BatchSize)
	orDefault(&c.FlushInterval, d.FlushInterval)
	switch {
	case c.MinFlushInterval == 0:
		c.MinFlushInterval = d.MinFlushInterval
	case c.MinFlushInterval < 0:
		c.MinFlushInterval = 0
	}
	orDefault(&c.MaxFlushRows, d.MaxFlushRows)
	orDefault(&c.Sync, d.Sync)
	orDefault(&c.SyncInterval, d.SyncInterval)
	orDefault(&c.CacheMaxKeys, d.CacheMaxKeys)
	orDefault(&c.MaxSeries, d.MaxSeries)
	orDefault(&c.DiskBudget, d.DiskBudget)
	orDefault(&c.StoreTimeout, d.StoreTimeout)
	orDefault(&c.MemoryLimit, d.MemoryLimit)
	orDefault(&c.Threads, d.Threads)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// orDefault sets *v to def when *v is zero or, for numbers, negative.
func orDefault[T int | int64 | time.Duration | string | wal.SyncPolicy](v *T, def T) {
	var zero T
	if *v <= zero {
		*v = def
	}
}

// Store is the WAL-first store. Its methods are safe for concurrent use.
type Store struct {
	cfg    Config
	dbPath string
	log    *slog.Logger
	wal    *wal.Log
	db     *sql.DB
	points *pointsFunc // the flush's way into the points table
	cache  *cache
	series *seriesLimit
	feeds  []*Feed

	// inflight counts stores under way, so Close waits for them.
	inflight sync.WaitGroup
	closeMu  sync.RWMutex
	closed   bool

	checkpoint atomic.Uint64 // WAL position DuckDB has everything up to
	ready      atomic.Bool   // recovery is done
	kick       chan struct{} // wakes the flusher
	urgent     atomic.Bool   // the wake-up is not to wait for MinFlushInterval
	stop       chan struct{} // closed by Close
	abandoned  atomic.Bool   // tests: stop without the final flush, as a crash would
	done       chan struct{} // closed when the flusher has exited

	// flushed is closed and replaced after every flush attempt; waiters
	// (backpressure, ForceFlush, Get) re-check their condition then.
	flushMu     sync.Mutex
	flushed     chan struct{}
	lastFlush   flushResult
	flushErr    error
	moved       chan struct{} // closed and replaced when a feed's cursor moves
	pendingPts  atomic.Int64  // readings stored since the last flush started
	seriesCount atomic.Int64  // series the flusher knows, set as it creates them
	ages        ageTrack
	counters    counters
	recoveredAt time.Time
}

type flushResult struct {
	at       time.Time
	duration time.Duration
	points   int
	records  int
}

type counters struct {
	storedPoints  atomic.Uint64
	storedBatches atomic.Uint64
	flushedPoints atomic.Uint64
	flushes       atomic.Uint64
	flushErrors   atomic.Uint64
	deadLetters   atomic.Uint64
	rewrites      atomic.Uint64
	backpressure  atomic.Uint64
	storeErrors   atomic.Uint64
}

// Open opens (or creates) the store: the WAL in cfg.BaseDir and the DuckDB
// database at dbPath. Anything the WAL holds beyond DuckDB's checkpoint is
// flushed in the background; Ready tells when that is done. Stores are
// accepted at once.
func Open(dbPath string, cfg Config) (*Store, error) {
	cfg.applyDefaults()
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o750); err != nil {
		return nil, fmt.Errorf("create directory for %s: %w", dbPath, err)
	}
	// The WAL first: its lock keeps a second agent away from the database too.
	log, err := wal.Open(cfg.BaseDir, wal.Options{
		MaxSegmentSize: cfg.MaxWALSize,
		MaxSegmentAge:  cfg.MaxWALAge,
		Sync:           cfg.Sync,
		SyncInterval:   cfg.SyncInterval,
		Preallocate:    !cfg.NoPreallocate,
		Logger:         cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("open WAL: %w", err)
	}
	db, err := openDuckDB(dbPath, cfg.MemoryLimit, cfg.Threads, cfg.ExportDir)
	if err != nil {
		log.Close()
		return nil, err
	}
	points, err := registerPointsFunc(context.Background(), db)
	if err != nil {
		db.Close()
		log.Close()
		return nil, fmt.Errorf("DuckDB database %s: %w", dbPath, err)
	}
	cache := newCache(cfg.CacheMaxKeys)
	s := &Store{
		cfg:     cfg,
		dbPath:  dbPath,
		log:     cfg.Logger,
		wal:     log,
		db:      db,
		points:  points,
		cache:   cache,
		series:  newSeriesLimit(cfg.MaxSeries, cache.seed),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		flushed: make(chan struct{}),
		moved:   make(chan struct{}),
	}
	ctx := context.Background()
	cp, err := readCheckpoint(ctx, db)
	if err == nil {
		err = s.openFeeds()
	}
	if err == nil {
		// DuckDB or an output has records the WAL lost (sync=none and a
		// power loss): never hand out their positions again, or the new
		// records would be skipped as already flushed or sent.
		ahead := cp
		for _, f := range s.feeds {
			ahead = max(ahead, f.cursor.Load())
		}
		if uint64(log.LastPosition()) < ahead {
			s.log.Warn("WAL ends before the DuckDB checkpoint or an output's cursor; continuing after it",
				"wal_last_position", log.LastPosition(), "checkpoint", cp, "continue_after", ahead)
			err = log.AdvanceTo(wal.Position(ahead))
		}
	}
	if err != nil {
		db.Close()
		log.Close()
		return nil, err
	}
	s.checkpoint.Store(cp)
	st, w, err := s.openFlushState(ctx)
	if err != nil {
		db.Close()
		log.Close()
		return nil, err
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s); err != nil {
			w.close()
			db.Close()
			log.Close()
			return nil, fmt.Errorf("register storage metrics: %w", err)
		}
	}
	go s.flusher(st, w)
	return s, nil
}

// openFlushState loads the series table and opens the writer connection.
func (s *Store) openFlushState(ctx context.Context) (*seriesTable, *writer, error) {
	byKey, next, err := loadSeries(ctx, s.db)
	if err != nil {
		return nil, nil, err
	}
	s.seriesCount.Store(int64(len(byKey)))
	for key := range byKey {
		s.series.known(key)
	}
	w, err := newWriter(ctx, s.db, s.points)
	if err != nil {
		return nil, nil, err
	}
	return &seriesTable{byKey: byKey, nextID: next, count: &s.seriesCount, limit: s.series}, w, nil
}

// Ready reports whether recovery is done, and if not, why.
func (s *Store) Ready() (bool, string) {
	if s.ready.Load() {
		return true, ""
	}
	behind, _ := s.wal.Behind(wal.Position(s.checkpoint.Load()))
	return false, fmt.Sprintf("recovering: %d WAL records behind the DuckDB checkpoint", behind)
}

// Store stores one point; see WriteBatch.
func (s *Store) Store(ctx context.Context, p Point) error {
	return s.WriteBatch(ctx, &Batch{Points: []Point{p}})
}

// encodeBufs recycles record buffers between stores.
var encodeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// WriteBatch makes every point and reject of b durable in the WAL under the
// sync policy, puts the points in the cache, and returns. On error nothing of
// b was stored. It normalizes b's points in place. It does not keep b.
func (s *Store) WriteBatch(ctx context.Context, b *Batch) error {
	return s.writeBatch(ctx, b, true)
}

// DeadLetter stores rejects for the dead-letter table without waiting for
// room under the disk budget: an output over its budget must still be able
// to set aside what the remote side refused, or it could never catch up.
func (s *Store) DeadLetter(ctx context.Context, rejects []Reject) error {
	return s.writeBatch(ctx, &Batch{Source: "output", Rejects: rejects}, false)
}

func (s *Store) writeBatch(ctx context.Context, b *Batch, wait bool) error {
	if len(b.Points) == 0 && len(b.Rejects) == 0 {
		return nil
	}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	s.inflight.Add(1)
	s.closeMu.RUnlock()
	defer s.inflight.Done()

	for i := range b.Points {
		p := &b.Points[i]
		if err := validatePoint(p); err != nil {
			return fmt.Errorf("point %d: %w", i, err)
		}
		if !b.Normalized {
			p.Normalize()
		}
	}
	keys := batchKeysPool.Get().(*batchKeys)
	defer keys.release()
	keys.group(b.Points, s.cache.seed, s.series.admit)
	s.series.apply(b, keys)
	if wait {
		if err := s.waitForRoom(ctx); err != nil {
			return err
		}
	}
	bufp := encodeBufs.Get().(*[]byte)
	rec := encodeBatch((*bufp)[:0], b)
	pos, err := s.wal.Append(rec)
	if cap(rec) <= 4<<20 {
		*bufp = rec[:0]
		encodeBufs.Put(bufp)
	}
	if err != nil {
		s.counters.storeErrors.Add(1)
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			s.counters.backpressure.Add(1)
			s.kickNow() // flushing frees WAL segments
			return &BackpressureError{Reason: "the disk holding the WAL is full", RetryAfter: 5 * time.Second, Err: err}
		}
		return fmt.Errorf("append to WAL: %w", err)
	}
	flushed := s.checkpoint.Load()
	// The cache keeps the newest point per key: only that one of each.
	keys.pickNewest(b.Points)
	for _, j := range keys.used {
		if g := &keys.slots[j]; g.best >= 0 {
			s.cache.put(&b.Points[g.best], g.hash, uint64(pos), flushed)
		}
	}
	s.ages.note(uint64(pos))
	s.counters.storedPoints.Add(uint64(len(b.Points)))
	s.counters.storedBatches.Add(1)
	if s.pendingPts.Add(int64(len(b.Points)+len(b.Rejects))) >= int64(s.cfg.BatchSize) {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

func validatePoint(p *Point) error {
	switch {
	case p.Measurement == "":
		return errors.New("measurement is empty")
	case len(p.Fields) == 0:
		return fmt.Errorf("measurement %q has no fields", p.Measurement)
	case p.Time < minTime || p.Time > maxTime:
		return fmt.Errorf("time %d is outside what DuckDB's TIMESTAMP_NS holds (years 1678 to 2261)", p.Time)
	}
	for _, f := range p.Fields {
		if f.Value.Kind < KindFloat || f.Value.Kind > KindBool {
			return fmt.Errorf("field %q has no value", f.Key)
		}
	}
	return nil
}

// The range of TIMESTAMP_NS the driver accepts (years 1678 to 2261).
var (
	minTime = time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	maxTime = time.Date(2261, 12, 31, 23, 59, 59, 0, time.UTC).UnixNano()
)

// waitForRoom blocks while the unflushed backlog is over the disk budget, up
// to StoreTimeout, and then refuses with a BackpressureError.
func (s *Store) waitForRoom(ctx context.Context) error {
	var deadline <-chan time.Time
	for {
		_, backlog := s.wal.Behind(wal.Position(s.checkpoint.Load()))
		reason := ""
		if backlog >= s.cfg.DiskBudget {
			reason = fmt.Sprintf("unflushed data (%d bytes) reached disk_budget (%d bytes)", backlog, s.cfg.DiskBudget)
		}
		if s.feedsMayBeOver() {
			for _, f := range s.feeds {
				if why := f.checkBudget(); why != "" && reason == "" {
					reason = why
				}
			}
		}
		if reason == "" {
			return nil
		}
		if deadline == nil {
			t := time.NewTimer(s.cfg.StoreTimeout)
			defer t.Stop()
			deadline = t.C
			s.kickNow()
		}
		s.flushMu.Lock()
		ch, moved := s.flushed, s.moved
		s.flushMu.Unlock()
		select {
		case <-ch:
		case <-moved:
		case <-deadline:
			s.counters.backpressure.Add(1)
			return &BackpressureError{Reason: reason, RetryAfter: time.Second}
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stop:
			return ErrClosed
		}
	}
}

// kickNow wakes the flusher for a flush that must not wait for
// MinFlushInterval.
func (s *Store) kickNow() {
	s.urgent.Store(true)
	s.kickFlusher()
}

func (s *Store) kickFlusher() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Get returns the latest JSON record for key: from the cache, or from
// DuckDB's latest table for a key the cache does not hold.
func (s *Store) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if rec, ok := s.cache.get(make([]byte, 0, 256), key); ok {
		return rec, true, nil
	}
	// Until recovery is done, or while an evicted record is still only in
	// the WAL, DuckDB may not have the latest: flush first.
	if !s.ready.Load() || s.cache.dirtyEvicted.Load() > s.checkpoint.Load() {
		if err := s.ForceFlush(ctx); err != nil {
			return nil, false, fmt.Errorf("get %q: %w", key, err)
		}
		if rec, ok := s.cache.get(make([]byte, 0, 256), key); ok {
			return rec, true, nil
		}
	}
	var rec string
	err := s.db.QueryRowContext(ctx, `SELECT record::VARCHAR FROM latest WHERE key = ?`, key).Scan(&rec)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("get %q from DuckDB: %w", key, err)
	}
	return []byte(rec), true, nil
}

// ForceFlush returns once everything stored before the call is in DuckDB, or
// with the error of a flush attempt that failed after the call.
func (s *Store) ForceFlush(ctx context.Context) error {
	target := uint64(s.wal.LastPosition())
	for {
		s.flushMu.Lock()
		ch := s.flushed
		s.flushMu.Unlock()
		if s.checkpoint.Load() >= target {
			return nil
		}
		s.kickNow()
		select {
		case <-ch:
			s.flushMu.Lock()
			err := s.flushErr
			s.flushMu.Unlock()
			if err != nil && s.checkpoint.Load() < target {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			if s.checkpoint.Load() >= target {
				return nil
			}
			return ErrClosed
		}
	}
}

// DB returns the pool on the DuckDB database, for reads.
func (s *Store) DB() *sql.DB { return s.db }

// Close stops accepting stores, waits for those under way, flushes
// everything to DuckDB, removes the WAL segments it covers, and closes.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.closeMu.Unlock()
	s.inflight.Wait()
	close(s.stop)
	<-s.done
	var errs []error
	s.flushMu.Lock()
	if s.flushErr != nil && s.checkpoint.Load() < uint64(s.wal.LastPosition()) {
		errs = append(errs, fmt.Errorf("final flush: %w; the WAL keeps the data for the next start", s.flushErr))
	}
	s.flushMu.Unlock()
	if s.cfg.Registerer != nil {
		s.cfg.Registerer.Unregister(s)
	}
	errs = append(errs, s.wal.Close(), s.db.Close())
	return errors.Join(errs...)
}

// abandon stops the store the way a crash would, without the final flush
// and without removing WAL segments. For tests.
func (s *Store) abandon() {
	s.closeMu.Lock()
	s.closed = true
	s.closeMu.Unlock()
	s.inflight.Wait()
	s.abandoned.Store(true)
	close(s.stop)
	<-s.done
	if s.cfg.Registerer != nil {
		s.cfg.Registerer.Unregister(s)
	}
	s.wal.Close()
	s.db.Close()
}

// flusher is the one goroutine that moves the WAL into DuckDB. It builds
// each transaction from the WAL while a second goroutine (commitLoop) has
// DuckDB commit the previous one, so that decoding and DuckDB's work overlap;
// at most one transaction is in flight, and its outcome is settled before the
// next is handed over.
func (s *Store) flusher(st *seriesTable, w *writer) {
	defer close(s.done)
	ctx := context.Background()
	jobs := make(chan commitJob)
	results := make(chan commitResult)
	go s.commitLoop(ctx, jobs, results)
	p := &pipeline{jobs: jobs, results: results}
	defer func() {
		close(jobs)
		p.closeReader()
		w.close()
	}()
	backoff := time.Duration(0)
	timer := time.NewTimer(0) // catch up at once: that is recovery
	defer timer.Stop()
	stopping := false
	var lastStart time.Time
	for {
		if !stopping {
			select {
			case <-timer.C:
			case <-s.kick:
				stopping = s.spaceFlush(lastStart)
			case <-s.stop:
				stopping = true
			}
		}
		if stopping && s.abandoned.Load() {
			return
		}
		s.urgent.Store(false)
		lastStart = time.Now()
		err := s.drain(p, st, w, stopping)
		if err == nil {
			backoff = 0
			if !s.ready.Load() {
				s.finishRecovery(ctx)
			}
			if stopping {
				s.removeCovered(true)
				return
			}
			timer.Reset(s.cfg.FlushInterval)
			continue
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 30*time.Second)
		s.counters.flushErrors.Add(1)
		s.log.Error("flush to DuckDB failed; the WAL keeps the data and the flush is retried",
			"error", err, "checkpoint", s.checkpoint.Load(), "retry_in", backoff)
		if stopping {
			return
		}
		// Start again from the checkpoint, with what the failed transaction
		// may have left half-known rebuilt from DuckDB.
		p.closeReader()
		w.close()
		for {
			st2, w2, rerr := s.openFlushState(ctx)
			if rerr == nil {
				st, w = st2, w2
				break
			}
			s.log.Error("reopening the flush state failed", "error", rerr)
			select {
			case <-time.After(time.Second):
			case <-s.stop:
				return
			}
		}
		timer.Reset(backoff)
	}
}

// spaceFlush holds a flush that pending readings asked for until
// MinFlushInterval after the last one started, unless an urgent request
// comes (see kickNow) or a whole transaction's worth (MaxFlushRows) is
// pending: spacing is for small flushes, and a burst after a flush (the
// one at start-up, say) is a backlog. It reports whether Close came
// meanwhile.
func (s *Store) spaceFlush(lastStart time.Time) (stopping bool) {
	for !s.urgent.Load() && s.pendingPts.Load() < int64(s.cfg.MaxFlushRows) {
		wait := s.cfg.MinFlushInterval - time.Since(lastStart)
		if wait <= 0 {
			return false
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.kick:
		case <-s.stop:
			stopping = true
		}
		t.Stop()
		if stopping {
			return true
		}
	}
	return false
}

// pipeline is the flusher's state between transactions: a reader that runs
// ahead of the checkpoint by at most the transaction in flight, and two
// batches that take turns.
type pipeline struct {
	jobs     chan<- commitJob
	results  <-chan commitResult
	reader   *wal.Reader
	bufs     [2]flushBatch
	next     int
	gen      uint64
	inflight bool
}

func (p *pipeline) closeReader() {
	if p.reader != nil {
		p.reader.Close()
		p.reader = nil
	}
}

type commitJob struct {
	fb    *flushBatch
	w     *writer
	start time.Time
}

type commitResult struct {
	commitJob
	err error
}

// commitLoop commits the transactions the flusher hands it, one at a time.
//
// DuckDB does a flush's work on this goroutine's thread (with threads 1,
// the default), a core's worth for a tenth of a second at a time; at a
// lower priority it yields to the inputs, whose acknowledgements would
// otherwise wait behind it.
func (s *Store) commitLoop(ctx context.Context, jobs <-chan commitJob, results chan<- commitResult) {
	if err := lowerPriority(s.cfg.FlushNice); err != nil {
		s.log.Warn("cannot lower the priority of the DuckDB flush thread; it competes with the inputs at theirs",
			"nice", s.cfg.FlushNice, "error", err)
	}
	for job := range jobs {
		var err error
		if s.cfg.flushHook != nil {
			err = s.cfg.flushHook()
		}
		if err == nil {
			err = job.w.commit(ctx, job.fb)
		}
		results <- commitResult{job, err}
	}
}

// drain flushes until the WAL is caught up, or a transaction fails. It
// returns with no transaction in flight.
// When it has caught up with the WAL (and all is false) it builds the next
// transaction while one commits only once enough readings arrived (see
// awaitMore): otherwise a steady trickle would be written in many tiny
// transactions, each paying DuckDB's fixed cost of a commit. A backlog (a
// full transaction) is drained without pause.
func (s *Store) drain(p *pipeline, st *seriesTable, w *writer, all bool) error {
	for {
		if p.reader == nil {
			from := s.checkpoint.Load() + 1
			r, err := s.wal.NewReader(wal.Position(from))
			if err != nil {
				return s.flushDone(fmt.Errorf("read WAL from %d: %w", from, err))
			}
			p.reader = r
		}
		fb, prev := &p.bufs[p.next], &p.bufs[p.next^1]
		if prev.gen == 0 || prev.gen != p.gen {
			prev = nil // not the batch just before this one
		}
		p.gen++
		start := time.Now()
		berr := s.build(fb, p.gen, prev, p.reader, st)
		if p.inflight {
			p.inflight = false
			if err := s.settle(<-p.results); err != nil {
				return err
			}
		}
		if berr != nil {
			return s.flushDone(berr)
		}
		if fb.records == 0 {
			s.flushDone(nil)
			return nil
		}
		p.jobs <- commitJob{fb: fb, w: w, start: start}
		p.inflight = true
		p.next ^= 1
		if all || len(fb.rows) >= s.cfg.MaxFlushRows {
			continue
		}
		if done, err := s.awaitMore(p, max(s.cfg.BatchSize, len(fb.rows))); done {
			return err
		}
	}
}

// awaitMore waits, while a transaction commits, until want more readings
// were stored (then the next transaction is built at once, overlapping the
// commit, and it is no smaller than the one committing) or the commit ends
// first (then the flush is done for now; the next starts when batch_size
// readings are pending or at flush_interval).
func (s *Store) awaitMore(p *pipeline, want int) (done bool, err error) {
	poll := time.NewTicker(2 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case res := <-p.results:
			p.inflight = false
			return true, s.settle(res)
		case <-poll.C:
			if s.pendingPts.Load() >= int64(want) {
				return false, nil
			}
		case <-s.stop:
			return false, nil // Close: drain what is left
		}
	}
}

// build reads up to MaxFlushRows readings from the WAL into fb; prev is the
// batch built before it, or nil.
func (s *Store) build(fb *flushBatch, gen uint64, prev *flushBatch, r *wal.Reader, st *seriesTable) error {
	s.pendingPts.Store(0)
	fb.reset(gen, prev)
	for len(fb.rows) < s.cfg.MaxFlushRows {
		rec, pos, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read WAL after %d: %w", fb.lastPos, err)
		}
		if err := fb.add(rec, uint64(pos), st); err != nil {
			// A record that passed the WAL checksum but does not decode
			// cannot be retried into shape: keep it as a dead letter.
			s.log.Error("WAL record does not decode; kept in dead_letters", "position", pos, "error", err)
			fb.rejects = append(fb.rejects, Reject{Time: time.Now().UnixNano(), Source: "wal",
				Origin: fmt.Sprintf("position %d", pos), Reason: err.Error(), Payload: append([]byte(nil), rec...)})
			fb.lastPos = uint64(pos)
			fb.records++
		}
	}
	fb.dedupe()
	fb.identifyRejects()
	fb.snapshotTypes()
	// The next transaction is built before this one commits: it must see
	// this one's points as stored already, or a rewrite of one of them would
	// be appended twice. If the commit fails, the series state is reloaded.
	fb.committed()
	return nil
}

// settle publishes a committed transaction, or returns why it failed.
func (s *Store) settle(res commitResult) error {
	if res.err != nil {
		return s.flushDone(res.err)
	}
	fb := res.fb
	live := 0
	for i := range fb.rows {
		if !fb.rows[i].dead {
			live++
		}
	}
	s.checkpoint.Store(fb.lastPos)
	s.counters.flushedPoints.Add(uint64(live))
	s.counters.rewrites.Add(uint64(len(fb.rewrites) + len(fb.rows) - live))
	s.counters.deadLetters.Add(uint64(len(fb.rejects)))
	s.counters.flushes.Add(1)
	s.ages.flushed(fb.lastPos)
	s.flushMu.Lock()
	s.lastFlush = flushResult{at: time.Now(), duration: time.Since(res.start), points: live, records: fb.records}
	s.flushMu.Unlock()
	s.removeCovered(false)
	s.flushDone(nil)
	return nil
}

// flushDone publishes the outcome of a flush attempt to the waiters.
func (s *Store) flushDone(err error) error {
	s.flushMu.Lock()
	s.flushErr = err
	close(s.flushed)
	s.flushed = make(chan struct{})
	s.flushMu.Unlock()
	return err
}

// feedMoved wakes the stores waiting for a feed to catch up.
func (s *Store) feedMoved() {
	s.flushMu.Lock()
	close(s.moved)
	s.moved = make(chan struct{})
	s.flushMu.Unlock()
}

// removeCovered deletes the WAL segments that DuckDB and every feed have
// everything of.
func (s *Store) removeCovered(final bool) {
	cp := wal.Position(s.checkpoint.Load())
	if final && cp >= s.wal.LastPosition() {
		// Seal the active segment so that it can go too.
		if err := s.wal.Rotate(); err != nil {
			s.log.Warn("sealing the active WAL segment failed", "error", err)
		}
	}
	for _, f := range s.feeds {
		cp = min(cp, f.Cursor())
	}
	if _, err := s.wal.RemoveBefore(cp + 1); err != nil {
		s.log.Warn("removing flushed WAL segments failed; retried after the next flush", "error", err)
	}
}

// finishRecovery fills the cache from DuckDB once the WAL is caught up.
func (s *Store) finishRecovery(ctx context.Context) {
	rows, err := s.db.QueryContext(ctx, `SELECT key, ts, record::VARCHAR FROM latest ORDER BY ts DESC LIMIT ?`, s.cfg.CacheMaxKeys)
	if err != nil {
		s.log.Warn("loading the cache from DuckDB failed; gets fall through to DuckDB", "error", err)
	} else {
		defer rows.Close()
		n := 0
		for rows.Next() {
			var key, rec string
			var ts time.Time
			if err := rows.Scan(&key, &ts, &rec); err != nil {
				s.log.Warn("loading the cache from DuckDB failed", "error", err)
				break
			}
			if s.cache.putRecord(key, ts.UnixNano(), []byte(rec)) {
				n++
			}
		}
		s.log.Info("cache loaded from DuckDB", "keys", n)
	}
	s.recoveredAt = time.Now()
	s.ready.Store(true)
	s.log.Info("storage ready", "checkpoint", s.checkpoint.Load())
}

// ageTrack remembers when WAL positions were written, coarsely, to tell the
// age of the oldest unflushed record.
type ageTrack struct {
	mu      sync.Mutex
	samples []ageSample
}

type ageSample struct {
	pos uint64
	at  time.Time
}

const maxAgeSamples = 4096

func (a *ageTrack) note(pos uint64) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	n := len(a.samples)
	if n == 0 || (n < maxAgeSamples && now.Sub(a.samples[n-1].at) >= 100*time.Millisecond) {
		a.samples = append(a.samples, ageSample{pos, now})
	}
}

func (a *ageTrack) flushed(cp uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	i := 0
	for i < len(a.samples) && a.samples[i].pos <= cp {
		i++
	}
	a.samples = append(a.samples[:0], a.samples[i:]...)
}

// oldest is the age of the oldest sample still unflushed.
func (a *ageTrack) oldest() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.samples) == 0 {
		return 0
	}
	return time.Since(a.samples[0].at)
}
