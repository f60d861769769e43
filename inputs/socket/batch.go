// Package socket accepts InfluxDB line protocol over TCP (newline-delimited
// streams) and UDP (datagrams of one or more lines), parses it with
// inputs/lineproto and hands batches to an inputs.Sink.
//
// TCP never drops what it read: when the sink pushes back it retries the same
// batch and stops reading meanwhile, so TCP flow control slows the sender.
// UDP cannot slow its senders: what it cannot queue or store is dropped and
// counted.
package socket

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/storage"
)

// Defaults applied to zero option values.
const (
	DefaultBatchLines = 5000
	DefaultBatchDelay = 10 * time.Millisecond
	DefaultRetryDelay = 100 * time.Millisecond
)

// batcher collects the points and rejects of one connection (or of the UDP
// listener) and writes them to the sink in batches.
type batcher struct {
	sink     inputs.Sink
	counters *inputs.Counters
	log      *slog.Logger
	batch    storage.Batch
}

func (b *batcher) size() int { return len(b.batch.Points) + len(b.batch.Rejects) }

// settle counts the batch as persisted (and its rejects as rejected) or, when
// failed, as dropped, and empties it for reuse.
func (b *batcher) settle(stored bool) {
	if stored {
		b.counters.PersistedPoints.Add(uint64(len(b.batch.Points)))
		b.counters.RejectedPoints.Add(uint64(len(b.batch.Rejects)))
	} else {
		b.counters.DroppedPoints.Add(uint64(b.size()))
	}
	clear(b.batch.Points) // let the strings go
	clear(b.batch.Rejects)
	b.batch.Points = b.batch.Points[:0]
	b.batch.Rejects = b.batch.Rejects[:0]
}

// flush writes the batch. With retry it waits out backpressure, retrying the
// same batch until it is stored or ctx ends; without, a batch pushed back is
// dropped. It returns nil once the batch is settled either way, and the sink's
// error when the batch failed for another reason (and was dropped).
func (b *batcher) flush(ctx context.Context, retry bool, retryDelay time.Duration) error {
	if b.size() == 0 {
		return nil
	}
	for {
		err := b.sink.WriteBatch(ctx, &b.batch)
		if err == nil {
			b.settle(true)
			return nil
		}
		if !errors.Is(err, storage.ErrBackpressure) {
			b.counters.WriteErrors.Add(1)
			b.log.Error("cannot store a batch; its points are dropped", "points", len(b.batch.Points),
				"rejects", len(b.batch.Rejects), "err", err)
			b.settle(false)
			return err
		}
		b.counters.Backpressure.Add(1)
		if !retry {
			b.settle(false)
			return nil
		}
		wait := storage.RetryAfter(err, retryDelay)
		b.log.Debug("storage pushes back; retrying the batch", "points", len(b.batch.Points), "after", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			b.log.Warn("stopped while storage pushed back; the batch is dropped", "points", b.size(), "err", err)
			b.settle(false)
			return ctx.Err()
		}
	}
}

func discardLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return l
}
