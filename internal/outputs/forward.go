// Package outputs forwards what the agent stores to other systems: store and
// forward, with the WAL as the durable queue. Each output reads the WAL
// through its own storage.Feed, sends batches with a Sender, and moves its
// persisted cursor only after the remote side accepted a batch; so a link
// that is down loses nothing, and a crash means some points are sent again
// (harmless to engines that treat a point as (series, timestamp)).
package outputs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fpagent/fpagent/storage"
)

// Sender delivers points to one remote system.
type Sender interface {
	// Send returns nil once the remote side accepted every point. Errors
	// are retried, except a *PermanentError (the points are dead-lettered)
	// and ErrTooLarge (the batch is split).
	Send(ctx context.Context, b *Batch) error
	Close() error
}

// PermanentError means retrying the same points cannot succeed: the remote
// side refused them as malformed (HTTP 400, 422).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// RetryAfterError carries the remote side's request to wait (HTTP 429, 503).
type RetryAfterError struct {
	Err   error
	After time.Duration
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }

// ErrTooLarge means the remote side refused the batch for its size (HTTP
// 413): it is sent again in halves.
var ErrTooLarge = errors.New("the remote side refused the batch as too large")

// DeadLetterFunc keeps points the remote side refused for good, with the reason.
type DeadLetterFunc func(ctx context.Context, rejects []storage.Reject) error

// Config configures a Forwarder.
type Config struct {
	Name       string
	Type       string // "influx", "mqtt": a label in metrics and stats
	Feed       *storage.Feed
	Sender     Sender
	DeadLetter DeadLetterFunc
	BatchSize  int           // points per Send; default 5000
	RetryMin   time.Duration // first wait after a failure; doubles up to RetryMax; default 1s
	RetryMax   time.Duration // default 1m
	Logger     *slog.Logger
}

// Forwarder moves one feed to one remote system.
type Forwarder struct {
	cfg Config
	log *slog.Logger

	sentPoints, sentBatches, failures, retries, deadLettered atomic.Uint64

	mu           sync.Mutex
	failingSince time.Time // zero while the last attempt succeeded
	lastErr      string
	attempts     int // failed attempts in a row

	enc   encoder
	batch Batch

	stop context.CancelFunc
	done chan struct{}
}

// New returns a Forwarder; Start runs it.
func New(cfg Config) *Forwarder {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 5000
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(time.Minute, cfg.RetryMin)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Forwarder{cfg: cfg, log: cfg.Logger, done: make(chan struct{})}
}

// Name returns the output's name.
func (f *Forwarder) Name() string { return f.cfg.Name }

// Start runs the forwarding loop until Stop.
func (f *Forwarder) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	go func() {
		defer close(f.done)
		f.run(ctx)
	}()
}

// Stop ends the loop, abandoning a send under way (its points are sent again
// after the next start), and closes the sender.
func (f *Forwarder) Stop(ctx context.Context) error {
	if f.stop != nil {
		f.stop()
		select {
		case <-f.done:
		case <-ctx.Done():
			return fmt.Errorf("output %s did not stop: %w", f.cfg.Name, ctx.Err())
		}
	}
	f.cfg.Feed.Close()
	return f.cfg.Sender.Close()
}

func (f *Forwarder) run(ctx context.Context) {
	for ctx.Err() == nil {
		b, err := f.cfg.Feed.Read(ctx, f.cfg.BatchSize)
		if err != nil {
			if ctx.Err() == nil {
				f.log.Error("output stopped reading the WAL", "output", f.cfg.Name, "err", err)
				f.fail(err)
			}
			return
		}
		for i := 0; i < len(b.Points) && ctx.Err() == nil; i += f.cfg.BatchSize {
			bad := f.enc.encode(b.Points[i:min(i+f.cfg.BatchSize, len(b.Points))], &f.batch)
			if len(bad) > 0 {
				f.deadLetterBad(ctx, bad)
			}
			if f.batch.Len() > 0 {
				f.deliver(ctx, &f.batch)
			}
		}
		if ctx.Err() != nil {
			return
		}
		for {
			err := f.cfg.Feed.Commit(b.Last)
			if err == nil {
				break
			}
			// The points went out; only the cursor is not saved. Keep
			// trying: until it is, a crash would send them again.
			f.log.Warn("output: cannot save its cursor; retrying", "output", f.cfg.Name, "err", err)
			if !sleep(ctx, f.cfg.RetryMin) {
				return
			}
		}
	}
}

