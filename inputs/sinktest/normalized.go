package sinktest

import (
	"fmt"
	"testing"

	"github.com/fpagent/fpagent/storage"
)

// CheckNormalized fails the test unless p is a point the store takes, as
// Normalize leaves it and with the canonical key: what an input promises
// when it marks its batches storage.Batch.Normalized.
func CheckNormalized(t testing.TB, p storage.Point) {
	t.Helper()
	if p.Measurement == "" || len(p.Fields) == 0 {
		t.Fatalf("invalid point %+v", p)
	}
	q := p
	q.Key = ""
	q.Tags = append([]storage.Tag(nil), p.Tags...)
	q.Fields = append([]storage.Field(nil), p.Fields...)
	q.Normalize()
	if q.Key != p.Key || fmt.Sprint(q.Tags) != fmt.Sprint(p.Tags) || fmt.Sprint(q.Fields) != fmt.Sprint(p.Fields) {
		t.Fatalf("point not normalized:\n got %+v\nwant %+v", p, q)
	}
}
