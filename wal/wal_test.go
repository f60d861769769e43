package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// rec returns the deterministic payload of position p in the tests.
func rec(p Position) []byte {
	return fmt.Appendf(nil, "record-%06d|%s", p, strings.Repeat("x", int(p%7)))
}

func openT(t testing.TB, dir string, o Options) *Log {
	t.Helper()
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return l
}

func appendN(t testing.TB, l *Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		want := l.LastPosition() + 1
		got, err := l.Append(rec(want))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if got != want {
			t.Fatalf("Append returned position %d, want %d", got, want)
		}
	}
}

type readRec struct {
	pos Position
	rec string
}

// readAll reads everything visible from `from`.
func readAll(t testing.TB, l *Log, from Position) []readRec {
	t.Helper()
	r, err := l.NewReader(from)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer r.Close()
	var out []readRec
	for {
		b, p, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, readRec{p, string(b)})
	}
}

// positions returns the positions read, checking every payload.
func positions(t testing.TB, rs []readRec) []Position {
	t.Helper()
	var ps []Position
	for _, r := range rs {
		if r.rec != string(rec(r.pos)) {
			t.Fatalf("position %d holds %q, want %q", r.pos, r.rec, rec(r.pos))
		}
		ps = append(ps, r.pos)
	}
	return ps
}

func seq(from, to Position) []Position {
	var ps []Position
	for p := from; p <= to; p++ {
		ps = append(ps, p)
	}
	return ps
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if strings.HasSuffix(e.Name(), segmentSuffix) {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	for _, sync := range []SyncPolicy{SyncAlways, SyncInterval, SyncNone} {
		t.Run(string(sync), func(t *testing.T) {
			dir := filepath.Join(dir, string(sync))
			l := openT(t, dir, Options{Sync: sync, MaxSegmentSize: 1000})
			appendN(t, l, 100)
			last, err := l.AppendBatch([][]byte{rec(101), rec(102), rec(103)})
			if err != nil || last != 103 {
				t.Fatalf("AppendBatch = %d, %v; want 103, nil", last, err)
			}
			if got := positions(t, readAll(t, l, 0)); !slices.Equal(got, seq(1, 103)) {
				t.Fatalf("read %v", got)
			}
			if got := positions(t, readAll(t, l, 50)); !slices.Equal(got, seq(50, 103)) {
				t.Fatalf("read from 50: %v", got)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openT(t, dir, Options{Sync: sync, MaxSegmentSize: 1000})
			defer l.Close()
			if l.LastPosition() != 103 || l.FirstPosition() != 1 {
				t.Fatalf("after reopen: first %d last %d", l.FirstPosition(), l.LastPosition())
			}
			appendN(t, l, 10)
			if got := positions(t, readAll(t, l, 0)); !slices.Equal(got, seq(1, 113)) {
				t.Fatalf("after reopen read %v", got)
			}
			if st := l.Stats(); st.Corruptions != 0 || st.Gaps != 0 || st.WriteErrors != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

var _ = bytes.Equal
var _ = context.Background
var _ = errors.Is
var _ sync.Mutex
var _ = time.Now
var _ = slog.Default
