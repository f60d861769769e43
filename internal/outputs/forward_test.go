package outputs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fpagent/fpagent/storage"
	"github.com/fpagent/fpagent/wal"
)

// These tests run a real Forwarder on a real store's feed, with a fake Sender.

const feedName = "t"

// t0 is the time of point 0; point k is at t0+k.
const t0 = 1_700_000_000_000_000_000

// fakeSender records what it accepted; script, when set, decides each call's
// answer (call counts from 0).
type fakeSender struct {
	script func(ctx context.Context, call int, b *Batch) error

	mu       sync.Mutex
	calls    int
	sizes    []int // points of each call
	accepted []storage.Point
	lines    []string
	closed   bool
}

func (s *fakeSender) Send(ctx context.Context, b *Batch) error {
	s.mu.Lock()
	call := s.calls
	s.calls++
	s.sizes = append(s.sizes, b.Len())
	s.mu.Unlock()
	var err error
	if s.script != nil {
		err = s.script(ctx, call, b)
	}
	if err == nil {
		s.mu.Lock()
		s.accepted = append(s.accepted, b.Points...)
		for i := range b.Len() {
			s.lines = append(s.lines, string(b.Line(i)))
		}
		s.mu.Unlock()
	}
	return err
}

func (s *fakeSender) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// times returns the point numbers (time - t0) the sender accepted, in order.
func (s *fakeSender) times() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int64, len(s.accepted))
	for i, p := range s.accepted {
		out[i] = p.Time - t0
	}
	return out
}

