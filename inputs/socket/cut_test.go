package socket

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// FuzzLineCutter feeds a stream in pieces of fuzzed sizes and checks the
// result against the plain definition: every line kept as is, except those
// over the limit, which are emptied and rejected with their number.
func FuzzLineCutter(f *testing.F) {
	f.Add([]byte("cpu v=1\nvery long line here\nok\n"), uint8(7), uint8(5))
	f.Add([]byte("a\n\n\nbbbbbbbbbbbbbbbbbbbbbbbbb"), uint8(3), uint8(2))
	f.Fuzz(func(t *testing.T, stream []byte, maxLine, piece uint8) {
		max := int(maxLine%32) + 1
		step := int(piece%16) + 1
		lc := lineCutter{maxLine: max, line: 1}
		var out bytes.Buffer
		var got []string
		reject := func(line int, payload []byte) { got = append(got, fmt.Sprintf("%d:%s", line, payload)) }
		var tail []byte
		for i := 0; i < len(stream); i += step {
			buf := append(append([]byte(nil), tail...), stream[i:min(i+step, len(stream))]...)
			var complete []byte
			complete, tail = lc.cut(buf, nil, reject)
			out.Write(complete)
		}
		if len(stream) > 0 && stream[len(stream)-1] != '\n' {
			// At the end of the stream the last line needs no newline.
			complete, rest := lc.cut(append(tail, '\n'), nil, reject)
			out.Write(complete)
			if len(rest) != 0 {
				t.Fatalf("a tail %q is left after a newline", rest)
			}
		}
		var want []string
		var wantOut strings.Builder
		if len(stream) > 0 {
			lines := strings.Split(strings.TrimSuffix(string(stream), "\n"), "\n")
			for n, l := range lines {
				if len(l) > max {
					want = append(want, fmt.Sprintf("%d:%s", n+1, l[:max]))
					l = ""
				}
				wantOut.WriteString(l + "\n")
			}
		}
		if out.String() != wantOut.String() {
			t.Errorf("lines kept:\n%q\nwant\n%q", out.String(), wantOut.String())
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("rejects:\n%q\nwant\n%q", got, want)
		}
	})
}
