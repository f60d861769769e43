//go:build !linux

package main

// freeBytes is not measured here; the probe write still catches a full disk.
func freeBytes(string) (int64, bool) { return 0, false }
