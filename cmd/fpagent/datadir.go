package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// DataDirError is a data directory the agent cannot use. It exits with exitDataDir.
type DataDirError struct{ Msg string }

func (e *DataDirError) Error() string { return e.Msg }

// probeSize is written and fsynced in each directory at start: enough to
// fail on a full disk, small enough to cost nothing.
const probeSize = 64 << 10

// checkDir creates dir if needed and proves it writable by writing,
// fsyncing and removing a probe file, so that an unwritable directory or a
// full disk fails at start with a message, before anything else is created.
// The probe is removed on every path.
func checkDir(dir, key string, minFree int64) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return &DataDirError{dirMsg(dir, key, "cannot be created", err)}
	}
	f, err := os.CreateTemp(dir, ".fpagent-probe-*")
	if err != nil {
		return &DataDirError{dirMsg(dir, key, "is not writable", err)}
	}
	name := f.Name()
	defer os.Remove(name)
	_, err = f.Write(make([]byte, probeSize))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &DataDirError{dirMsg(dir, key, "cannot be written", err)}
	}
	if free, ok := freeBytes(dir); ok && free < minFree {
		return &DataDirError{fmt.Sprintf("%s %s: only %s free on its file system, less than the %s the agent needs to start (one WAL segment, storage.max_wal_size); free some space or point %s elsewhere",
			key, dir, fmtBytes(free), fmtBytes(minFree), key)}
	}
	return nil
}

func dirMsg(dir, key, what string, err error) string {
	hint := "check its owner and mode, or set " + key + " to a directory this user can write"
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		hint = "the disk (or quota) is full: free some space or set " + key + " to another file system"
	case errors.Is(err, syscall.EROFS):
		hint = "the file system is read-only: set " + key + " to a writable one"
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Sprintf("%s %s %s (%v): %s", key, filepath.Clean(dir), what, err, hint)
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
