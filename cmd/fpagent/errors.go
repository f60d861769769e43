package main

import (
	"errors"
	"fmt"
	"regexp"
	"syscall"

	"github.com/fpagent/fpagent/internal/config"
	"github.com/fpagent/fpagent/wal"
)

// listenError explains a listen failure with the key to change.
func listenError(key, addr string, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("%s %s: the address is already in use (another fpagent, or another program on that port); stop it or set %s to a free port", key, addr, key)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s %s: permission denied (ports below 1024 need privileges); use a port above 1024", key, addr)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("%s %s: no interface of this host has that address; use 127.0.0.1, 0.0.0.0 or one of its addresses", key, addr)
	}
	return fmt.Errorf("%s %s: %w", key, addr, err)
}

// listenAddr is the configured address of the named input.
func listenAddr(cfg *config.Config, name string) string {
	switch name {
	case "http":
		return cfg.Inputs.HTTP.Listen
	case "tcp":
		return cfg.Inputs.TCP.Listen
	case "udp":
		return cfg.Inputs.UDP.Listen
	}
	return ""
}

// duckLockRE finds the process DuckDB names when its file is locked:
// "Conflicting lock is held in /usr/bin/fpagent (PID 1234)".
var duckLockRE = regexp.MustCompile(`Conflicting lock is held in (.*?) \(PID (\d+)\)`)

// storageExit is the exit code for a storage open failure.
func storageExit(err error) int {
	var le *wal.LockedError
	if errors.As(err, &le) || duckLockRE.MatchString(err.Error()) || isDiskError(err) {
		return exitDataDir
	}
	return exitFailure
}

func isDiskError(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS) ||
		errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)
}

// explainStorageError turns the errors people meet at start into what to do.
func explainStorageError(cfg *config.Config, err error) error {
	var le *wal.LockedError
	if errors.As(err, &le) {
		return fmt.Errorf("data directory %s is in use by another agent: %s holds the WAL lock in %s; stop that agent first, or give this one another data_dir", cfg.DataDir, le.Holder, le.Dir)
	}
	if m := duckLockRE.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("DuckDB file %s is in use by PID %s (%s); stop that process first, or set storage.db_path to another file: %w", cfg.DBPath(), m[2], m[1], err)
	}
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("the disk holding %s is full; free some space and start again (nothing acknowledged is lost): %w", cfg.DataDir, err)
	case errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("cannot write under %s; check its owner and mode or set data_dir: %w", cfg.DataDir, err)
	}
	return fmt.Errorf("open storage (WAL %s, DuckDB %s): %w", cfg.WALDir(), cfg.DBPath(), err)
}
