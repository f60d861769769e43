package mqtt

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fpagent/fpagent/inputs/sinktest"
	"github.com/fpagent/fpagent/storage"
)

var recvTime = time.Unix(1700000000, 0).UTC()

// render writes a point as "key fields time" with fields as JSON, so that
// cases read like the record they make.
func render(p storage.Point) string {
	return p.Key + " " + string(storage.AppendFieldsJSON(nil, p.Fields)) + " " + strconv.FormatInt(p.Time, 10)
}

// check parses payload under sub and compares the points (rendered) and the
// rejects' reasons (by substring) with want.
func check(t *testing.T, sub Subscription, topic, payload string, wantPoints []string, wantRejects ...string) {
	t.Helper()
	c, err := compileSubscription(sub)
	if err != nil {
		t.Fatalf("compile %+v: %v", sub, err)
	}
	if !c.matches(topic) {
		t.Fatalf("filter %q does not match topic %q", sub.Topic, topic)
	}
	p := parser{maxRejectBytes: 1024}
	var b storage.Batch
	n, r := p.parse(&b, c, topic, []byte(payload), recvTime)
	if n != len(b.Points) || r != len(b.Rejects) {
		t.Fatalf("parse returned %d points %d rejects, batch has %d and %d", n, r, len(b.Points), len(b.Rejects))
	}
	var got []string
	for _, pt := range b.Points {
		got = append(got, render(pt))
		sinktest.CheckNormalized(t, pt)
		if reason := invalid(&pt); reason != "" {
			t.Errorf("point %s is invalid: %s", render(pt), reason)
		}
	}
	if strings.Join(got, "\n") != strings.Join(wantPoints, "\n") {
		t.Errorf("payload %q on %q:\npoints  %q\nwant    %q", payload, topic, got, wantPoints)
	}
	if len(b.Rejects) != len(wantRejects) {
		t.Fatalf("payload %q: %d rejects %+v, want %d %q", payload, len(b.Rejects), b.Rejects, len(wantRejects), wantRejects)
	}
	for i, rj := range b.Rejects {
		if !strings.Contains(rj.Reason, wantRejects[i]) {
			t.Errorf("reject %d: reason %q does not contain %q", i, rj.Reason, wantRejects[i])
		}
		if rj.Origin != topic || rj.Source != "mqtt" || rj.Time != recvTime.UnixNano() {
			t.Errorf("reject %d: origin %q source %q time %d", i, rj.Origin, rj.Source, rj.Time)
		}
	}
}

const rt = "1700000000000000000" // recvTime in ns

func TestInfluxPayloads(t *testing.T) {
	sub := Subscription{Topic: "sensors/#", Format: "influx"}
	check(t, sub, "sensors/a", "cpu,host=a usage=1.5 1600000000000000000",
		[]string{`cpu,host=a {"usage":1.5} 1600000000000000000`})
	check(t, sub, "sensors/a", "cpu v=1i 1\ncpu v=2i 2\n\ncpu v=3i 3\n",
		[]string{`cpu {"v":1} 1`, `cpu {"v":2} 2`, `cpu {"v":3} 3`})
	check(t, sub, "sensors/a", "cpu v=1",
		[]string{`cpu {"v":1.0} ` + rt})
	// A bad line is rejected alone.
	check(t, sub, "sensors/a", "cpu v=1 1\ncpu v= 2\ncpu v=3 3",
		[]string{`cpu {"v":1.0} 1`, `cpu {"v":3.0} 3`}, "")
	check(t, sub, "sensors/a", "not line protocol", nil, "")
	check(t, sub, "sensors/a", "", nil)
	check(t, sub, "sensors/a", "cpu v=1 1\x00\xff\xfe", nil, "not UTF-8")

	// Topic levels become tags and the measurement; the topic tag is kept.
	pat := Subscription{Topic: "sensors/+/+/+", Format: "influx", TopicPattern: "sensors/{site}/{device}/{measurement}", TopicTag: "topic"}
	check(t, pat, "sensors/s1/d1/temp", "x,site=line v=1 5",
		[]string{`temp,device=d1,site=s1,topic=sensors/s1/d1/temp {"v":1.0} 5`})
}

