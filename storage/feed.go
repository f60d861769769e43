package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fpagent/fpagent/wal"
)

// FeedPolicy says what happens when a feed falls further behind than its
// disk budget.
type FeedPolicy string

const (
	// FeedBlock makes stores push back, as the flusher's own budget does:
	// nothing is lost, and ingestion waits for the output.
	FeedBlock FeedPolicy = "block"
	// FeedDropOldest moves the feed past its oldest whole WAL segments, so
	// that ingestion goes on; what is skipped is counted and logged.
	FeedDropOldest FeedPolicy = "drop_oldest"
)

// FeedConfig declares a reader of the WAL besides the flusher (an output).
// Feeds are declared at Open so that no segment an output still needs is
// deleted, not even during recovery.
type FeedConfig struct {
	Name       string     // unique; names the cursor file
	DiskBudget int64      // WAL bytes it may leave behind it; default Config.DiskBudget
	Policy     FeedPolicy // default FeedBlock
}

// Feed reads the WAL from its own persisted cursor. Read hands out batches of
// points; Commit, called once the remote side accepted them, moves the
// cursor. After a crash a feed resumes after its last Commit, so it delivers
// at least once. Read and Commit are for one goroutine.
type Feed struct {
	s    *Store
	cfg  FeedConfig
	path string

	mu     sync.Mutex    // serialises cursor moves: Commit and drops
	cursor atomic.Uint64 // everything up to here was accepted downstream

	r        *wal.Reader
	readTo   wal.Position // last position Read handed out
	behindAt atomic.Int64 // unix ns when the feed was last seen caught up

	drops, droppedRecords, droppedBytes atomic.Uint64
}

// FeedBatch is what Read returns: the points of whole WAL records.
type FeedBatch struct {
	Points  []Point
	Records int
	Last    wal.Position // Commit(Last) once the points were accepted
}

// FeedStats are a feed's figures.
type FeedStats struct {
	Cursor         uint64  `json:"cursor_position"`
	LagRecords     uint64  `json:"lag_records"`
	LagBytes       int64   `json:"lag_bytes"`
	LagSeconds     float64 `json:"lag_seconds"`
	DiskBudget     int64   `json:"disk_budget_bytes"`
	Policy         string  `json:"on_full"`
	Drops          uint64  `json:"drops"`
	DroppedRecords uint64  `json:"dropped_records"`
	DroppedBytes   uint64  `json:"dropped_bytes"`
}

// cursor file: position u64 LE, then CRC32-C of those 8 bytes.
const cursorFileSize = 12

func (c *Config) cursorDir() string {
	if c.CursorDir != "" {
		return c.CursorDir
	}
	return filepath.Join(filepath.Dir(filepath.Clean(c.BaseDir)), "outputs")
}

// openFeeds loads the cursors of the configured feeds. A feed without a
// cursor file starts at the oldest record the WAL holds; a damaged cursor
// file does the same, with a warning: resending is harmless, skipping is not.
func (s *Store) openFeeds() error {
	dir := s.cfg.cursorDir()
	seen := map[string]bool{}
	for _, fc := range s.cfg.Feeds {
		if fc.Name == "" || seen[fc.Name] || filepath.Base(fc.Name) != fc.Name || fc.Name == "." || fc.Name == ".." {
			return fmt.Errorf("feed name %q: want a unique, non-empty name usable as a file name", fc.Name)
		}
		seen[fc.Name] = true
		if fc.DiskBudget <= 0 {
			fc.DiskBudget = s.cfg.DiskBudget
		}
		switch fc.Policy {
		case "":
			fc.Policy = FeedBlock
		case FeedBlock, FeedDropOldest:
		default:
			return fmt.Errorf("feed %q: unknown policy %q (want %q or %q)", fc.Name, fc.Policy, FeedBlock, FeedDropOldest)
		}
		f := &Feed{s: s, cfg: fc, path: filepath.Join(dir, fc.Name+".cursor")}
		pos, err := readCursor(f.path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			pos = s.feedStart()
			s.log.Info("output starts at the oldest record in the WAL", "output", fc.Name, "position", pos+1)
		case err != nil:
			pos = s.feedStart()
			s.log.Warn("output cursor unreadable; resending from the oldest record in the WAL (the remote side sees some points again)",
				"output", fc.Name, "file", f.path, "err", err, "position", pos+1)
		}
		f.cursor.Store(uint64(pos))
		f.behindAt.Store(time.Now().UnixNano())
		s.feeds = append(s.feeds, f)
	}
	if len(s.feeds) > 0 {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create output cursor directory: %w", err)
		}
	}
	return nil
}

