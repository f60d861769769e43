package wal

import (
	"fmt"
	"testing"
)

func TestRotateLetsRemoveBeforeTakeEverything(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := l.Append([]byte(fmt.Sprintf("record %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Rotate(); err != nil {
		t.Fatal(err)
	}
	if n, err := l.RemoveBefore(l.LastPosition() + 1); err != nil || n != 1 {
		t.Fatalf("RemoveBefore after Rotate removed %d segments, err %v; want 1", n, err)
	}
	if recs, _ := l.Behind(0); recs != 0 {
		t.Fatalf("%d records left after removing everything", recs)
	}
	// Positions go on where they were.
	pos, err := l.Append([]byte("after"))
	if err != nil || pos != 11 {
		t.Fatalf("append after Rotate = %d, %v; want 11", pos, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := l.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rec, pos, err := r.Next()
	if err != nil || pos != 11 || string(rec) != "after" {
		t.Fatalf("after reopen: %q at %d, %v", rec, pos, err)
	}
	if st := l.Stats(); st.Gaps != 0 || st.Corruptions != 0 {
		t.Fatalf("reopen reports problems: %+v", st)
	}
}
