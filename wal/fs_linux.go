//go:build linux

package wal

import (
	"os"
	"syscall"
)

// osFile syncs with fdatasync: the log only appends, and fdatasync still
// writes the file size and whatever else is needed to read the data back,
// while skipping timestamps.
type osFile struct{ *os.File }

func (f osFile) Sync() error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

func wrapOSFile(f *os.File) File { return osFile{f} }
