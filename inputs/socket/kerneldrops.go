package socket

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// parseUDPDrops finds the socket with inode ino in a /proc/net/udp or udp6
// table and returns its drops column: datagrams the kernel discarded because
// the socket's receive buffer was full.
func parseUDPDrops(r io.Reader, ino uint64) (drops uint64, found bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	want := strconv.FormatUint(ino, 10)
	header := true
	for sc.Scan() {
		if header { // "sl local_address rem_address ... inode ref pointer drops"
			header = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 13 || f[9] != want {
			continue
		}
		d, err := strconv.ParseUint(f[12], 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("drops column %q of socket inode %d: %w", f[12], ino, err)
		}
		return d, true, nil
	}
	return 0, false, sc.Err()
}
