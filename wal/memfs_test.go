package wal

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// memFS is a strict in-memory file system for power-loss tests, after
// pebble's vfs.NewStrictMem: a file's contents survive a power loss only
// up to its last Sync, and a directory entry (created, renamed, removed)
// only once its directory was synced. It can lose power after a given
// number of mutating operations, and inject errors through fault.
type memFS struct {
	mu      sync.Mutex
	files   map[string]*memInode // the directory entries as running programs see them
	durable map[string]*memInode // the entries as of the last SyncDir
	locks   map[string]bool
	handles []*memFile

	ops     int // mutating operations so far
	crashAt int // lose power at this operation (0: never)
	crashed bool
	// fault, when set, is asked before each mutating operation; a non-nil
	// error fails it. For "write", errShortWrite writes half and fails with ENOSPC.
	fault func(op, name string) error
}

type memInode struct {
	data   []byte
	synced []byte
}

var (
	errPowerLost  = errors.New("memfs: power lost")
	errShortWrite = errors.New("memfs: short write")
)

func newMemFS() *memFS {
	return &memFS{files: map[string]*memInode{}, durable: map[string]*memInode{}, locks: map[string]bool{}}
}

// step counts a mutating operation and says whether it may proceed.
func (m *memFS) step(op, name string) error {
	if m.crashed {
		return errPowerLost
	}
	m.ops++
	if m.crashAt > 0 && m.ops >= m.crashAt {
		m.crashed = true
		return errPowerLost
	}
	if m.fault != nil {
		if err := m.fault(op, name); err != nil {
			return err
		}
	}
	return nil
}

// processDied is a kill -9 of the process using m: its files and locks are
// closed, and what it wrote stays in the page cache, synced or not.
func (m *memFS) processDied() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range m.handles {
		f.closed = true
	}
	m.handles = nil
	clear(m.locks)
}

// afterPowerLoss returns the file system as it comes back: durable entries
// with their synced contents. When rng is not nil, each file also keeps a
// random part of what was written after its last sync, as a disk may.
func (m *memFS) afterPowerLoss(rng *rand.Rand) *memFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := newMemFS()
	for name, ino := range m.durable {
		data := slices.Clone(ino.synced)
		if rng != nil && !bytes.Equal(ino.data, ino.synced) {
			// The disk wrote the unsynced changes up to some point: appends
			// and overwrites of preallocated space alike.
			i := 0
			for i < len(ino.data) && i < len(ino.synced) && ino.data[i] == ino.synced[i] {
				i++
			}
			cut := i + rng.IntN(len(ino.data)-i+1)
			data = slices.Clone(ino.data[:cut])
			if cut < len(ino.synced) {
				data = append(data, ino.synced[cut:]...)
			}
		}
		c := &memInode{data: data, synced: slices.Clone(data)}
		n.files[name] = c
		n.durable[name] = c
	}
	return n
}

func (m *memFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name = filepath.Clean(name)
	ino, ok := m.files[name]
	if !ok {
		if flag&os.O_CREATE == 0 {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		if err := m.step("create", name); err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		ino = &memInode{}
		m.files[name] = ino
	} else if flag&os.O_EXCL != 0 && flag&os.O_CREATE != 0 {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	} else if flag&os.O_TRUNC != 0 {
		if err := m.step("truncate", name); err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		ino.data = nil
	}
	f := &memFile{fs: m, ino: ino, name: name, readOnly: flag&(os.O_WRONLY|os.O_RDWR) == 0}
	m.handles = append(m.handles, f)
	return f, nil
}

func (m *memFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	name = filepath.Clean(name)
	if _, ok := m.files[name]; !ok {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	if err := m.step("remove", name); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	delete(m.files, name)
	return nil
}

func (m *memFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	oldname, newname = filepath.Clean(oldname), filepath.Clean(newname)
	ino, ok := m.files[oldname]
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrNotExist}
	}
	if err := m.step("rename", oldname); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	delete(m.files, oldname)
	m.files[newname] = ino
	return nil
}

func (m *memFS) ReadDir(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir = filepath.Clean(dir)
	var names []string
	for name := range m.files {
		if filepath.Dir(name) == dir {
			names = append(names, filepath.Base(name))
		}
	}
	slices.Sort(names)
	return names, nil
}

func (m *memFS) MkdirAll(dir string, perm os.FileMode) error { return nil }

func (m *memFS) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.step("syncdir", dir); err != nil {
		return err
	}
	dir = filepath.Clean(dir)
	for name := range m.durable {
		if filepath.Dir(name) == dir {
			delete(m.durable, name)
		}
	}
	for name, ino := range m.files {
		if filepath.Dir(name) == dir {
			m.durable[name] = ino
		}
	}
	return nil
}

func (m *memFS) Lock(name string) (io.Closer, error) {
	f, err := m.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	f.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	name = filepath.Clean(name)
	if m.locks[name] {
		return nil, &fs.PathError{Op: "flock", Path: name, Err: syscall.EWOULDBLOCK}
	}
	m.locks[name] = true
	return closerFunc(func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.locks, name)
		return nil
	}), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

type memFile struct {
	fs       *memFS
	ino      *memInode
	name     string
	off      int64
	readOnly bool
	closed   bool
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, fs.ErrClosed
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed || f.readOnly {
		return 0, fs.ErrClosed
	}
	err := f.fs.step("write", f.name)
	n := len(p)
	switch {
	case errors.Is(err, errShortWrite):
		n, err = len(p)/2, syscall.ENOSPC
	case err != nil:
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: err}
	}
	end := f.off + int64(n)
	if int64(len(f.ino.data)) < end {
		f.ino.data = append(f.ino.data, make([]byte, end-int64(len(f.ino.data)))...)
	}
	copy(f.ino.data[f.off:], p[:n])
	f.off = end
	if err != nil {
		return n, &fs.PathError{Op: "write", Path: f.name, Err: err}
	}
	return n, nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return fs.ErrClosed
	}
	if err := f.fs.step("sync", f.name); err != nil {
		return &fs.PathError{Op: "sync", Path: f.name, Err: err}
	}
	f.ino.synced = slices.Clone(f.ino.data)
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed || f.readOnly {
		return fs.ErrClosed
	}
	if err := f.fs.step("truncate", f.name); err != nil {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: err}
	}
	if size <= int64(len(f.ino.data)) {
		f.ino.data = f.ino.data[:size]
	} else {
		f.ino.data = append(f.ino.data, make([]byte, size-int64(len(f.ino.data)))...)
	}
	return nil
}

func (f *memFile) Stat() (os.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return memInfo{name: filepath.Base(f.name), size: int64(len(f.ino.data))}, nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	f.closed = true
	return nil
}

type memInfo struct {
	name string
	size int64
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() os.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }
