package wal

// Rotate seals the active segment and durably starts an empty one, so that
// every record written so far lies in sealed segments, which RemoveBefore can
// delete. A clean shutdown uses it to leave no covered records behind.
func (l *Log) Rotate() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	// With wmu held nothing is being written; records queued meanwhile
	// start right after what was written, at the new segment's start.
	first := l.nextPos - Position(l.pending.n)
	l.mu.Unlock()
	if err := l.seal(); err != nil {
		return err
	}
	return l.create(first, first-1)
}
