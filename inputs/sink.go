// Package inputs holds what every input shares: the sink an input writes to
// and the per-input counters. Each input lives in a package of its own below.
package inputs

import (
	"context"

	"github.com/fpagent/fpagent/storage"
)

// Sink takes batches from an input. WriteBatch returns nil once every point and
// reject of b is durable, and only then may the input acknowledge the sender.
// On error nothing of b may be acknowledged; errors.Is(err,
// storage.ErrBackpressure) means "try again later" (storage.RetryAfter gives a
// hint). WriteBatch does not keep b or anything it points to after it returns,
// and treats the points' Tags as read-only: the parser shares one Tags slice
// among the points of a series.
type Sink interface {
	WriteBatch(ctx context.Context, b *storage.Batch) error
}
