package storage

import (
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fpagent/fpagent/wal"
)

// Stats is a snapshot of the store. The first six fields keep the names of
// the seed's get_stats.
type Stats struct {
	CacheSize        int      `json:"cache_size"`        // keys in the cache
	PendingWrites    uint64   `json:"pending_writes"`    // WAL records (store calls) not yet in DuckDB
	CurrentWALSize   int64    `json:"current_wal_size"`  // bytes in the active WAL segment
	CurrentWALCount  int      `json:"current_wal_count"` // records in the active WAL segment
	WALFilesCount    int      `json:"wal_files_count"`   // WAL segment files
	WALSequence      uint64   `json:"wal_sequence"`      // sequence number of the active segment
	WALLastPosition  uint64   `json:"wal_last_position"` // position of the newest WAL record
	Checkpoint       uint64   `json:"checkpoint"`        // WAL position DuckDB holds everything up to
	BacklogBytes     int64    `json:"backlog_bytes"`     // WAL bytes not yet in DuckDB
	DiskBudgetBytes  int64    `json:"disk_budget_bytes"` // the bound on BacklogBytes
	OldestUnflushed  float64  `json:"oldest_unflushed_age_seconds"`
	StoredPoints     uint64   `json:"stored_points_total"`
	StoredBatches    uint64   `json:"stored_batches_total"`
	FlushedTotal     uint64   `json:"flushed_total"` // points written to DuckDB since start
	Flushes          uint64   `json:"flushes_total"`
	FlushErrors      uint64   `json:"flush_errors_total"`
	LastFlushSeconds float64  `json:"last_flush_duration_seconds"`
	LastFlushPoints  int      `json:"last_flush_points"`
	LastFlushAt      string   `json:"last_flush_at,omitempty"`
	Rewrites         uint64   `json:"rewritten_points_total"` // points that replaced a stored point
	DeadLetters      uint64   `json:"dead_letters_total"`
	Backpressure     uint64   `json:"backpressure_total"` // stores refused under backpressure
	StoreErrors      uint64   `json:"store_errors_total"`
	CacheEvictions   uint64   `json:"cache_evictions_total"`
	Series           int64    `json:"series"`
	SeriesLimit      int64    `json:"series_limit"`
	SeriesRefused    uint64   `json:"series_limit_refused_points_total"` // points dead-lettered for starting a series past the limit
	DuckDBFileBytes  int64    `json:"duckdb_file_bytes"`
	Ready            bool     `json:"ready"`
	WAL              WALStats `json:"wal"`
}

// WALStats are the WAL's own figures.
type WALStats struct {
	FirstPosition uint64  `json:"first_position"`
	TotalBytes    int64   `json:"total_bytes"`
	Fsyncs        uint64  `json:"fsyncs_total"`
	FsyncSeconds  float64 `json:"fsync_seconds_total"`
	LastFsyncSecs float64 `json:"last_fsync_seconds"`
	MaxFsyncSecs  float64 `json:"max_fsync_seconds"`
	Corruptions   uint64  `json:"corruptions_total"`
	Gaps          uint64  `json:"gaps_total"`
	WriteErrors   uint64  `json:"write_errors_total"`
	Preallocated  uint64  `json:"preallocated_segments_total"`
	PreallocFails uint64  `json:"preallocation_failures_total"`
}

