package mqtt

import (
	"testing"
	"time"

	"github.com/fpagent/fpagent/inputs/sinktest"
	"github.com/fpagent/fpagent/storage"
)

// FuzzParse feeds arbitrary payloads to every format: no panic, every point
// is one storage takes, normalized with its canonical key, every reject has
// a reason, and the counts match.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"cpu,host=a v=1 1", "cpu v=", `{"a": {"b": 1}, "t": 1700000000}`, `[{"v": 1}, 2, null]`,
		`{"v": 1e999}`, "21.5", "true", "\xff\xfe", `{"t": "2023-11-14T22:13:20Z", "v": "x"}`,
		`{"t": 1e300, "v": 1}`, `{"t": "-9223372036854775808", "v": 1}`, `{"t": "1.99999999999", "v": 1}`,
	} {
		f.Add([]byte(s), "s/site1/dev/temp")
	}
	subs := []Subscription{
		{Topic: "s/#", Format: "influx", TopicPattern: "s/{site}/+/{measurement}", TopicTag: "topic"},
		{Topic: "s/#", Format: "json", TagKeys: []string{"id", "a_b"}, TimeKey: "t"},
		{Topic: "s/#", Format: "json", TimeKey: "t", TimeFormat: "unix_ms"},
		{Topic: "s/#", Format: "json", TimeKey: "t", TimeFormat: "2006-01-02 15:04"},
		{Topic: "s/#", Format: "value", Measurement: "m"},
	}
	var compiled []*subscription
	for _, s := range subs {
		c, err := compileSubscription(s)
		if err != nil {
			f.Fatal(err)
		}
		compiled = append(compiled, c)
	}
	p := parser{maxRejectBytes: 64}
	f.Fuzz(func(t *testing.T, payload []byte, topic string) {
		for _, s := range compiled {
			var b storage.Batch
			start := time.Now()
			n, r := p.parse(&b, s, topic, payload, recvTime)
			if took := time.Since(start); took > 500*time.Millisecond && len(payload) < 1<<16 {
				t.Fatalf("%s: %d-byte payload took %s", s.Format, len(payload), took)
			}
			if n != len(b.Points) || r != len(b.Rejects) {
				t.Fatalf("%s: returned %d/%d, batch has %d/%d", s.Format, n, r, len(b.Points), len(b.Rejects))
			}
			for _, pt := range b.Points {
				if reason := invalid(&pt); reason != "" {
					t.Fatalf("%s: invalid point %+v: %s", s.Format, pt, reason)
				}
				sinktest.CheckNormalized(t, pt)
			}
			for _, rj := range b.Rejects {
				if rj.Reason == "" || len(rj.Payload) > 64 {
					t.Fatalf("%s: reject %+v", s.Format, rj)
				}
			}
		}
	})
}
