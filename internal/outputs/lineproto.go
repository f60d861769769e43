package outputs

import (
	"fmt"
	"strings"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/fpagent/fpagent/storage"
)

// Batch is points ready to send: each also as one line of line protocol
// (nanosecond timestamps), which is what the influx output posts and what the
// mqtt output publishes in its default format.
type Batch struct {
	Points []storage.Point
	LP     []byte // the lines of Points, each ending in '\n'
	ends   []int  // Points[i] is LP[ends[i-1]:ends[i]]
}

// Len returns the number of points.
func (b *Batch) Len() int { return len(b.Points) }

// Line returns point i's line, without its newline.
func (b *Batch) Line(i int) []byte {
	from := 0
	if i > 0 {
		from = b.ends[i-1]
	}
	return b.LP[from : b.ends[i]-1]
}

// Slice returns points [i, j) as a Batch sharing b's memory.
func (b *Batch) Slice(i, j int) *Batch {
	from := 0
	if i > 0 {
		from = b.ends[i-1]
	}
	ends := make([]int, j-i)
	for k := range ends {
		ends[k] = b.ends[i+k] - from
	}
	return &Batch{Points: b.Points[i:j], LP: b.LP[from:b.ends[j-1]], ends: ends}
}

// encoder turns points into a Batch; it is reused between batches.
type encoder struct {
	enc    lineprotocol.Encoder
	values []lineprotocol.Value
}

// badPoint is a point line protocol cannot carry (a NaN or infinite float, a
// newline in a tag, invalid UTF-8, a measurement starting with #), with the
// reason.
type badPoint struct {
	point  *storage.Point
	reason string
}

// encode fills b with the points that encode and returns the others.
func (e *encoder) encode(pts []storage.Point, b *Batch) (bad []badPoint) {
	e.enc.SetPrecision(lineprotocol.Nanosecond)
	e.enc.SetBuffer(b.LP[:0])
	b.Points, b.ends = b.Points[:0], b.ends[:0]
	for i := range pts {
		p := &pts[i]
		if why := e.convert(p); why != "" {
			bad = append(bad, badPoint{p, why})
			continue
		}
		e.enc.StartLine(p.Measurement)
		for _, t := range p.Tags {
			e.enc.AddTag(t.Key, t.Value)
		}
		for j, f := range p.Fields {
			e.enc.AddField(f.Key, e.values[j])
		}
		e.enc.EndLine(time.Unix(0, p.Time))
		if err := e.enc.Err(); err != nil {
			e.enc.ClearErr()
			bad = append(bad, badPoint{p, err.Error()})
			continue
		}
		b.Points = append(b.Points, *p)
		b.ends = append(b.ends, len(e.enc.Bytes()))
	}
	b.LP = e.enc.Bytes()
	return bad
}

// convert converts p's fields, or says why p cannot be written.
func (e *encoder) convert(p *storage.Point) string {
	e.values = e.values[:0]
	if strings.HasPrefix(p.Measurement, "#") {
		// The encoder writes it, but a reader takes the line for a comment:
		// the remote side would accept the point and drop it.
		return fmt.Sprintf("measurement %q: a line starting with # is a comment in line protocol", p.Measurement)
	}
	if len(p.Fields) == 0 {
		// The encoder would blame the next point for it and leave that
		// point's line in the buffer, out of step with Points.
		return "line protocol needs at least one field"
	}
	for _, f := range p.Fields {
		var v lineprotocol.Value
		ok := true
		switch f.Value.Kind {
		case storage.KindFloat:
			v, ok = lineprotocol.FloatValue(f.Value.Float())
		case storage.KindInt:
			v = lineprotocol.IntValue(f.Value.Int())
		case storage.KindUint:
			v = lineprotocol.UintValue(f.Value.Uint())
		case storage.KindString:
			v, ok = lineprotocol.StringValue(f.Value.Str())
		case storage.KindBool:
			v = lineprotocol.BoolValue(f.Value.Bool())
		default:
			ok = false
		}
		if !ok {
			return fmt.Sprintf("field %q: line protocol cannot carry the value %s", f.Key, f.Value.AppendJSON(nil))
		}
		e.values = append(e.values, v)
	}
	return ""
}