// Stats returns a snapshot of the store's figures.
func (s *Store) Stats() Stats {
	ws := s.wal.Stats()
	cp := s.checkpoint.Load()
	records, bytes := s.wal.Behind(wal.Position(cp))
	s.flushMu.Lock()
	lf := s.lastFlush
	s.flushMu.Unlock()
	st := Stats{
		CacheSize:        s.cache.len(),
		PendingWrites:    records,
		CurrentWALSize:   ws.ActiveSegmentSize,
		CurrentWALCount:  ws.ActiveSegmentRecords,
		WALFilesCount:    ws.Segments,
		WALSequence:      ws.ActiveSegmentSeq,
		WALLastPosition:  uint64(ws.LastPosition),
		Checkpoint:       cp,
		BacklogBytes:     bytes,
		DiskBudgetBytes:  s.cfg.DiskBudget,
		OldestUnflushed:  s.ages.oldest().Seconds(),
		StoredPoints:     s.counters.storedPoints.Load(),
		StoredBatches:    s.counters.storedBatches.Load(),
		FlushedTotal:     s.counters.flushedPoints.Load(),
		Flushes:          s.counters.flushes.Load(),
		FlushErrors:      s.counters.flushErrors.Load(),
		LastFlushSeconds: lf.duration.Seconds(),
		LastFlushPoints:  lf.points,
		Rewrites:         s.counters.rewrites.Load(),
		DeadLetters:      s.counters.deadLetters.Load(),
		Backpressure:     s.counters.backpressure.Load(),
		StoreErrors:      s.counters.storeErrors.Load(),
		CacheEvictions:   s.cache.evictions.Load(),
		Series:           s.seriesCount.Load(),
		SeriesLimit:      s.series.max,
		SeriesRefused:    s.series.refused.Load(),
		Ready:            s.ready.Load(),
		WAL: WALStats{
			FirstPosition: uint64(ws.FirstPosition),
			TotalBytes:    ws.TotalBytes,
			Fsyncs:        ws.Fsyncs,
			FsyncSeconds:  ws.FsyncTotal.Seconds(),
			LastFsyncSecs: ws.LastFsync.Seconds(),
			MaxFsyncSecs:  ws.MaxFsync.Seconds(),
			Corruptions:   ws.Corruptions,
			Gaps:          ws.Gaps,
			WriteErrors:   ws.WriteErrors,
			Preallocated:  ws.Preallocated,
			PreallocFails: ws.PreallocFailures,
		},
	}
	if !lf.at.IsZero() {
		st.LastFlushAt = lf.at.UTC().Format(time.RFC3339Nano)
	}
	if fi, err := os.Stat(s.dbPath); err == nil {
		st.DuckDBFileBytes = fi.Size()
	}
	return st
}

// The metrics, built from Stats at scrape time so that there is one source
// of truth and nothing on the hot path.
var (
	mDesc = func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("fpagent_"+name, help, labels, nil)
	}
	descCacheKeys        = mDesc("storage_cache_keys", "Keys held in the latest-record cache.")
	descCacheEvictions   = mDesc("storage_cache_evictions_total", "Keys evicted from the cache because it was full.")
	descPendingRecords   = mDesc("storage_pending_records", "WAL records not yet flushed to DuckDB.")
	descBacklogBytes     = mDesc("storage_backlog_bytes", "WAL bytes not yet flushed to DuckDB.")
	descDiskBudget       = mDesc("storage_disk_budget_bytes", "Backlog size at which stores are pushed back.")
	descOldest           = mDesc("storage_oldest_unflushed_age_seconds", "Age of the oldest WAL record not yet in DuckDB.")
	descStoredPoints     = mDesc("storage_stored_points_total", "Points made durable in the WAL.")
	descStoredBatches    = mDesc("storage_stored_batches_total", "Batches made durable in the WAL.")
	descFlushedPoints    = mDesc("storage_flushed_points_total", "Points written to DuckDB.")
	descFlushes          = mDesc("storage_flushes_total", "Flush transactions committed to DuckDB.")
	descFlushErrors      = mDesc("storage_flush_errors_total", "Flush attempts that failed and were retried.")
	descLastFlushSeconds = mDesc("storage_last_flush_duration_seconds", "Duration of the last flush transaction.")
	descLastFlushPoints  = mDesc("storage_last_flush_points", "Points in the last flush transaction.")
	descRewrites         = mDesc("storage_rewritten_points_total", "Points that replaced a point with the same key and time.")
	descDeadLetters      = mDesc("storage_dead_letters_total", "Rejected inputs written to the dead_letters table.")
	descBackpressure     = mDesc("storage_backpressure_total", "Stores refused because the backlog or the disk was full.")
	descStoreErrors      = mDesc("storage_store_errors_total", "Stores that failed to reach the WAL.")
	descSeries           = mDesc("storage_series", "Distinct series known to the store.")
	descSeriesLimit      = mDesc("storage_series_limit", "Distinct series the store accepts (storage.max_series).")
	descSeriesRefused    = mDesc("storage_series_limit_refused_points_total", "Points stored as dead letters because they would have started a series past storage.max_series.")
	descDuckDBBytes      = mDesc("duckdb_file_bytes", "Size of the DuckDB database file.")
	descReady            = mDesc("storage_ready", "1 once recovery is done.")
	descWALPosition      = mDesc("wal_last_position", "Position of the newest WAL record.")
	descCheckpoint       = mDesc("wal_checkpoint_position", "WAL position DuckDB holds everything up to.")
	descWALSegments      = mDesc("wal_segments", "WAL segment files.")
	descWALBytes         = mDesc("wal_bytes", "Bytes in all WAL segment files.")
	descWALActiveBytes   = mDesc("wal_active_segment_bytes", "Bytes in the active WAL segment.")
	descFsyncs           = mDesc("wal_fsyncs_total", "fsync calls on WAL segments.")
	descFsyncSeconds     = mDesc("wal_fsync_seconds_total", "Time spent in WAL fsync calls.")
	descFsyncMax         = mDesc("wal_fsync_max_seconds", "Longest WAL fsync since start.")
	descCorruptions      = mDesc("wal_corruptions_total", "Damaged WAL regions found and set aside.")
	descGaps             = mDesc("wal_gaps_total", "Missing WAL position ranges found.")
	descWriteErrors      = mDesc("wal_write_errors_total", "Failed WAL writes or fsyncs.")
	descPreallocated     = mDesc("wal_preallocated_segments_total", "WAL segments started in a zero-filled spare file.")
	descPreallocFails    = mDesc("wal_preallocation_failures_total", "Spare WAL segments that could not be zero-filled (a full disk, most often); segments are then created empty.")
)

