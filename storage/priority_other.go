//go:build !linux

package storage

// lowerPriority does nothing where threads cannot be reniced one by one.
func lowerPriority(nice int) error { return nil }
