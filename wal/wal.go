// Package wal is a segmented, checksummed, append-only write-ahead log.
package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
)

// Position is the index of a record; the first record ever written is 1; 0 means "none".
type Position uint64

// SyncPolicy says when appended records are forced to stable storage.
type SyncPolicy string

const (
	SyncAlways   SyncPolicy = "always"
	SyncInterval SyncPolicy = "interval"
	SyncNone     SyncPolicy = "none"
)

// ParseSyncPolicy parses "always", "interval" or "none".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch p := SyncPolicy(s); p {
	case SyncAlways, SyncInterval, SyncNone:
		return p, nil
	}
	return "", fmt.Errorf("wal: unknown sync policy %q: use always, interval or none", s)
}

// Options configure a Log.
type Options struct {
	MaxSegmentSize int64
	MaxSegmentAge  time.Duration
	Sync           SyncPolicy
	SyncInterval   time.Duration
	MaxRecordSize  int
	FS             FS
	Logger         *slog.Logger
}

// ErrClosed is returned by operations on a closed Log.
var ErrClosed = errors.New("wal: log is closed")

// CorruptionError names a damaged region of a segment.
type CorruptionError struct {
	Segment string
	Offset  int64
	Reason  string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("wal: segment %s is damaged at offset %d: %s", e.Segment, e.Offset, e.Reason)
}

// LockedError is returned by Open when another process holds the directory.
type LockedError struct {
	Dir    string
	Holder string
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("wal: directory %s is locked by %s", e.Dir, e.Holder)
}

// Stats describe a Log.
type Stats struct {
	Segments             int
	ActiveSegmentSize    int64
	ActiveSegmentRecords int
	ActiveSegmentSeq     uint64
	FirstPosition        Position
	LastPosition         Position
	TotalBytes           int64
	Fsyncs               uint64
	FsyncTotal           time.Duration
	LastFsync            time.Duration
	MaxFsync             time.Duration
	Corruptions          uint64
	Gaps                 uint64
	WriteErrors          uint64
}

// File is an open file.
type File interface {
	io.ReaderAt
	io.Writer
	io.Closer
	Sync() error
	Truncate(size int64) error
	Size() (int64, error)
}

// FS is the file system the log uses.
type FS interface {
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	Remove(name string) error
	Rename(oldname, newname string) error
	ReadDir(dir string) ([]string, error)
	MkdirAll(dir string, perm os.FileMode) error
	SyncDir(dir string) error
	Lock(name string) (io.Closer, error)
}

// OSFS returns the real file system.
func OSFS() FS { return nil }

// Log is a write-ahead log.
type Log struct{}

var errTODO = errors.New("wal: not implemented yet")

func Open(dir string, opts Options) (*Log, error)                   { return nil, errTODO }
func (l *Log) Append(rec []byte) (Position, error)                  { return 0, errTODO }
func (l *Log) AppendBatch(recs [][]byte) (last Position, err error) { return 0, errTODO }
func (l *Log) LastPosition() Position                               { return 0 }
func (l *Log) FirstPosition() Position                              { return 0 }
func (l *Log) AdvanceTo(pos Position) error                         { return errTODO }
func (l *Log) Wait(ctx context.Context, after Position) error       { return errTODO }
func (l *Log) NewReader(from Position) (*Reader, error)             { return nil, errTODO }
func (l *Log) RemoveBefore(pos Position) (removed int, err error)   { return 0, errTODO }
func (l *Log) Behind(pos Position) (records uint64, bytes int64)    { return 0, 0 }
func (l *Log) Stats() Stats                                         { return Stats{} }
func (l *Log) Close() error                                         { return errTODO }

// Reader reads records in order.
type Reader struct{}

func (r *Reader) Next() (rec []byte, pos Position, err error) { return nil, 0, errTODO }
func (r *Reader) Close() error                                { return nil }
