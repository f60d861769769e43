package lineproto

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fpagent/fpagent/inputs/sinktest"
	"github.com/fpagent/fpagent/storage"
)

// received is the receive time of the conformance payloads: the time of their
// points without a timestamp.
var received = time.Date(2023, 11, 14, 22, 13, 20, 123456789, time.UTC)

// render parses in and describes every outcome, one per line, in input
// order: the stored JSON record of a point, or "reject line N: reason".
func render(t *testing.T, in, precision string) []string {
	t.Helper()
	prec, err := ParsePrecision(precision)
	if err != nil {
		t.Fatal(err)
	}
	var b storage.Batch
	n, r := Parse(&b, []byte(in), Meta{Source: "test", Origin: "peer", Received: received, Precision: prec})
	if n != len(b.Points) || r != len(b.Rejects) {
		t.Fatalf("Parse returned %d points and %d rejects, batch holds %d and %d", n, r, len(b.Points), len(b.Rejects))
	}
	var out []string
	for _, p := range b.Points {
		sinktest.CheckNormalized(t, p)
		out = append(out, string(p.AppendJSON(nil)))
	}
	for _, rj := range b.Rejects {
		out = append(out, fmt.Sprintf("reject line %d: %s", rj.Line, rj.Reason))
	}
	return out
}