// feedsMayBeOver reports whether any feed could be over its budget, with
// one look at the WAL from the lowest cursor: the store's hot path need not
// measure every feed while all of them are well within budget.
func (s *Store) feedsMayBeOver() bool {
	if len(s.feeds) == 0 {
		return false
	}
	floor, budget := s.feeds[0].Cursor(), s.feeds[0].cfg.DiskBudget
	for _, f := range s.feeds[1:] {
		floor, budget = min(floor, f.Cursor()), min(budget, f.cfg.DiskBudget)
	}
	_, bytes := s.wal.Behind(floor)
	return bytes >= budget
}

// feedStart is the cursor of a new feed: just before the oldest record.
func (s *Store) feedStart() wal.Position {
	if first := s.wal.FirstPosition(); first > 0 {
		return first - 1
	}
	return s.wal.LastPosition()
}

func readCursor(path string) (wal.Position, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	if len(b) != cursorFileSize || crc32.Checksum(b[:8], castagnoli) != binary.LittleEndian.Uint32(b[8:]) {
		return 0, fmt.Errorf("cursor file %s is damaged (%d bytes, want %d with a valid checksum)", path, len(b), cursorFileSize)
	}
	return wal.Position(binary.LittleEndian.Uint64(b)), nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// writeCursor replaces the cursor file atomically and durably.
func writeCursor(path string, pos wal.Position) error {
	var b [cursorFileSize]byte
	binary.LittleEndian.PutUint64(b[:], uint64(pos))
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], castagnoli))
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(b[:])
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	return err
}

func syncDir(dir string) error { return wal.OSFS().SyncDir(dir) }

// Feed returns the feed declared under name in Config.Feeds.
func (s *Store) Feed(name string) (*Feed, error) {
	for _, f := range s.feeds {
		if f.cfg.Name == name {
			return f, nil
		}
	}
	return nil, fmt.Errorf("no feed %q: declare it in storage.Config.Feeds", name)
}

// Name returns the feed's name.
func (f *Feed) Name() string { return f.cfg.Name }

// Cursor returns the position up to which the remote side has everything.
func (f *Feed) Cursor() wal.Position { return wal.Position(f.cursor.Load()) }

// Read returns the points of the next WAL records after what it returned
// before: at least one record, and records until maxPoints is reached or
// nothing more is there yet. It blocks while there is nothing to read.
// Rejects are not forwarded. The points are the caller's.
func (f *Feed) Read(ctx context.Context, maxPoints int) (*FeedBatch, error) {
	if cur := f.Cursor(); f.r == nil || cur > f.readTo {
		// First call, or a drop moved the cursor past what was read.
		if f.r != nil {
			f.r.Close()
		}
		r, err := f.s.wal.NewReader(cur + 1)
		if err != nil {
			return nil, err
		}
		f.r, f.readTo = r, cur
	}
	b := &FeedBatch{}
	for {
		seen := f.s.wal.LastPosition()
		rec, pos, err := f.r.Next()
		switch {
		case err == nil:
			if err := appendRecordPoints(b, rec); err != nil {
				// The WAL checksum passed, so this is a bug or a foreign
				// record; the flusher dead-letters it, the feed skips it.
				f.s.log.Warn("output: skipping a WAL record that does not decode", "output", f.cfg.Name, "position", pos, "err", err)
			}
			b.Records++
			b.Last, f.readTo = pos, pos
			if len(b.Points) >= maxPoints {
				return b, nil
			}
		case errors.Is(err, io.EOF):
			if b.Records > 0 {
				return b, nil
			}
			f.noteCaughtUp()
			if err := f.s.wal.Wait(ctx, seen); err != nil {
				return nil, err
			}
		default:
			return nil, err
		}
	}
}

