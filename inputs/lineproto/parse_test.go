package lineproto

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fpagent/fpagent/inputs/sinktest"
	"github.com/fpagent/fpagent/storage"
)

func TestKeysAndPayloadTags(t *testing.T) {
	f := func(in string, tags []storage.Tag, wantKeys ...string) {
		t.Helper()
		var b storage.Batch
		Parse(&b, []byte(in), Meta{Tags: tags})
		var got []string
		for _, p := range b.Points {
			sinktest.CheckNormalized(t, p)
			got = append(got, p.Key)
		}
		if strings.Join(got, "\n") != strings.Join(wantKeys, "\n") {
			t.Errorf("keys of %q with tags %v:\n got %q\nwant %q", in, tags, got, wantKeys)
		}
	}
	f("cpu,zone=z,host=a v=1 0", nil, "cpu,host=a,zone=z")
	f("c\\ pu,a\\=b=c\\,d v=1 0", nil, `c\ pu,a\=b=c\,d`)
	f("c\\pu,t=a\\b v=1 0", nil, `c\\pu,t=a\\b`)
	db := []storage.Tag{{Key: "db", Value: "telegraf"}}
	f("cpu,host=a v=1 0", db, "cpu,db=telegraf,host=a")
	f("cpu,db=mine,host=a v=1 0", db, "cpu,db=telegraf,host=a")
	// The same series section with and without payload tags must not share
	// a cache entry.
	f("cpu,host=a v=1 0\ncpu,host=a v=1 0", nil, "cpu,host=a", "cpu,host=a")
	f("cpu,host=a v=1 0", db, "cpu,db=telegraf,host=a")
}

// A line rejected after its series section decoded must not leave that
// series cached: its tags lived in the part of the tag slab the rejection
// gives back, which the next new series overwrites. (Found by the MQTT
// FuzzParse, whose parsers stay warm across inputs.)
func TestRejectedLineLeavesNoSeries(t *testing.T) {
	for _, bad := range []string{"v=oops 0", "v=1 12x", "v=1,w 0", "v=1 99999999999999999999"} {
		p := newParser()
		for _, in := range []string{
			"cpu,host=a " + bad + "\nmem,zone=z v=1 0\ncpu,host=a v=2 1\n",
			"cpu,host=a v=3 2\n", // a later payload, on the warm parser
		} {
			var b storage.Batch
			p.parse(&b, []byte(in), &Meta{})
			for _, pt := range b.Points {
				sinktest.CheckNormalized(t, pt)
			}
			if len(b.Rejects) > 0 && len(b.Points) != 2 {
				t.Errorf("%q: %d points, want 2", in, len(b.Points))
			}
		}
	}
}

func TestRejectDetails(t *testing.T) {
	var b storage.Batch
	long := "cpu v=" + strings.Repeat("x", 3000)
	in := "cpu v=1 0\r\nbad line\r\n" + long + "\ncpu v=2 1\n"
	n, r := Parse(&b, []byte(in), Meta{Source: "tcp", Origin: "10.0.0.1:5000", FirstLine: 101,
		Received: time.Unix(5, 0), MaxRejectBytes: 100})
	if n != 2 || r != 2 {
		t.Fatalf("got %d points and %d rejects, want 2 and 2", n, r)
	}
	r0, r1 := b.Rejects[0], b.Rejects[1]
	if r0.Line != 102 || string(r0.Payload) != "bad line" || r0.Source != "tcp" || r0.Origin != "10.0.0.1:5000" || r0.Time != 5e9 {
		t.Errorf("first reject = %+v", r0)
	}
	if r1.Line != 103 || !bytes.Equal(r1.Payload, []byte(long[:100])) || len(r1.Reason) > maxReasonBytes+len("…") {
		t.Errorf("second reject: line %d, payload %q (%d bytes), reason %d bytes", r1.Line, r1.Payload, len(r1.Payload), len(r1.Reason))
	}
}

