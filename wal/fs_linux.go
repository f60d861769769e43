//go:build linux

package wal

import (
	"os"
	"path/filepath"
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

// preallocHelps is false on memory file systems, where fsync costs nothing
// and a spare segment only takes memory.
func preallocHelps(dir string) bool {
	const tmpfsMagic, ramfsMagic = 0x01021994, 0x858458f6
	var st syscall.Statfs_t
	for d := dir; ; d = filepath.Dir(d) {
		if err := syscall.Statfs(d, &st); err == nil {
			return st.Type != tmpfsMagic && st.Type != ramfsMagic
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}
