//go:build linux

package storage

import (
	"runtime"
	"syscall"
)

// lowerPriority pins the calling goroutine to its OS thread and gives the
// thread the nice value nice (0: leave it alone). Linux schedules threads,
// not processes, so only that thread yields to the others.
func lowerPriority(nice int) error {
	if nice <= 0 {
		return nil
	}
	// Never unlocked: when the goroutine ends, its thread ends with it
	// rather than return to the pool with a lowered priority.
	runtime.LockOSThread()
	return syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), nice)
}