func (s *fakeSender) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *fakeSender) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func openStore(t *testing.T, dir string) *storage.Store {
	t.Helper()
	cfg := storage.DefaultConfig()
	cfg.BaseDir = filepath.Join(dir, "wal")
	cfg.FlushInterval = time.Hour // the tests flush when they mean to
	cfg.BatchSize = 1 << 30
	cfg.Threads = 1
	cfg.Sync = wal.SyncNone
	cfg.Feeds = []storage.FeedConfig{{Name: feedName}}
	s, err := storage.Open(filepath.Join(dir, "fpagent.duckdb"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // ErrClosed when the test closed it
	return s
}

func feed(t *testing.T, s *storage.Store) *storage.Feed {
	t.Helper()
	f, err := s.Feed(feedName)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// numbered returns point k: m,i=<k> v=<k>i <t0+k>.
func numbered(k int) storage.Point {
	return point("m", tags("i", fmt.Sprint(k)), t0+int64(k), "v", int64(k))
}

func numberedLine(k int) string { return fmt.Sprintf("m,i=%d v=%di %d", k, k, t0+int64(k)) }

// write stores points first..first+n-1 as one WAL record.
func write(t *testing.T, s *storage.Store, first, n int) {
	t.Helper()
	pts := make([]storage.Point, n)
	for i := range pts {
		pts[i] = numbered(first + i)
	}
	writePoints(t, s, pts...)
}

func writePoints(t *testing.T, s *storage.Store, pts ...storage.Point) {
	t.Helper()
	if err := s.WriteBatch(context.Background(), &storage.Batch{Source: "test", Points: pts}); err != nil {
		t.Fatal(err)
	}
}

func seq(from, to int) []int64 {
	var out []int64
	for k := from; k < to; k++ {
		out = append(out, int64(k))
	}
	return out
}

// startForwarder starts a Forwarder on the store's feed; cfg's Feed, Sender,
// DeadLetter and retry times are filled in when empty.
func startForwarder(t *testing.T, s *storage.Store, snd Sender, cfg Config) *Forwarder {
	t.Helper()
	cfg.Name, cfg.Type, cfg.Feed, cfg.Sender = feedName, "fake", feed(t, s), snd
	if cfg.DeadLetter == nil {
		cfg.DeadLetter = s.DeadLetter
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin, cfg.RetryMax = time.Millisecond, 5*time.Millisecond
	}
	f := New(cfg)
	f.Start()
	t.Cleanup(func() { stop(t, f) })
	return f
}

func stop(t *testing.T, f *Forwarder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitCaughtUp(t *testing.T, f *Forwarder) {
	t.Helper()
	waitFor(t, "the cursor to reach the end of the WAL", func() bool { return f.Stats().LagRecords == 0 })
}

func waitAccepted(t *testing.T, snd *fakeSender, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d accepted points", n), func() bool { return len(snd.times()) >= n })
}

type deadLetter struct {
	source, origin, reason, payload string
}

// deadLetters flushes the store and returns the dead letters of outputs.
func deadLetters(t *testing.T, s *storage.Store) []deadLetter {
	t.Helper()
	if err := s.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows, err := s.DB().Query(`SELECT source, origin, reason, payload FROM dead_letters WHERE source = 'output' ORDER BY payload`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []deadLetter
	for rows.Next() {
		var d deadLetter
		var payload []byte
		if err := rows.Scan(&d.source, &d.origin, &d.reason, &payload); err != nil {
			t.Fatal(err)
		}
		d.payload = string(payload)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.DB().QueryRow(`SELECT count(*) FROM dead_letters`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(out) {
		t.Fatalf("dead_letters holds %d rows, %d of them from outputs; want only output rows", n, len(out))
	}
	return out
}

func TestForwardDeliversEveryPointInOrder(t *testing.T) {
	s := openStore(t, t.TempDir())
	write(t, s, 0, 5)
	write(t, s, 5, 5)
	snd := &fakeSender{}
	f := startForwarder(t, s, snd, Config{BatchSize: 4})
	write(t, s, 10, 5) // while it runs: the feed waits for it

	waitAccepted(t, snd, 15)
	waitCaughtUp(t, f)
	if got := snd.times(); !slices.Equal(got, seq(0, 15)) {
		t.Fatalf("accepted points %v, want 0..14 in order, once each", got)
	}
	for k, l := range snd.lines {
		if l != numberedLine(k) {
			t.Fatalf("line %d = %q, want %q", k, l, numberedLine(k))
		}
	}
	for i, n := range snd.sizes {
		if n > 4 || n == 0 {
			t.Errorf("send %d carried %d points, want 1 to BatchSize (4)", i, n)
		}
	}
	st := f.Stats()
	if st.SentPoints != 15 || st.SentBatches != uint64(len(snd.sizes)) || st.Failures != 0 || st.Retries != 0 ||
		st.DeadLettered != 0 || !st.Healthy || st.Type != "fake" {
		t.Fatalf("stats %+v; want 15 points in %d batches, no failures, healthy, type fake", st, len(snd.sizes))
	}
}

func TestForwardRetriesTransientFailures(t *testing.T) {
	s := openStore(t, t.TempDir())
	start := feed(t, s).Cursor()
	write(t, s, 0, 5)
	reached, release := make(chan struct{}), make(chan struct{})
	snd := &fakeSender{script: func(ctx context.Context, call int, b *Batch) error {
		if call < 3 {
			return errors.New("connection refused")
		}
		if call == 3 {
			close(reached)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}}
	f := startForwarder(t, s, snd, Config{})

	<-reached // three failures behind it, the fourth attempt under way
	ok, why := f.Healthy()
	if ok || !strings.Contains(why, "connection refused") || !strings.Contains(why, "3 attempts") {
		t.Errorf("Healthy() = %v, %q while failing; want false, with the error and 3 attempts", ok, why)
	}
	if st := f.Stats(); st.Failures != 3 || st.Retries != 3 || st.SentPoints != 0 || st.Healthy {
		t.Errorf("stats while failing %+v; want 3 failures, 3 retries, nothing sent, unhealthy", st)
	}
	if c := feed(t, s).Cursor(); c != start {
		t.Errorf("cursor moved to %d before the points were accepted; want %d", c, start)
	}
	close(release)

	waitAccepted(t, snd, 5)
	waitCaughtUp(t, f)
	if got := snd.times(); !slices.Equal(got, seq(0, 5)) {
		t.Fatalf("accepted %v, want 0..4 once each", got)
	}
	if ok, why := f.Healthy(); !ok {
		t.Errorf("Healthy() = false (%s) after a send went through", why)
	}
	if st := f.Stats(); st.Failures != 3 || st.Retries != 3 || st.SentBatches != 1 || !st.Healthy || st.Error != "" {
		t.Errorf("stats after recovery %+v; want 3 failures, 3 retries, 1 batch, healthy", st)
	}
	if n := snd.callCount(); n != 4 {
		t.Errorf("%d sends, want 4", n)
	}
}

func TestForwardDeadLettersRefusedPoints(t *testing.T) {
	s := openStore(t, t.TempDir())
	write(t, s, 0, 3)
	write(t, s, 3, 3)
	snd := &fakeSender{script: func(_ context.Context, _ int, b *Batch) error {
		if b.Points[0].Time == t0 {
			return &PermanentError{Err: errors.New("400 Bad Request: field type conflict")}
		}
		return nil
	}}
	// The dead-letter table refuses twice: the forwarder keeps at it.
	var dlCalls int
	dl := func(ctx context.Context, r []storage.Reject) error {
		if dlCalls++; dlCalls <= 2 {
			return errors.New("disk hiccup")
		}
		return s.DeadLetter(ctx, r)
	}
	f := startForwarder(t, s, snd, Config{BatchSize: 3, DeadLetter: dl})

	waitAccepted(t, snd, 3)
	waitFor(t, "3 dead-lettered points", func() bool { return f.Stats().DeadLettered == 3 })
	waitCaughtUp(t, f)
	if got := snd.times(); !slices.Equal(got, seq(3, 6)) {
		t.Fatalf("accepted %v, want 3..5", got)
	}
	if n := snd.callCount(); n != 2 {
		t.Errorf("%d sends, want 2: refused points are not sent again", n)
	}
	if st := f.Stats(); st.Failures != 0 || st.Retries != 0 || !st.Healthy || st.SentPoints != 3 {
		t.Errorf("stats %+v; want 3 sent, 3 dead-lettered, no failures, healthy", st)
	}
	got := deadLetters(t, s)
	if len(got) != 3 {
		t.Fatalf("dead letters %+v, want 3", got)
	}
	for k, d := range got {
		if d.origin != feedName || !strings.Contains(d.reason, "field type conflict") || d.payload != numberedLine(k) {
			t.Errorf("dead letter %d = %+v; want origin %q, the remote reason, payload %q", k, d, feedName, numberedLine(k))
		}
	}
}

func TestForwardDeadLettersPointsLineProtocolCannotCarry(t *testing.T) {
	s := openStore(t, t.TempDir())
	nan := point("m", tags("i", "1"), t0+1, "v", math.NaN())
	newline := point("m", tags("i", "2\nx"), t0+2, "v", int64(2))
	writePoints(t, s, numbered(0), nan, newline, numbered(3))
	snd := &fakeSender{}
	f := startForwarder(t, s, snd, Config{})

	waitAccepted(t, snd, 2)
	waitFor(t, "2 dead-lettered points", func() bool { return f.Stats().DeadLettered == 2 })
	waitCaughtUp(t, f)
	if got := snd.times(); !slices.Equal(got, []int64{0, 3}) {
		t.Fatalf("accepted %v, want 0 and 3", got)
	}
	got := deadLetters(t, s)
	if len(got) != 2 {
		t.Fatalf("dead letters %+v, want 2", got)
	}
	for _, want := range []string{`"i":"1"},"fields":{"v":null}`, `"i":"2\nx"},"fields":{"v":2}`} {
		if !slices.ContainsFunc(got, func(d deadLetter) bool {
			return strings.Contains(d.payload, want) && strings.HasPrefix(d.reason, "cannot be forwarded")
		}) {
			t.Errorf("no dead letter with a JSON payload holding %s and a reason: %+v", want, got)
		}
	}
}

func TestForwardSplitsBatchesTooLarge(t *testing.T) {
	s := openStore(t, t.TempDir())
	write(t, s, 0, 7)
	snd := &fakeSender{script: func(_ context.Context, _ int, b *Batch) error {
		switch {
		case b.Len() > 2:
			return fmt.Errorf("%w: 413 Request Entity Too Large", ErrTooLarge)
		case slices.ContainsFunc(b.Points, func(p storage.Point) bool { return p.Time == t0+5 }):
			return fmt.Errorf("%w: point 5 alone is too large", ErrTooLarge)
		}
		return nil
	}}
	f := startForwarder(t, s, snd, Config{BatchSize: 8})

	waitAccepted(t, snd, 6)
	waitFor(t, "point 5 dead-lettered", func() bool { return f.Stats().DeadLettered == 1 })
	waitCaughtUp(t, f)
	if got := snd.times(); !slices.Equal(got, []int64{0, 1, 2, 3, 4, 6}) {
		t.Fatalf("accepted %v, want 0..6 but 5, in order", got)
	}
	if st := f.Stats(); st.Failures != 0 || st.Retries != 0 || st.SentPoints != 6 {
		t.Errorf("stats %+v; want 6 sent, no failures or retries for sizes", st)
	}
	if got := deadLetters(t, s); len(got) != 1 || got[0].payload != numberedLine(5) || !strings.Contains(got[0].reason, "too large") {
		t.Errorf("dead letters %+v; want point 5's line, refused as too large", got)
	}
}

func TestForwardHonoursRetryAfter(t *testing.T) {
	s := openStore(t, t.TempDir())
	write(t, s, 0, 1)
	var at [3]time.Time
	snd := &fakeSender{script: func(_ context.Context, call int, _ *Batch) error {
		if call < len(at) {
			at[call] = time.Now()
		}
		switch call {
		case 0:
			return &RetryAfterError{Err: errors.New("429 Too Many Requests"), After: 100 * time.Millisecond}
		case 1: // longer than RetryMax: RetryMax wins
			return &RetryAfterError{Err: errors.New("503 Service Unavailable"), After: time.Hour}
		}
		return nil
	}}
	f := startForwarder(t, s, snd, Config{RetryMin: time.Millisecond, RetryMax: 150 * time.Millisecond})

	waitAccepted(t, snd, 1)
	if gap := at[1].Sub(at[0]); gap < 100*time.Millisecond {
		t.Errorf("retried %s after a Retry-After of 100ms", gap)
	}
	if st := f.Stats(); st.Retries != 2 || st.Failures != 2 {
		t.Errorf("stats %+v; want 2 failures and 2 retries", st)
	}
}

func TestForwardStopDuringFailingSend(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		script func(ctx context.Context, call int, b *Batch) error
	}{
		{"send under way", Config{}, func(ctx context.Context, _ int, _ *Batch) error {
			<-ctx.Done() // a send that hangs until given up
			return ctx.Err()
		}},
		{"waiting to retry", Config{RetryMin: time.Hour, RetryMax: time.Hour}, func(context.Context, int, *Batch) error {
			return errors.New("connection refused")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			start := feed(t, s).Cursor()
			write(t, s, 0, 3)
			snd := &fakeSender{script: tt.script}
			f := startForwarder(t, s, snd, tt.cfg)
			waitFor(t, "a send", func() bool { return snd.callCount() > 0 })

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := f.Stop(ctx); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if c := feed(t, s).Cursor(); c != start {
				t.Errorf("cursor %d after Stop, want %d: nothing was accepted", c, start)
			}
			if !snd.isClosed() {
				t.Error("Stop did not close the sender")
			}
			if n := len(snd.times()); n != 0 {
				t.Errorf("%d points accepted, want none", n)
			}
		})
	}
}

func TestForwardRestartSendsOnlyWhatWasNotAccepted(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	write(t, s, 0, 3)
	write(t, s, 3, 3)
	write(t, s, 6, 3)
	// The remote side takes the first two records, then goes down.
	snd := &fakeSender{script: func(_ context.Context, _ int, b *Batch) error {
		if b.Points[0].Time >= t0+6 {
			return errors.New("connection refused")
		}
		return nil
	}}
	f := startForwarder(t, s, snd, Config{BatchSize: 3})
	waitAccepted(t, snd, 6)
	waitFor(t, "the cursor after record 2 and a failure on record 3", func() bool {
		st := f.Stats()
		return st.LagRecords == 1 && st.Failures > 0
	})
	stop(t, f)
	committed := feed(t, s).Cursor()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	if c := feed(t, s).Cursor(); c != committed {
		t.Fatalf("cursor %d after reopening, want %d as committed", c, committed)
	}
	snd2 := &fakeSender{}
	f = startForwarder(t, s, snd2, Config{BatchSize: 3})
	write(t, s, 9, 3)
	waitAccepted(t, snd2, 6)
	waitCaughtUp(t, f)
	if got := snd2.times(); !slices.Equal(got, seq(6, 12)) {
		t.Fatalf("after the restart the sender got %v, want 6..11: only what was not accepted, and the new points", got)
	}
}

func TestBackoffStaysWithinBounds(t *testing.T) {
	tests := []struct{ min, max time.Duration }{
		{time.Millisecond, 10 * time.Millisecond},
		{time.Second, time.Minute},
		{time.Minute, time.Hour},
		{30 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		f := New(Config{RetryMin: tt.min, RetryMax: tt.max})
		for n := 1; n <= 40; n++ {
			f.attempts = n
			ceil := tt.max // RetryMin doubled per attempt, up to RetryMax
			if tt.min <= tt.max>>(n-1) {
				ceil = tt.min << (n - 1)
			}
			for range 50 {
				if w := f.backoff(); w < tt.min/2 || w > ceil {
					t.Fatalf("RetryMin %s, RetryMax %s, attempt %d: waits %s, want %s to %s", tt.min, tt.max, n, w, tt.min/2, ceil)
				}
			}
		}
	}
}

func TestNewDefaults(t *testing.T) {
	tests := []struct {
		in                 Config
		batch              int
		retryMin, retryMax time.Duration
	}{
		{Config{}, 5000, time.Second, time.Minute},
		{Config{BatchSize: 10, RetryMin: time.Millisecond, RetryMax: time.Second}, 10, time.Millisecond, time.Second},
		{Config{RetryMin: 2 * time.Minute}, 5000, 2 * time.Minute, 2 * time.Minute},
		{Config{RetryMin: time.Second, RetryMax: time.Millisecond}, 5000, time.Second, time.Minute},
	}
	for _, tt := range tests {
		f := New(tt.in)
		if f.cfg.BatchSize != tt.batch || f.cfg.RetryMin != tt.retryMin || f.cfg.RetryMax != tt.retryMax {
			t.Errorf("New(%+v): batch %d, retry %s to %s; want %d, %s to %s", tt.in,
				f.cfg.BatchSize, f.cfg.RetryMin, f.cfg.RetryMax, tt.batch, tt.retryMin, tt.retryMax)
		}
	}
}

func TestCollector(t *testing.T) {
	s := openStore(t, t.TempDir())
	write(t, s, 0, 4)
	snd := &fakeSender{}
	f := startForwarder(t, s, snd, Config{})
	waitAccepted(t, snd, 4)
	waitCaughtUp(t, f)

	reg := prometheus.NewPedanticRegistry() // also checks Collect against Describe
	if err := reg.Register(NewCollector([]*Forwarder{f})); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["output"] != feedName || labels["type"] != "fake" {
				t.Errorf("%s has labels %v, want output=%s type=fake", mf.GetName(), labels, feedName)
			}
			got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"fpagent_output_sent_points_total":  4,
		"fpagent_output_sent_batches_total": 1,
		"fpagent_output_failed_sends_total": 0,
		"fpagent_output_lag_records":        0,
		"fpagent_output_up":                 1,
		"fpagent_output_cursor_position":    float64(feed(t, s).Cursor()),
	}
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (present: %v), want %v", name, g, ok, v)
		}
	}
	if len(got) != 14 {
		t.Errorf("%d metrics, want 14", len(got))
	}
}
