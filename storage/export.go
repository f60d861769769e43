package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ExportResult is one day written to Parquet.
type ExportResult struct {
	Day   string `json:"day"`
	Rows  int64  `json:"rows"`
	File  string `json:"file"`
	Bytes int64  `json:"bytes"`
}

// ExportFile is where the readings of one UTC day go, in the hive layout
// that DuckDB, Spark, Trino and ClickHouse read as a partition column:
// <dir>/day=2026-11-25/readings.parquet.
func ExportFile(dir string, day time.Time) string {
	return filepath.Join(dir, "day="+day.UTC().Format(time.DateOnly), "readings.parquet")
}

// Export writes the readings of every UTC day from from to to (inclusive)
// to Parquet files under Config.ExportDir, one per day, replacing earlier
// exports of those days. It flushes the WAL into DuckDB first, so that what
// was acknowledged before the call is in the files.
func (s *Store) Export(ctx context.Context, from, to time.Time) ([]ExportResult, error) {
	dir := s.cfg.ExportDir
	if dir == "" {
		return nil, errors.New("no export directory configured (export.dir)")
	}
	if err := s.ForceFlush(ctx); err != nil {
		return nil, fmt.Errorf("flush before export: %w", err)
	}
	var out []ExportResult
	for day := from.UTC().Truncate(24 * time.Hour); !day.After(to); day = day.AddDate(0, 0, 1) {
		r, err := s.exportDay(ctx, dir, day)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *Store) exportDay(ctx context.Context, dir string, day time.Time) (ExportResult, error) {
	final := ExportFile(dir, day)
	res := ExportResult{Day: day.Format(time.DateOnly), File: final}
	if err := os.MkdirAll(filepath.Dir(final), 0o750); err != nil {
		return res, fmt.Errorf("export %s: %w", res.Day, err)
	}
	// DuckDB writes a temporary name; the rename makes the day's file
	// appear whole or not at all.
	tmp := final + ".tmp"
	q := fmt.Sprintf(`COPY (SELECT ts, key, measurement, tags, fields FROM readings
		WHERE ts >= TIMESTAMP_NS '%s' AND ts < TIMESTAMP_NS '%s' ORDER BY ts, key)
		TO '%s' (FORMAT parquet, COMPRESSION zstd)`,
		day.Format("2006-01-02 15:04:05"), day.AddDate(0, 0, 1).Format("2006-01-02 15:04:05"),
		strings.ReplaceAll(tmp, "'", "''"))
	r, err := s.db.ExecContext(ctx, q)
	if err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("export %s to %s: %w", res.Day, tmp, err)
	}
	res.Rows, _ = r.RowsAffected()
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("export %s: %w", res.Day, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("export %s: %w", res.Day, err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return res, fmt.Errorf("export %s: sync directory: %w", res.Day, err)
	}
	if fi, err := os.Stat(final); err == nil {
		res.Bytes = fi.Size()
	}
	s.log.Info("exported a day to Parquet", "day", res.Day, "rows", res.Rows, "file", final, "bytes", res.Bytes)
	return res, nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