// deliver sends pts until the remote side accepted them, splits a batch it
// finds too large, and dead-letters points refused for good. It returns
// early only when ctx is done.
func (f *Forwarder) deliver(ctx context.Context, b *Batch) {
	for ctx.Err() == nil {
		err := f.cfg.Sender.Send(ctx, b)
		var perm *PermanentError
		switch {
		case err == nil:
			f.ok()
			f.sentPoints.Add(uint64(b.Len()))
			f.sentBatches.Add(1)
			return
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrTooLarge) && b.Len() > 1:
			f.log.Info("output: the remote side refused a batch as too large; sending it in halves",
				"output", f.cfg.Name, "points", b.Len())
			h := b.Len() / 2
			f.deliver(ctx, b.Slice(0, h))
			f.deliver(ctx, b.Slice(h, b.Len()))
			return
		case errors.As(err, &perm) || errors.Is(err, ErrTooLarge):
			f.ok()
			rejects := make([]storage.Reject, b.Len())
			for i := range rejects {
				rejects[i] = storage.Reject{Reason: "refused by the remote side: " + err.Error(), Payload: b.Line(i)}
			}
			f.deadLetter(ctx, rejects)
			return
		}
		f.fail(err)
		f.retries.Add(1)
		wait := f.backoff()
		var ra *RetryAfterError
		if errors.As(err, &ra) {
			wait = max(wait, min(ra.After, f.cfg.RetryMax))
		}
		f.log.Warn("output: send failed; retrying", "output", f.cfg.Name, "points", b.Len(),
			"attempt", f.attemptCount(), "retry_in", wait.Round(time.Millisecond), "err", err)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// deadLetterBad sets aside the points line protocol cannot carry.
func (f *Forwarder) deadLetterBad(ctx context.Context, bad []badPoint) {
	rejects := make([]storage.Reject, len(bad))
	for i, b := range bad {
		rejects[i] = storage.Reject{Reason: "cannot be forwarded: " + b.reason, Payload: b.point.AppendJSON(nil)}
	}
	f.deadLetter(ctx, rejects)
}

// deadLetter keeps points that cannot be delivered in the dead-letter table,
// one row each, so that none is dropped without a trace.
func (f *Forwarder) deadLetter(ctx context.Context, rejects []storage.Reject) {
	now := time.Now().UnixNano()
	for i := range rejects {
		r := &rejects[i]
		// Line 0: the payload itself identifies a row, so a batch set
		// aside again after a crash does not add rows.
		r.Time, r.Source, r.Origin, r.Line = now, "output", f.cfg.Name, 0
		r.Payload = append([]byte(nil), r.Payload...)
	}
	for ctx.Err() == nil {
		err := f.cfg.DeadLetter(ctx, rejects)
		if err == nil {
			f.deadLettered.Add(uint64(len(rejects)))
			f.log.Warn("output: points that cannot be delivered are in the dead-letter table",
				"output", f.cfg.Name, "points", len(rejects), "reason", rejects[0].Reason)
			return
		}
		f.log.Error("output: cannot dead-letter refused points; retrying", "output", f.cfg.Name, "err", err)
		if !sleep(ctx, f.cfg.RetryMin) {
			return
		}
	}
}

func (f *Forwarder) ok() {
	f.mu.Lock()
	if !f.failingSince.IsZero() {
		f.log.Info("output: sending again", "output", f.cfg.Name, "after", time.Since(f.failingSince).Round(time.Millisecond))
	}
	f.failingSince, f.lastErr, f.attempts = time.Time{}, "", 0
	f.mu.Unlock()
}

func (f *Forwarder) fail(err error) {
	f.failures.Add(1)
	f.mu.Lock()
	if f.failingSince.IsZero() {
		f.failingSince = time.Now()
	}
	f.lastErr = err.Error()
	f.attempts++
	f.mu.Unlock()
}

func (f *Forwarder) attemptCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts
}

// backoff is exponential with full jitter, so that many edge agents cut off
// from one central store do not come back in lockstep.
func (f *Forwarder) backoff() time.Duration {
	n := min(f.attemptCount(), 30)
	ceil := min(f.cfg.RetryMin<<max(n-1, 0), f.cfg.RetryMax)
	if ceil <= 0 {
		ceil = f.cfg.RetryMax
	}
	return f.cfg.RetryMin/2 + rand.N(ceil-f.cfg.RetryMin/2+1)
}

// Healthy reports whether the last send succeeded; if not, since when and why.
func (f *Forwarder) Healthy() (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failingSince.IsZero() {
		return true, ""
	}
	return false, fmt.Sprintf("output %q failing for %s (%d attempts): %s", f.cfg.Name,
		time.Since(f.failingSince).Round(time.Second), f.attempts, f.lastErr)
}

// Stats are an output's figures, in /stats.
type Stats struct {
	Type string `json:"type"`
	storage.FeedStats
	SentPoints   uint64 `json:"sent_points"`
	SentBatches  uint64 `json:"sent_batches"`
	Failures     uint64 `json:"failed_sends"`
	Retries      uint64 `json:"retries"`
	DeadLettered uint64 `json:"dead_lettered_points"`
	Healthy      bool   `json:"healthy"`
	Error        string `json:"error,omitempty"`
}

// Stats returns the output's figures.
func (f *Forwarder) Stats() Stats {
	ok, why := f.Healthy()
	return Stats{
		Type: f.cfg.Type, FeedStats: f.cfg.Feed.Stats(),
		SentPoints: f.sentPoints.Load(), SentBatches: f.sentBatches.Load(),
		Failures: f.failures.Load(), Retries: f.retries.Load(), DeadLettered: f.deadLettered.Load(),
		Healthy: ok, Error: why,
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