func appendRecordPoints(b *FeedBatch, rec []byte) error {
	d := decoder{b: rec}
	d.batchHeader()
	return d.points(func(p Point) { b.Points = append(b.Points, p) })
}

func (f *Feed) noteCaughtUp() {
	if f.Cursor() >= f.s.wal.LastPosition() {
		f.behindAt.Store(time.Now().UnixNano())
	}
}

// Commit records that the remote side accepted everything up to last: the
// cursor file is rewritten durably, and WAL segments no reader needs any
// more are deleted.
func (f *Feed) Commit(last wal.Position) error {
	f.mu.Lock()
	if last <= f.Cursor() {
		f.mu.Unlock()
		return nil
	}
	if err := writeCursor(f.path, last); err != nil {
		f.mu.Unlock()
		return fmt.Errorf("output %s: save cursor %d: %w", f.cfg.Name, last, err)
	}
	f.cursor.Store(uint64(last))
	f.mu.Unlock()
	f.noteCaughtUp()
	f.s.feedMoved()
	f.s.removeCovered(false)
	return nil
}

// lag returns the records and bytes of WAL behind the cursor.
func (f *Feed) lag() (uint64, int64) { return f.s.wal.Behind(f.Cursor()) }

// checkBudget applies the feed's policy when it is over its budget. It
// returns a reason to push back ("" when there is none).
func (f *Feed) checkBudget() string {
	_, bytes := f.lag()
	if bytes < f.cfg.DiskBudget {
		return ""
	}
	if f.cfg.Policy == FeedBlock {
		return fmt.Sprintf("output %q is %d bytes behind, at its disk_budget (%d bytes); it must catch up", f.cfg.Name, bytes, f.cfg.DiskBudget)
	}
	f.mu.Lock()
	from := f.Cursor()
	to := f.s.wal.SkipTo(from, f.cfg.DiskBudget)
	if to > from {
		r0, b0 := f.s.wal.Behind(from)
		r1, b1 := f.s.wal.Behind(to)
		f.cursor.Store(uint64(to))
		f.drops.Add(1)
		f.droppedRecords.Add(r0 - r1)
		f.droppedBytes.Add(uint64(b0 - b1))
		f.s.log.Warn("output is over its disk_budget: DROPPED its oldest unsent WAL records (on_full: drop_oldest)",
			"output", f.cfg.Name, "records", r0-r1, "bytes", b0-b1, "from_position", from+1, "to_position", to,
			"disk_budget", f.cfg.DiskBudget)
	}
	f.mu.Unlock()
	if to > from {
		f.s.removeCovered(false)
	}
	return ""
}

// Stats returns the feed's figures.
func (f *Feed) Stats() FeedStats {
	recs, bytes := f.lag()
	st := FeedStats{
		Cursor: f.cursor.Load(), LagRecords: recs, LagBytes: bytes,
		DiskBudget: f.cfg.DiskBudget, Policy: string(f.cfg.Policy),
		Drops: f.drops.Load(), DroppedRecords: f.droppedRecords.Load(), DroppedBytes: f.droppedBytes.Load(),
	}
	if recs > 0 {
		st.LagSeconds = time.Since(time.Unix(0, f.behindAt.Load())).Seconds()
	}
	return st
}

// Close releases the feed's reader; the cursor stays as committed.
func (f *Feed) Close() {
	if f.r != nil {
		f.r.Close()
		f.r = nil
	}
}