// TestNothingAliasesInput checks that points and rejects survive the reuse of
// the input buffer: the decoder's slices are only valid until its next call.
func TestNothingAliasesInput(t *testing.T) {
	in := []byte("m\\,x,t=a\\ b s=\"q\\\"z\",v=1i 1\nbad\ncpu,host=h s=\"plain\" 2\n")
	var b storage.Batch
	Parse(&b, in, Meta{})
	var before []byte
	for _, p := range b.Points {
		before = p.AppendJSON(before)
	}
	rejBefore := string(b.Rejects[0].Payload)
	for i := range in {
		in[i] = 'X'
	}
	var after []byte
	for _, p := range b.Points {
		after = p.AppendJSON(after)
	}
	if !bytes.Equal(before, after) || string(b.Rejects[0].Payload) != rejBefore {
		t.Fatalf("points changed with the input buffer:\n%s\n%s", before, after)
	}
}

func TestParsePrecision(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 1, "ns": 1, "n": 1, "us": time.Microsecond, "u": time.Microsecond,
		"µs": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour} {
		if got, err := ParsePrecision(in); got != want || err != nil {
			t.Errorf("ParsePrecision(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"S", "sec", "d", "mm"} {
		if _, err := ParsePrecision(in); err == nil || !strings.Contains(err.Error(), in) {
			t.Errorf("ParsePrecision(%q) error = %v, want one naming it", in, err)
		}
	}
}

// TestManyPoints crosses slab boundaries and cache clears.
func TestManyPoints(t *testing.T) {
	var buf bytes.Buffer
	for i := 0; i < 3*seriesMaxEntries; i++ {
		buf.WriteString("m,id=")
		buf.WriteString(strings.Repeat("x", i%7))
		buf.WriteString(string(rune('a' + i%26)))
		buf.WriteString(time.Duration(i).String())
		buf.WriteString(" a=1,b=2i,c=\"s\" 1\n")
	}
	var b storage.Batch
	n, r := Parse(&b, buf.Bytes(), Meta{})
	if n != 3*seriesMaxEntries || r != 0 {
		t.Fatalf("got %d points, %d rejects", n, r)
	}
	for _, p := range b.Points {
		sinktest.CheckNormalized(t, p)
	}
}

// TestWideLines keeps lines of many tags and fields linear and normalized.
func TestWideLines(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteString("m")
	for i := 0; i < 20000; i++ {
		buf.WriteString(",t" + strings.Repeat("x", i%5) + "=" + strconv.Itoa(i))
	}
	buf.WriteString(" ")
	for i := 0; i < 20000; i++ {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString("f" + strings.Repeat("y", i%5) + "=" + strconv.Itoa(i) + "i")
	}
	buf.WriteString(" 1\n")
	start := time.Now()
	var b storage.Batch
	if n, r := Parse(&b, buf.Bytes(), Meta{}); n != 1 || r != 0 {
		t.Fatalf("got %d points, %d rejects: %v", n, r, b.Rejects)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a line of 20000 tags and fields took %v", d)
	}
	p := b.Points[0]
	if len(p.Tags) != 5 || len(p.Fields) != 5 || p.Fields[0].Value.Int() != 19995 {
		t.Errorf("got %d tags, %d fields, first %v", len(p.Tags), len(p.Fields), p.Fields[0])
	}
	sinktest.CheckNormalized(t, p)
}

func TestSimpleFloatMatchesStrconv(t *testing.T) {
	for _, s := range []string{"0", "-0", "1", "1.", ".5", "-.5", "12.5", "3.2", "84.3", "0.1", "0.3", "007.25",
		"123456789012345", "1234567.89012345", "-99999999999999.9", "0.00000000000001", "2.675", "1.005"} {
		got, ok := simpleFloat([]byte(s))
		want, err := strconv.ParseFloat(s, 64)
		if !ok || err != nil || math.Float64bits(got) != math.Float64bits(want) {
			t.Errorf("simpleFloat(%q) = %v, %v; strconv gives %v, %v", s, got, ok, want, err)
		}
	}
	for _, s := range []string{".", "-", "1e3", "1.2.3", "1234567890123456", "0.000000000000001", "0x10", "1_0"} {
		if _, ok := simpleFloat([]byte(s)); ok {
			t.Errorf("simpleFloat(%q) accepted it", s)
		}
	}
}

func FuzzSimpleFloat(f *testing.F) {
	f.Add("12.5")
	f.Add("-0.000123")
	f.Fuzz(func(t *testing.T, s string) {
		if s == "" {
			return
		}
		got, ok := simpleFloat([]byte(s))
		if !ok {
			return
		}
		want, err := strconv.ParseFloat(s, 64)
		if err != nil || math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("simpleFloat(%q) = %v; strconv gives %v, %v", s, got, want, err)
		}
	})
}
