//go:build !linux || !cgo

package storage

// tuneMalloc does nothing where the C library's malloc is not glibc's.
func tuneMalloc() {}
