// Package sinktest provides an inputs.Sink for tests of inputs: it keeps
// what it is given, and can push back or fail on demand.
package sinktest

import (
	"context"
	"sync"
	"time"

	"github.com/fpagent/fpagent/storage"
)

// Sink records every batch it accepts. Set PushBack to refuse the next
// calls with backpressure, or Fail to fail them; Delay slows every call.
type Sink struct {
	mu       sync.Mutex
	points   []storage.Point
	rejects  []storage.Reject
	calls    int
	pushBack int   // calls left to refuse with backpressure
	fail     error // returned by every call while set
	delay    time.Duration
	retry    time.Duration
	changed  chan struct{}
}

// New returns an empty sink that accepts everything.
func New() *Sink { return &Sink{changed: make(chan struct{})} }

// PushBack makes the next n calls return a *storage.BackpressureError with
// the given retry hint.
func (s *Sink) PushBack(n int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pushBack, s.retry = n, retryAfter
}

// Fail makes every call return err until Fail(nil).
func (s *Sink) Fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

// Delay makes every call take d before it answers.
func (s *Sink) Delay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// WriteBatch implements inputs.Sink. It copies what it keeps, as the store
// does, since the caller reuses the batch.
func (s *Sink) WriteBatch(ctx context.Context, b *storage.Batch) error {
	s.mu.Lock()
	delay := s.delay
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail != nil {
		return s.fail
	}
	if s.pushBack > 0 {
		s.pushBack--
		return &storage.BackpressureError{Reason: "test sink pushes back", RetryAfter: s.retry}
	}
	s.points = append(s.points, b.Points...)
	for _, r := range b.Rejects {
		r.Payload = append([]byte(nil), r.Payload...)
		s.rejects = append(s.rejects, r)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// Points returns a copy of the points accepted so far.
func (s *Sink) Points() []storage.Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]storage.Point(nil), s.points...)
}

// HasPointAt reports whether a point with time ts was accepted; unlike
// Points it copies nothing, for tests that ask after every acknowledgement.
func (s *Sink) HasPointAt(ts int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.points {
		if s.points[i].Time == ts {
			return true
		}
	}
	return false
}

// Rejects returns a copy of the rejects accepted so far.
func (s *Sink) Rejects() []storage.Reject {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]storage.Reject(nil), s.rejects...)
}

// Calls returns how many times WriteBatch was called.
func (s *Sink) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// WaitFor waits until the sink holds at least points points and rejects
// rejects, and reports whether it did within timeout.
func (s *Sink) WaitFor(points, rejects int, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		done := len(s.points) >= points && len(s.rejects) >= rejects
		changed := s.changed
		s.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-changed:
		case <-deadline:
			return false
		}
	}
}