func TestJSONPayloads(t *testing.T) {
	sub := Subscription{Topic: "j/#", Format: "json", Measurement: "env"}
	check(t, sub, "j/a", `{"temp": 21.5, "ok": true, "state": "on", "n": 3}`,
		[]string{`env {"n":3.0,"ok":true,"state":"on","temp":21.5} ` + rt})
	// Nested objects flatten with _, arrays of values by index; nulls are skipped.
	check(t, sub, "j/a", `{"a": {"b": {"c": 1}, "d": 2}, "arr": [1, 2], "z": null}`,
		[]string{`env {"a_b_c":1.0,"a_d":2.0,"arr_0":1.0,"arr_1":2.0} ` + rt})
	// An array of objects is many readings; a non-object element is rejected alone.
	check(t, sub, "j/a", `[{"v": 1}, 7, {"v": 2}]`,
		[]string{`env {"v":1.0} ` + rt, `env {"v":2.0} ` + rt}, "element 2 of the array is a JSON number")
	check(t, sub, "j/a", `[]`, nil)
	check(t, sub, "j/a", `{"v": 1`, nil, "invalid JSON")
	check(t, sub, "j/a", `{"v": 1} {"v": 2}`, nil, "more than one value")
	check(t, sub, "j/a", `"just a string"`, nil, "is a JSON string, not an object")
	check(t, sub, "j/a", `{"only": null}`, nil, "no fields")
	check(t, sub, "j/a", `{"v": 1e999}`, nil, "does not fit")
	check(t, sub, "j/a", "\xff{}", nil, "not UTF-8")

	// Tag keys, flattened names included; numbers and bools as tags.
	tags := Subscription{Topic: "j/#", Format: "json", Measurement: "env", TagKeys: []string{"site", "meta_rack", "id"}}
	check(t, tags, "j/a", `{"site": "s1", "meta": {"rack": "r2", "u": 4}, "id": 17, "v": 1}`,
		[]string{`env,id=17,meta_rack=r2,site=s1 {"meta_u":4.0,"v":1.0} ` + rt})

	// Measurement: the topic pattern wins, then the option, then the default.
	pat := Subscription{Topic: "s/+/+", Format: "json", TopicPattern: "s/{site}/{measurement}", Measurement: "ignored", TopicTag: "t"}
	check(t, pat, "s/x/power", `{"w": 5}`, []string{`power,site=x,t=s/x/power {"w":5.0} ` + rt})
	noMeas := Subscription{Topic: "s/#", Format: "json"}
	check(t, noMeas, "s/x", `{"w": 5}`, []string{`mqtt_consumer {"w":5.0} ` + rt})
	// # filter with a shorter pattern: levels past the pattern are ignored,
	// missing levels give no tag.
	deep := Subscription{Topic: "s/#", Format: "json", Measurement: "m", TopicPattern: "s/{a}/{b}"}
	check(t, deep, "s/1/2/3/4", `{"w": 5}`, []string{`m,a=1,b=2 {"w":5.0} ` + rt})
	check(t, deep, "s/1", `{"w": 5}`, []string{`m,a=1 {"w":5.0} ` + rt})
}