// Describe implements prometheus.Collector.
func (s *Store) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheKeys, descCacheEvictions, descPendingRecords, descBacklogBytes,
		descDiskBudget, descOldest, descStoredPoints, descStoredBatches, descFlushedPoints, descFlushes,
		descFlushErrors, descLastFlushSeconds, descLastFlushPoints, descRewrites, descDeadLetters,
		descBackpressure, descStoreErrors, descSeries, descSeriesLimit, descSeriesRefused, descDuckDBBytes, descReady, descWALPosition,
		descCheckpoint, descWALSegments, descWALBytes, descWALActiveBytes, descFsyncs, descFsyncSeconds,
		descFsyncMax, descCorruptions, descGaps, descWriteErrors, descPreallocated, descPreallocFails} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *Store) Collect(ch chan<- prometheus.Metric) {
	st := s.Stats()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	c := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	ready := 0.0
	if st.Ready {
		ready = 1
	}
	g(descCacheKeys, float64(st.CacheSize))
	c(descCacheEvictions, float64(st.CacheEvictions))
	g(descPendingRecords, float64(st.PendingWrites))
	g(descBacklogBytes, float64(st.BacklogBytes))
	g(descDiskBudget, float64(st.DiskBudgetBytes))
	g(descOldest, st.OldestUnflushed)
	c(descStoredPoints, float64(st.StoredPoints))
	c(descStoredBatches, float64(st.StoredBatches))
	c(descFlushedPoints, float64(st.FlushedTotal))
	c(descFlushes, float64(st.Flushes))
	c(descFlushErrors, float64(st.FlushErrors))
	g(descLastFlushSeconds, st.LastFlushSeconds)
	g(descLastFlushPoints, float64(st.LastFlushPoints))
	c(descRewrites, float64(st.Rewrites))
	c(descDeadLetters, float64(st.DeadLetters))
	c(descBackpressure, float64(st.Backpressure))
	c(descStoreErrors, float64(st.StoreErrors))
	g(descSeries, float64(st.Series))
	g(descSeriesLimit, float64(st.SeriesLimit))
	c(descSeriesRefused, float64(st.SeriesRefused))
	g(descDuckDBBytes, float64(st.DuckDBFileBytes))
	g(descReady, ready)
	g(descWALPosition, float64(st.WALLastPosition))
	g(descCheckpoint, float64(st.Checkpoint))
	g(descWALSegments, float64(st.WALFilesCount))
	g(descWALBytes, float64(st.WAL.TotalBytes))
	g(descWALActiveBytes, float64(st.CurrentWALSize))
	c(descFsyncs, float64(st.WAL.Fsyncs))
	c(descFsyncSeconds, st.WAL.FsyncSeconds)
	g(descFsyncMax, st.WAL.MaxFsyncSecs)
	c(descCorruptions, float64(st.WAL.Corruptions))
	c(descGaps, float64(st.WAL.Gaps))
	c(descWriteErrors, float64(st.WAL.WriteErrors))
	c(descPreallocated, float64(st.WAL.Preallocated))
	c(descPreallocFails, float64(st.WAL.PreallocFails))
}
