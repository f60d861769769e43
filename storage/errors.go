package storage

import (
	"errors"
	"fmt"
	"time"
)

// ErrBackpressure is matched (errors.Is) by every error that means "not now,
// try again later": the disk budget for unflushed data is used up, or the disk
// is full. Nothing of the refused batch was acknowledged. Inputs map it to
// HTTP 429/503 with Retry-After, to not acknowledging an MQTT message, or to
// not reading a TCP connection.
var ErrBackpressure = errors.New("storage is pushing back")

// ErrClosed is returned by calls on a closed store.
var ErrClosed = errors.New("storage is closed")

// BackpressureError says why a batch was refused and when to try again.
type BackpressureError struct {
	Reason     string        // e.g. "unflushed data 1.0 GiB reached disk_budget 1.0 GiB"
	RetryAfter time.Duration // a hint for the sender
	Err        error         // the underlying error, e.g. ENOSPC, if any
}

func (e *BackpressureError) Error() string {
	msg := fmt.Sprintf("storage is pushing back: %s; retry after %s", e.Reason, e.RetryAfter)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *BackpressureError) Is(target error) bool { return target == ErrBackpressure }
func (e *BackpressureError) Unwrap() error        { return e.Err }

// RetryAfter returns the retry hint carried by err, or def when it has none.
func RetryAfter(err error, def time.Duration) time.Duration {
	var bp *BackpressureError
	if errors.As(err, &bp) && bp.RetryAfter > 0 {
		return bp.RetryAfter
	}
	return def
}