// TestConformance follows the line-protocol reference
// (https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/):
// each case states the stored JSON record of every point, or why a line is
// rejected.
func TestConformance(t *testing.T) {
	type tc struct {
		name, precision, in string
		want                []string
	}
	cases := []tc{
		{"plain", "", "cpu,host=a value=1 1700000000000000000", []string{`{"measurement":"cpu","tags":{"host":"a"},"fields":{"value":1.0},"time":"2023-11-14T22:13:20Z"}`}},
		{"no tags", "", "cpu value=1.5 1", []string{`{"measurement":"cpu","tags":{},"fields":{"value":1.5},"time":"1970-01-01T00:00:00.000000001Z"}`}},
		{"tags sorted and key canonical", "", "cpu,zone=z,host=a,dc=d v=1 0", []string{`{"measurement":"cpu","tags":{"dc":"d","host":"a","zone":"z"},"fields":{"v":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"measurement escaped comma", "", "c\\,pu value=1 0", []string{`{"measurement":"c,pu","tags":{},"fields":{"value":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"measurement escaped space", "", "c\\ pu value=1 0", []string{`{"measurement":"c pu","tags":{},"fields":{"value":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"measurement equals sign unescaped", "", "c=pu value=1 0", []string{`{"measurement":"c=pu","tags":{},"fields":{"value":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"measurement backslash kept", "", "c\\pu value=1 0", []string{`{"measurement":"c\\pu","tags":{},"fields":{"value":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"tag key escaped comma equals space", "", "cpu,a\\,b\\=c\\ d=v f=1 0", []string{`{"measurement":"cpu","tags":{"a,b=c d":"v"},"fields":{"f":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"tag value escaped comma equals space", "", "cpu,host=a\\,b\\=c\\ d f=1 0", []string{`{"measurement":"cpu","tags":{"host":"a,b=c d"},"fields":{"f":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"tag value with quotes kept", "", "cpu,t=\"x\" f=1 0", []string{`{"measurement":"cpu","tags":{"t":"\"x\""},"fields":{"f":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"field key escaped comma equals space", "", "cpu f\\,i\\=e\\ ld=1 0", []string{`{"measurement":"cpu","tags":{},"fields":{"f,i=e ld":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"string with escaped quotes", "", "cpu s=\"say \\\"hi\\\"\" 0", []string{`{"measurement":"cpu","tags":{},"fields":{"s":"say \"hi\""},"time":"1970-01-01T00:00:00Z"}`}},
		{"string with escaped backslash", "", "cpu s=\"C:\\\\dir\\\\\" 0", []string{`{"measurement":"cpu","tags":{},"fields":{"s":"C:\\dir\\"},"time":"1970-01-01T00:00:00Z"}`}},
		{"string with other backslash kept", "", "cpu s=\"a\\b\" 0", []string{`{"measurement":"cpu","tags":{},"fields":{"s":"a\\b"},"time":"1970-01-01T00:00:00Z"}`}},
		{"string with comma space equals", "", "cpu s=\"a, b=c d\" 0", []string{`{"measurement":"cpu","tags":{},"fields":{"s":"a, b=c d"},"time":"1970-01-01T00:00:00Z"}`}},
		{"string empty", "", "cpu s=\"\" 0", []string{`{"measurement":"cpu","tags":{},"fields":{"s":""},"time":"1970-01-01T00:00:00Z"}`}},
		{"string escaped newline and tab", "", "cpu s=\"a\\nb\\tc\" 0", []string{`{"measurement":"cpu","tags":{},"fields":{"s":"a\nb\tc"},"time":"1970-01-01T00:00:00Z"}`}},
		{"string with literal newline spans lines", "", "cpu s=\"a\nb\" 0\ncpu v=2 1\nbad", []string{
			`{"measurement":"cpu","tags":{},"fields":{"s":"a\nb"},"time":"1970-01-01T00:00:00Z"}`,
			`{"measurement":"cpu","tags":{},"fields":{"v":2.0},"time":"1970-01-01T00:00:00.000000001Z"}`,
			`reject line 4: column 4: no fields: a line is measurement[,tag=value...] field=value[,field=value...] [timestamp]`,
		}},
		{"integers", "", "cpu a=0i,b=42i,c=-42i,d=9223372036854775807i,e=-9223372036854775808i 0", []string{`{"measurement":"cpu","tags":{},"fields":{"a":0,"b":42,"c":-42,"d":9223372036854775807,"e":-9223372036854775808},"time":"1970-01-01T00:00:00Z"}`}},
		{"integer overflow", "", "cpu i=9223372036854775808i 0", []string{`reject line 1: column 7: cannot parse value for field key "i": line-protocol value out of range`}},
		{"integer not a number", "", "cpu i=1.5i 0", []string{`reject line 1: column 7: cannot parse value for field key "i": invalid integer value syntax`}},
		{"unsigned", "", "cpu a=0u,b=42u,c=18446744073709551615u 0", []string{`{"measurement":"cpu","tags":{},"fields":{"a":0,"b":42,"c":18446744073709551615},"time":"1970-01-01T00:00:00Z"}`}},
		{"unsigned negative", "", "cpu u=-1u 0", []string{`reject line 1: column 7: cannot parse value for field key "u": invalid unsigned integer value syntax`}},
		{"unsigned overflow", "", "cpu u=18446744073709551616u 0", []string{`reject line 1: column 7: cannot parse value for field key "u": line-protocol value out of range`}},
		{"floats", "", "cpu a=1,b=1.0,c=-1.5,d=1e3,e=1.5E-3,f=.5,g=-0,h=1.7976931348623157e308 0", []string{`{"measurement":"cpu","tags":{},"fields":{"a":1.0,"b":1.0,"c":-1.5,"d":1000.0,"e":0.0015,"f":0.5,"g":-0.0,"h":1.7976931348623157e+308},"time":"1970-01-01T00:00:00Z"}`}},
		{"float not a number", "", "cpu f=1.2.3 0", []string{`reject line 1: column 7: cannot parse value for field key "f": invalid float value syntax`}},
		{"float NaN refused", "", "cpu f=NaN 0", []string{`reject line 1: column 7: field value has unrecognized type: want a float (1.5), integer (1i), unsigned (1u), string ("s") or boolean (t, f, true, false)`}},
		{"float overflow refused", "", "cpu f=1e400 0", []string{`reject line 1: column 7: cannot parse value for field key "f": line-protocol value out of range`}},
		{"booleans true", "", "cpu a=t,b=T,c=true,d=True,e=TRUE 0", []string{`{"measurement":"cpu","tags":{},"fields":{"a":true,"b":true,"c":true,"d":true,"e":true},"time":"1970-01-01T00:00:00Z"}`}},
		{"booleans false", "", "cpu a=f,b=F,c=false,d=False,e=FALSE 0", []string{`{"measurement":"cpu","tags":{},"fields":{"a":false,"b":false,"c":false,"d":false,"e":false},"time":"1970-01-01T00:00:00Z"}`}},
		{"boolean bad spelling", "", "cpu b=tRUE 0", []string{`reject line 1: column 7: cannot parse value for field key "b": invalid bool value "tRUE"`}},
		{"missing timestamp takes receive time", "", "cpu v=1", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"2023-11-14T22:13:20.123456789Z"}`}},
		{"missing timestamp truncated to precision", "s", "cpu v=1", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"2023-11-14T22:13:20Z"}`}},
		{"precision ns", "ns", "cpu v=1 1700000000123456789", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"2023-11-14T22:13:20.123456789Z"}`}},
		{"precision n", "n", "cpu v=1 1700000000123456789", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"2023-11-14T22:13:20.123456789Z"}`}},
		{"precision us", "us", "cpu v=1 1700000000123456", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"2023-11-14T22:13:20.123456Z"}`}},
		{"precision u", "u", "cpu v=1 1700000000123456", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"2023-11-14T22:13:20.123456Z"}`}},
		{"precision ms", "ms", "cpu v=1 1700000000123", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"2023-11-14T22:13:20.123Z"}`}},
		{"precision s", "s", "cpu v=1 1700000000", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"2023-11-14T22:13:20Z"}`}},
		{"precision m", "m", "cpu v=1 28333333", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"2023-11-14T22:13:00Z"}`}},
		{"precision h", "h", "cpu v=1 472222", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"2023-11-14T22:00:00Z"}`}},
		{"negative timestamp", "", "cpu v=1 -1", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"1969-12-31T23:59:59.999999999Z"}`}},
		{"timestamp out of range at precision", "h", "cpu v=1 9000000000", []string{`reject line 1: timestamp 9000000000 at precision h is out of range (nanoseconds since 1970 must fit 64 bits: years 1677 to 2262)`}},
		{"timestamp not an integer", "", "cpu v=1 12a", []string{`reject line 1: column 9: invalid timestamp ("12a")`}},
		{"text after timestamp", "", "cpu v=1 0 x", []string{`reject line 1: column 11: unexpected text after timestamp ("x")`}},
		{"comments and blank lines", "", "# a comment\n\n   \ncpu v=1 0\n  # indented comment\ncpu v=2 1\n", []string{
			`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"1970-01-01T00:00:00Z"}`,
			`{"measurement":"cpu","tags":{},"fields":{"v":2.0},"time":"1970-01-01T00:00:00.000000001Z"}`,
		}},
		{"crlf", "", "cpu v=1 0\r\ncpu v=2 1\r\n", []string{
			`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"1970-01-01T00:00:00Z"}`,
			`{"measurement":"cpu","tags":{},"fields":{"v":2.0},"time":"1970-01-01T00:00:00.000000001Z"}`,
		}},
		{"duplicate tag keys last wins", "", "cpu,a=1,b=2,a=3 v=1 0", []string{`{"measurement":"cpu","tags":{"a":"3","b":"2"},"fields":{"v":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"duplicate field keys last wins", "", "cpu v=1,w=2,v=3 0", []string{`{"measurement":"cpu","tags":{},"fields":{"w":2.0,"v":3.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"unicode", "", "温度,房间=客厅 值=22.5,备注=\"好\" 0", []string{`{"measurement":"温度","tags":{"房间":"客厅"},"fields":{"值":22.5,"备注":"好"},"time":"1970-01-01T00:00:00Z"}`}},
		{"emoji", "", "🌡,loc=🏠 t=1 0", []string{`{"measurement":"🌡","tags":{"loc":"🏠"},"fields":{"t":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"mixed good and bad lines", "", "cpu v=1 0\ncpu v= 1\ncpu v=2 2\ncpu,host v=3 3\ncpu v=4 4", []string{
			`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"1970-01-01T00:00:00Z"}`,
			`{"measurement":"cpu","tags":{},"fields":{"v":2.0},"time":"1970-01-01T00:00:00.000000002Z"}`,
			`{"measurement":"cpu","tags":{},"fields":{"v":4.0},"time":"1970-01-01T00:00:00.000000004Z"}`,
			`reject line 2: column 7: field value has unrecognized type: want a float (1.5), integer (1i), unsigned (1u), string ("s") or boolean (t, f, true, false)`,
			`reject line 4: column 5: expected '=' after tag key "host", but got ' ' instead`,
		}},
		{"no fields", "", "cpu,host=a", []string{`reject line 1: column 11: no fields: a line is measurement[,tag=value...] field=value[,field=value...] [timestamp]`}},
		{"measurement only", "", "cpu", []string{`reject line 1: column 4: no fields: a line is measurement[,tag=value...] field=value[,field=value...] [timestamp]`}},
		{"field without value", "", "cpu v= 0", []string{`reject line 1: column 7: field value has unrecognized type: want a float (1.5), integer (1i), unsigned (1u), string ("s") or boolean (t, f, true, false)`}},
		{"unterminated string", "", "cpu s=\"abc 0", []string{`reject line 1: column 7: expected closing quote for string field value, found end of input`}},
		{"tag without value", "", "cpu,host= v=1 0", []string{`reject line 1: column 10: expected tag value after tag key "host", but none found`}},
		{"space after comma", "", "cpu, host=a v=1 0", []string{`reject line 1: column 5: expected tag key after comma; got white space instead`}},
		{"empty measurement", "", ",host=a v=1 0", []string{`reject line 1: column 1: invalid character ',' found at start of measurement name`}},
		{"invalid utf-8", "", "cp\xffu v=1 0", []string{`reject line 1: column 1: invalid utf-8 sequence in token "cp\xffu"`}},
		{"trailing spaces after timestamp", "", "cpu v=1 0   ", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"1970-01-01T00:00:00Z"}`}},
		{"leading spaces", "", "   cpu v=1 0", []string{`{"measurement":"cpu","tags":{},"fields":{"v":1.0},"time":"1970-01-01T00:00:00Z"}`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := render(t, c.in, c.precision)
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("Parse(%q, precision %q):\n got %s\nwant %s", c.in, c.precision,
					strings.Join(quoteAll(got), ",\n     "), strings.Join(quoteAll(c.want), ",\n     "))
			}
		})
	}
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = "`" + v + "`"
	}
	return out
}