func TestJSONTimes(t *testing.T) {
	f := func(format, value string, want string, wantReject ...string) {
		t.Helper()
		sub := Subscription{Topic: "t", Format: "json", Measurement: "m", TimeKey: "ts", TimeFormat: format}
		var points []string
		if want != "" {
			points = []string{`m {"v":1.0} ` + want}
		}
		check(t, sub, "t", `{"v": 1, "ts": `+value+`}`, points, wantReject...)
	}
	f("unix", `1700000000`, "1700000000000000000")
	f("unix", `1700000000.25`, "1700000000250000000")
	f("unix", `"1700000000"`, "1700000000000000000")
	f("unix_ms", `1700000000123`, "1700000000123000000")
	f("unix_us", `1700000000123456`, "1700000000123456000")
	f("unix_ns", `1700000000123456789`, "1700000000123456789") // exact: no float rounding
	f("rfc3339", `"2023-11-14T22:13:20.5Z"`, "1700000000500000000")
	f("rfc3339", `"2023-11-15T00:13:20+02:00"`, "1700000000000000000")
	f("2006-01-02 15:04:05", `"2023-11-14 22:13:20"`, "1700000000000000000")
	f("", `1700000000`, "1700000000000000000")
	f("", `"2023-11-14T22:13:20Z"`, "1700000000000000000")
	f("unix", `"soon"`, "", `"soon" is not a number of seconds`)
	f("unix", `true`, "", "boolean is not a number")
	f("unix", `99999999999999`, "", "outside the years")
	f("unix_ns", `99999999999999999999`, "", "")
	f("rfc3339", `"yesterday"`, "", "does not match layout")
	f("rfc3339", `1700000000`, "", "number is not a string")
	// A missing time key is a reject: taking the receive time would make a
	// redelivered message a second point.
	sub := Subscription{Topic: "t", Format: "json", Measurement: "m", TimeKey: "ts", TimeFormat: "unix"}
	check(t, sub, "t", `{"v": 1}`, nil, `time key "ts" is missing`)
	if _, err := compileSubscription(Subscription{Topic: "t", Format: "json", TimeFormat: "weekly"}); err == nil {
		t.Error("time_format weekly was accepted")
	}
}

func TestValuePayloads(t *testing.T) {
	sub := Subscription{Topic: "v/#", Format: "value", Measurement: "level"}
	check(t, sub, "v/a", "21.5", []string{`level {"value":21.5} ` + rt})
	check(t, sub, "v/a", " 42\n", []string{`level {"value":42.0} ` + rt})
	check(t, sub, "v/a", "-1e3", []string{`level {"value":-1000.0} ` + rt})
	check(t, sub, "v/a", "true", []string{`level {"value":true} ` + rt})
	check(t, sub, "v/a", "FALSE", []string{`level {"value":false} ` + rt})
	check(t, sub, "v/a", "open", []string{`level {"value":"open"} ` + rt})
	check(t, sub, "v/a", "NaN", nil, "not a finite number")
	check(t, sub, "v/a", "\x00\x01\xfe", nil, "not UTF-8")
	check(t, sub, "v/a", "", nil)
	pat := Subscription{Topic: "v/+/+", Format: "value", TopicPattern: "v/{room}/{measurement}"}
	check(t, pat, "v/kitchen/temp", "19", []string{`temp,room=kitchen {"value":19.0} ` + rt})
	if _, err := compileSubscription(Subscription{Topic: "v/#", Format: "value"}); err == nil {
		t.Error("a value subscription without a measurement was accepted")
	}
}

func TestTopicMatch(t *testing.T) {
	f := func(filter, topic string, want bool) {
		t.Helper()
		c, err := compileSubscription(Subscription{Topic: filter})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.matches(topic); got != want {
			t.Errorf("%q matches %q = %v, want %v", filter, topic, got, want)
		}
	}
	f("a/b", "a/b", true)
	f("a/b", "a/b/c", false)
	f("a/b", "a", false)
	f("a/+", "a/b", true)
	f("a/+", "a/", true)
	f("a/+", "a/b/c", false)
	f("a/+/c", "a/x/c", true)
	f("a/#", "a", true)
	f("a/#", "a/b/c", true)
	f("a/#", "b/c", false)
	f("#", "x/y", true)
	f("#", "$SYS/x", false)
	f("+/x", "$SYS/x", false)
	f("$SYS/#", "$SYS/x", true)
	f("+", "a", true)
	f("+", "a/b", false)
}
