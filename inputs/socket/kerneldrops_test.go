package socket

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fpagent/fpagent/inputs"
	"github.com/fpagent/fpagent/inputs/sinktest"
)

func TestParseUDPDrops(t *testing.T) {
	const table = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0100007F:1F99 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0
  124: 0100007F:1F9A 00000000:0000 07 00000000:0001F000 00:00000000 00000000     0        0 4243 2 0000000000000000 1517
`
	cases := []struct {
		name  string
		text  string
		ino   uint64
		drops uint64
		found bool
		err   bool
	}{
		{"no drops", table, 4242, 0, true, false},
		{"drops", table, 4243, 1517, true, false},
		{"an inode that is a prefix of another is not it", table, 424, 0, false, false},
		{"not there", table, 99, 0, false, false},
		{"the header is not a socket", table, 0, 0, false, false},
		{"empty", "", 4242, 0, false, false},
		{"short line", "header\n  1: 0100007F:1F99 4242\n", 4242, 0, false, false},
		{"drops not a number", strings.Replace(table, "1517", "x", 1), 4243, 0, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, found, err := parseUDPDrops(strings.NewReader(c.text), c.ino)
			if d != c.drops || found != c.found || (err != nil) != c.err {
				t.Errorf("= %d, %v, %v; want %d, %v, error %v", d, found, err, c.drops, c.found, c.err)
			}
		})
	}
}

// readKernelDrops keeps the counter at the kernel's count and warns when it
// grows, at most once per kernelDropsWarnEvery.
func TestReadKernelDrops(t *testing.T) {
	var logs strings.Builder
	c := new(inputs.Counters)
	u, err := NewUDP(UDPOptions{ReadBufferBytes: 4096}, sinktest.New(), c, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var kernel uint64
	var kerr error
	u.kernelDrops = func() (uint64, error) { return kernel, kerr }
	steps := []struct {
		kernel   uint64
		err      error
		want     uint64
		warnings int
	}{
		{0, nil, 0, 0},
		{7, nil, 7, 1},
		{9, nil, 9, 1}, // within a minute of the last warning
		{9, errors.New("socket gone"), 9, 1},
	}
	for i, s := range steps {
		kernel, kerr = s.kernel, s.err
		u.readKernelDrops()
		if got, w := c.KernelDrops.Load(), strings.Count(logs.String(), "the kernel dropped datagrams"); got != s.want || w != s.warnings {
			t.Fatalf("step %d: counter %d, %d warnings; want %d, %d\n%s", i, got, w, s.want, s.warnings, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "read_buffer=\"4096 bytes\"") || !strings.Contains(logs.String(), "dropped=7") {
		t.Errorf("the warning does not say how many and which buffer:\n%s", logs.String())
	}
	u.lastWarned = time.Now().Add(-kernelDropsWarnEvery)
	kernel, kerr = 12, nil
	u.readKernelDrops()
	if w := strings.Count(logs.String(), "the kernel dropped datagrams"); w != 2 {
		t.Errorf("%d warnings a minute later, want 2", w)
	}
}
