package lineproto

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/fpagent/fpagent/inputs/sinktest"
	"github.com/fpagent/fpagent/storage"
)

// FuzzParse checks that any input parses without a panic into valid,
// normalized points, that every line is accounted for, that the caches of a
// warm parser change nothing, and that nothing refers to the input afterwards.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"cpu,host=server01,region=us-west,dc=dc1 usage_user=12.5,usage_system=3.2,usage_idle=84.3 1700000000000000000\n",
		"c\\,pu,a\\ b=c\\=d f\\ k=\"s\\\"t\\\\\",i=1i,u=2u,b=t 1\r\n# c\n\nbad\n",
		"m,t=1,t=2 v=1,v=2\nm,t=1 v=3 -5\n",
		"m s=\"multi\nline\" 1\nm v=1 99999999999999999999\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A hang is a finding too: crash the worker so that the input is kept.
		hung := time.AfterFunc(10*time.Second, func() { panic(fmt.Sprintf("parsing %d bytes took over 10s", len(data))) })
		defer hung.Stop()
		in := bytes.Clone(data)
		m := Meta{Source: "fuzz", Received: time.Unix(1, 0), Precision: time.Millisecond,
			Tags: []storage.Tag{{Key: "db", Value: "x"}}}
		cold := newParser()
		var b1 storage.Batch
		n, r := cold.parse(&b1, in, &m)
		if n != len(b1.Points) || r != len(b1.Rejects) {
			t.Fatalf("counts %d/%d, batch %d/%d", n, r, len(b1.Points), len(b1.Rejects))
		}
		lines := bytes.Count(data, []byte{'\n'}) + 1
		for _, rj := range b1.Rejects {
			if rj.Line < 1 || rj.Line > lines || rj.Reason == "" {
				t.Fatalf("reject with line %d of %d, reason %q", rj.Line, lines, rj.Reason)
			}
		}
		json1 := points(t, b1.Points)
		// A second pass runs on warm caches, mostly on the fast path, and
		// must give what the decoder alone gives.
		var b2 storage.Batch
		cold.parse(&b2, in, &m)
		ref := newParser()
		ref.noFast = true
		var b3 storage.Batch
		ref.parse(&b3, in, &m)
		json3 := points(t, b3.Points)
		if json2 := points(t, b2.Points); !bytes.Equal(json1, json2) || !bytes.Equal(json2, json3) {
			t.Fatalf("parses differ:\ncold:\n%s\nwarm:\n%s\ndecoder alone:\n%s", json1, json2, json3)
		}
		if r1, r2, r3 := rejects(b1.Rejects), rejects(b2.Rejects), rejects(b3.Rejects); r1 != r2 || r2 != r3 {
			t.Fatalf("rejects differ:\ncold:\n%s\nwarm:\n%s\ndecoder alone:\n%s", r1, r2, r3)
		}
		// A parser kept across inputs, as the pool keeps them, carries
		// what earlier inputs left in its caches into this one.
		var b4 storage.Batch
		acrossInputs.parse(&b4, in, &m)
		if json4 := points(t, b4.Points); !bytes.Equal(json4, json3) {
			t.Fatalf("a parser warmed by earlier inputs parses differently:\n%s\ndecoder alone:\n%s", json4, json3)
		}
		for i := range in {
			in[i] = '#'
		}
		if again := points(t, b1.Points); !bytes.Equal(json1, again) {
			t.Fatalf("points changed with the input buffer")
		}
	})
}

// acrossInputs is FuzzParse's parser that every input of a fuzz worker
// shares. A finding it makes may need the inputs before it to reproduce.
var acrossInputs = newParser()

func points(t *testing.T, ps []storage.Point) []byte {
	t.Helper()
	var out []byte
	for _, p := range ps {
		sinktest.CheckNormalized(t, p)
		out = append(p.AppendJSON(out), ' ')
		out = append(out, p.Key...)
		out = append(out, '\n')
	}
	return out
}

func rejects(rs []storage.Reject) string {
	var out []byte
	for _, r := range rs {
		out = fmt.Appendf(out, "%d %s %q\n", r.Line, r.Reason, r.Payload)
	}
	return string(out)
}
