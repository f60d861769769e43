package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Position is the index of a record; the first record ever written is 1; 0 means "none".
type Position uint64

// SyncPolicy says when appended records are forced to stable storage.
type SyncPolicy string

const (
	// SyncAlways fsyncs before Append returns; concurrent appenders share one
	// fsync (group commit). Only fsynced records are visible to readers.
	SyncAlways SyncPolicy = "always"
	// SyncInterval writes before Append returns (a process crash loses
	// nothing) and fsyncs in the background at most every Options.SyncInterval
	// (a power loss may lose what was appended since the last fsync).
	SyncInterval SyncPolicy = "interval"
	// SyncNone writes before Append returns and fsyncs only on rotation and
	// close (a power loss may lose the whole active segment).
	SyncNone SyncPolicy = "none"
)

// ParseSyncPolicy parses "always", "interval" or "none".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch p := SyncPolicy(s); p {
	case SyncAlways, SyncInterval, SyncNone:
		return p, nil
	}
	return "", fmt.Errorf("wal: unknown sync policy %q: use always, interval or none", s)
}

// Options configure a Log. The zero value gives the defaults.
type Options struct {
	// MaxSegmentSize rotates the active segment before a write would take it
	// past this size; default 10 MiB (the seed's max_wal_size).
	MaxSegmentSize int64
	// MaxSegmentAge rotates a non-empty active segment older than this, on
	// append and on a timer; default 300s (max_wal_age_seconds); negative: never.
	MaxSegmentAge time.Duration
	// Sync is the durability policy; default SyncAlways.
	Sync SyncPolicy
	// SyncInterval is the fsync period under SyncInterval; default 100ms.
	SyncInterval time.Duration
	// MaxRecordSize refuses larger appends and bounds what recovery will
	// read as one record; default 64 MiB. Lowering it below records already
	// in the log makes them read as damaged.
	MaxRecordSize int
	// SlowSync is the fsync duration above which a warning is logged; default 1s.
	SlowSync time.Duration
	// Preallocate zero-fills the next segment in the background, so that
	// appends overwrite blocks the file system has already allocated and an
	// fdatasync need not commit file metadata: on ext4 that takes an fsync
	// from about 700 to about 300 µs here (PostgreSQL's wal_init_zero does
	// the same). It costs one extra write of every segment and
	// MaxSegmentSize of disk for the spare. Skipped on tmpfs, where fsync
	// is free.
	Preallocate bool
	// FS is the file system; nil means the operating system's.
	FS FS
	// Logger receives warnings about damage, slow fsyncs and failed deletes; nil discards.
	Logger *slog.Logger

	// preallocInline prepares each spare segment on the writer's path right
	// after a rotation, instead of in the background: tests that count
	// file system operations need them in a fixed order.
	preallocInline bool
	// zeroFillBehind, when positive, replaces maxSealedForZeroFill: tests
	// of zero-filling write many segments that no reader removes.
	zeroFillBehind int
}

const (
	defaultMaxSegmentSize = 10 << 20
	defaultMaxSegmentAge  = 300 * time.Second
	defaultSyncInterval   = 100 * time.Millisecond
	defaultMaxRecordSize  = 64 << 20
	defaultSlowSync       = time.Second
)

func (o Options) withDefaults(dir string) (Options, error) {
	if o.MaxSegmentSize == 0 {
		o.MaxSegmentSize = defaultMaxSegmentSize
	}
	if o.MaxSegmentSize < 0 {
		return o, fmt.Errorf("wal: MaxSegmentSize %d is negative: use a positive size such as %d", o.MaxSegmentSize, defaultMaxSegmentSize)
	}
	if o.MaxSegmentAge == 0 {
		o.MaxSegmentAge = defaultMaxSegmentAge
	}
	if o.Sync == "" {
		o.Sync = SyncAlways
	}
	if _, err := ParseSyncPolicy(string(o.Sync)); err != nil {
		return o, err
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = defaultSyncInterval
	}
	if o.SyncInterval < 0 {
		return o, fmt.Errorf("wal: SyncInterval %v is negative: use a positive duration such as %v", o.SyncInterval, defaultSyncInterval)
	}
	if o.MaxRecordSize == 0 {
		o.MaxRecordSize = defaultMaxRecordSize
	}
	if o.MaxRecordSize < 0 || int64(o.MaxRecordSize) > maxFormatLength {
		return o, fmt.Errorf("wal: MaxRecordSize %d is out of range: use 1 to %d", o.MaxRecordSize, int64(maxFormatLength))
	}
	if o.SlowSync <= 0 {
		o.SlowSync = defaultSlowSync
	}
	if o.FS == nil {
		o.FS = OSFS()
	}
	if _, isOS := o.FS.(osFS); o.Preallocate && isOS && !preallocHelps(dir) {
		o.Preallocate = false
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// ErrClosed is returned by operations on a closed Log or Reader.
var ErrClosed = errors.New("wal: log is closed")

// CorruptionError names a damaged region of a segment. The records in it are
// skipped by readers; the file is kept as evidence (renamed to *.broken
// rather than deleted when RemoveBefore reaches it).
type CorruptionError struct {
	Segment string // file name
	Offset  int64  // where the damage starts
	Reason  string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("wal: segment %s is damaged at offset %d: %s", e.Segment, e.Offset, e.Reason)
}

// GapError reports positions missing from the log: From..To inclusive.
type GapError struct {
	From, To Position
}

func (e *GapError) Error() string {
	return fmt.Sprintf("wal: positions %d to %d are missing (%d records)", e.From, e.To, e.To-e.From+1)
}

// LockedError is returned by Open when another process holds the directory.
type LockedError struct {
	Dir    string
	Holder string // e.g. "pid 1234 (fpagent), since 2026-11-26T03:52:40Z"
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("wal: directory %s is in use by %s: stop that process or give this one another directory", e.Dir, e.Holder)
}

// Stats describe a Log at one moment.
type Stats struct {
	Segments             int      // segment files
	ActiveSegmentSize    int64    // bytes in the segment being written (0 between rotation and the next append)
	ActiveSegmentRecords int      // records in it
	ActiveSegmentSeq     uint64   // sequence number of the newest segment; grows by one per segment
	FirstPosition        Position // lowest position on disk, 0 when empty
	LastPosition         Position // highest position readers may see
	TotalBytes           int64    // bytes in all segments
	Fsyncs               uint64
	FsyncTotal           time.Duration
	LastFsync            time.Duration
	MaxFsync             time.Duration
	Corruptions          uint64 // damaged regions found and set aside since open
	Gaps                 uint64 // missing position ranges found since open
	WriteErrors          uint64 // failed writes, fsyncs and segment creations
	Preallocated         uint64 // segments started in a spare file (zero-filled or recycled)
	Recycled             uint64 // removed segments kept as the spare instead of deleted
	PreallocFailures     uint64 // spare files that could not be prepared (e.g. disk full)
}
