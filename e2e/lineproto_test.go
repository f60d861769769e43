package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
)

// lpPoint is one point as a test sends it and expects it back.
type lpPoint struct {
	tags   map[string]string
	fields map[string]any
	types  map[string]string
	ts     time.Time
}

func lpPoints(n int) []lpPoint {
	var pts []lpPoint
	base := time.Date(2026, 11, 26, 4, 0, 0, 123456789, time.UTC)
	for i := range n {
		pts = append(pts, lpPoint{
			tags: map[string]string{"host": fmt.Sprintf("edge %d", i%3), "site": "a,b=c"},
			fields: map[string]any{
				"temp":  20.5 + float64(i),
				"delta": int64(-3 - i),
				"count": uint64(1<<63 + uint64(i)),
				"note":  fmt.Sprintf(`said "hi" \ %d`, i),
				"ok":    i%2 == 0,
				"whole": float64(7),
			},
			types: map[string]string{"temp": "float", "delta": "integer", "count": "unsigned",
				"note": "string", "ok": "boolean", "whole": "float"},
			ts: base.Add(time.Duration(i) * time.Millisecond),
		})
	}
	return pts
}

// lineOf writes p as line protocol, escaping as the reference says.
func lineOf(measurement string, p lpPoint) string {
	esc := func(s, chars string) string {
		out := []byte{}
		for i := 0; i < len(s); i++ {
			for j := 0; j < len(chars); j++ {
				if s[i] == chars[j] {
					out = append(out, '\\')
				}
			}
			out = append(out, s[i])
		}
		return string(out)
	}
	line := esc(measurement, ", ")
	for _, k := range []string{"host", "site"} {
		line += "," + esc(k, ",= ") + "=" + esc(p.tags[k], ",= ")
	}
	sep := " "
	for _, k := range []string{"temp", "delta", "count", "note", "ok", "whole"} {
		line += sep + k + "="
		sep = ","
		switch v := p.fields[k].(type) {
		case float64:
			line += fmt.Sprintf("%v", v)
		case int64:
			line += fmt.Sprintf("%di", v)
		case uint64:
			line += fmt.Sprintf("%du", v)
		case string:
			line += `"` + esc(v, `"\`) + `"`
		case bool:
			line += fmt.Sprintf("%t", v)
		}
	}
	return line + fmt.Sprintf(" %d\n", p.ts.UnixNano())
}

// TestLineProtocolRoundTrip sends the same points through the official
// InfluxDB Go client (HTTP v2 API), a raw TCP socket and UDP datagrams, and
// reads them back from the DuckDB file after the agent stops: measurement,
// tags, typed fields and time exactly as sent.
func TestLineProtocolRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ports := newPorts(t)
	a := startAgent(t, dir, ports, baseConfig(dir, ports, "", ""))
	pts := lpPoints(30)

	client := influxdb2.NewClientWithOptions(a.HTTP, "", influxdb2.DefaultOptions().SetPrecision(time.Nanosecond))
	defer client.Close()
	w := client.WriteAPIBlocking("org", "bucket1")
	for _, p := range pts {
		if err := w.WritePoint(context.Background(), influxdb2.NewPoint("via_http", p.tags, p.fields, p.ts)); err != nil {
			t.Fatalf("official client write: %v", err)
		}
	}
	tcp, err := net.Dial("tcp", a.TCP)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pts {
		if _, err := tcp.Write([]byte(lineOf("via_tcp", p))); err != nil {
			t.Fatal(err)
		}
	}
	tcp.Close()
	udp, err := net.Dial("udp", a.UDP)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(pts); i += 10 {
		datagram := ""
		for _, p := range pts[i:min(i+10, len(pts))] {
			datagram += lineOf("via_udp", p)
		}
		if _, err := udp.Write([]byte(datagram)); err != nil {
			t.Fatal(err)
		}
	}
	udp.Close()
	// TCP and UDP are not acknowledged: wait until the agent counted them.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st struct {
			Inputs map[string]struct {
				Persisted uint64 `json:"persisted_points"`
			} `json:"inputs"`
		}
		a.getJSON("/stats", &st)
		if st.Inputs["tcp"].Persisted == uint64(len(pts)) && st.Inputs["udp"].Persisted == uint64(len(pts)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcp/udp points not persisted after 30s: %+v", st.Inputs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Nothing was lost in the kernel, and the agent says so.
	if m := a.get("/metrics"); !strings.Contains(m, `fpagent_input_kernel_dropped_datagrams_total{input="udp"} 0`) {
		t.Errorf("/metrics does not count the kernel's UDP drops:\n%s", m)
	}
	a.stop()

	db := openDB(t, filepath.Join(dir, "data", "fpagent.duckdb"))
	for _, m := range []string{"via_http", "via_tcp", "via_udp"} {
		rows, err := db.Query(`SELECT epoch_ns(ts), tags::VARCHAR, fields::VARCHAR, field_types::VARCHAR FROM readings WHERE measurement = ? ORDER BY ts`, m)
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		for rows.Next() {
			var ts int64
			var tags, fields, types string
			if err := rows.Scan(&ts, &tags, &fields, &types); err != nil {
				t.Fatal(err)
			}
			if i >= len(pts) {
				t.Fatalf("%s: more rows than points sent", m)
			}
			p := pts[i]
			i++
			if ts != p.ts.UnixNano() {
				t.Errorf("%s point %d: time %d, sent %d", m, i, ts, p.ts.UnixNano())
			}
			wantTags := map[string]string{}
			for k, v := range p.tags {
				wantTags[k] = v
			}
			if m == "via_http" {
				wantTags["db"] = "bucket1"
			}
			var gotTags map[string]string
			json.Unmarshal([]byte(tags), &gotTags)
			if !reflect.DeepEqual(gotTags, wantTags) {
				t.Errorf("%s point %d: tags %v, sent %v", m, i, gotTags, wantTags)
			}
			var gotTypes map[string]string
			json.Unmarshal([]byte(types), &gotTypes)
			if !reflect.DeepEqual(gotTypes, p.types) {
				t.Errorf("%s point %d: field types %v, sent %v", m, i, gotTypes, p.types)
			}
			dec := json.NewDecoder(strings.NewReader(fields))
			dec.UseNumber()
			var got map[string]any
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("%s point %d: fields %s: %v", m, i, fields, err)
			}
			for k, want := range p.fields {
				if !sameValue(got[k], want) {
					t.Errorf("%s point %d: field %s = %v (%T), sent %v (%T); fields %s", m, i, k, got[k], got[k], want, want, fields)
				}
			}
		}
		rows.Close()
		if i != len(pts) {
			t.Errorf("%s: %d rows, sent %d points", m, i, len(pts))
		}
	}
}

// sameValue compares a JSON value (numbers as json.Number) with what was sent.
func sameValue(got, want any) bool {
	switch w := want.(type) {
	case float64:
		n, ok := got.(json.Number)
		f, err := n.Float64()
		return ok && err == nil && f == w
	case int64:
		n, ok := got.(json.Number)
		return ok && n.String() == fmt.Sprint(w)
	case uint64:
		n, ok := got.(json.Number)
		return ok && n.String() == fmt.Sprint(w)
	default:
		return got == want
	}
}
