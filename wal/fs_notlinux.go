//go:build !linux

package wal

import "os"

func wrapOSFile(f *os.File) File { return f }

// preallocHelps: only Linux is measured; elsewhere preallocation is kept.
func preallocHelps(string) bool { return true }
