package wal

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "FPAGENT_WAL_CRASH_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashChild appends with SyncAlways from several goroutines until it is
// killed, printing each acknowledged position and payload on its own line
// (one write each, so lines never interleave). It removes old segments now
// and then, printing "removed P" before it does.
func crashChild(dir string) {
	l, err := Open(dir, Options{Sync: SyncAlways, MaxSegmentSize: 32 << 10, Preallocate: true})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	say := func(s string) {
		mu.Lock()
		os.Stdout.WriteString(s)
		mu.Unlock()
	}
	say("open\n")
	round := os.Getenv("FPAGENT_WAL_CRASH_ROUND")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				p := func(k int) []byte {
					return fmt.Appendf(nil, "r%s-g%d-i%d-%d-%s", round, g, i, k, strings.Repeat("z", (i*7+k)%50))
				}
				if i%10 == 9 {
					batch := [][]byte{p(0), p(1), p(2)}
					last, err := l.AppendBatch(batch)
					if err != nil {
						say(fmt.Sprintf("error %v\n", err))
						os.Exit(3)
					}
					for k, b := range batch {
						say(fmt.Sprintf("%d %s\n", last-2+Position(k), b))
					}
					continue
				}
				b := p(0)
				pos, err := l.Append(b)
				if err != nil {
					say(fmt.Sprintf("error %v\n", err))
					os.Exit(3)
				}
				say(fmt.Sprintf("%d %s\n", pos, b))
				if g == 0 && i%20 == 7 && pos > 200 {
					to := pos - 200
					say(fmt.Sprintf("removed %d\n", to))
					l.RemoveBefore(to)
				}
			}
		}()
	}
	wg.Wait()
}

// TestCrashKill kills a child appending with SyncAlways at random moments,
// 50 times, and checks after every kill that each acknowledged record is
// there, intact and in order, and that appends continue.
func TestCrashKill(t *testing.T) {
	dir := t.TempDir()
	acked := map[Position]string{}
	var removedTo, maxAcked Position
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	const kills = 50
	for round := 0; round < kills; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, "FPAGENT_WAL_CRASH_ROUND="+strconv.Itoa(round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// One kill in eight lands during start-up and recovery, the
		// others while appending, whatever the machine's load.
		kill := func() { cmd.Process.Signal(syscall.SIGKILL) }
		delay := time.Duration(rng.IntN(100)) * time.Millisecond
		var timer *time.Timer
		if round%8 == 0 {
			timer = time.AfterFunc(delay/2, kill)
		}
		sc := bufio.NewScanner(out)
		lines := 0
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "open":
				if timer == nil {
					timer = time.AfterFunc(delay, kill)
				}
			case strings.HasPrefix(line, "error "):
				t.Fatalf("round %d: child: %s", round, line)
			case strings.HasPrefix(line, "removed "):
				p, _ := strconv.ParseUint(strings.TrimPrefix(line, "removed "), 10, 64)
				removedTo = max(removedTo, Position(p))
			default:
				ps, payload, ok := strings.Cut(line, " ")
				p, err := strconv.ParseUint(ps, 10, 64)
				if !ok || err != nil {
					t.Fatalf("round %d: bad line %q", round, line)
				}
				if old, dup := acked[Position(p)]; dup {
					t.Fatalf("round %d: position %d acknowledged twice: %q and %q", round, p, old, payload)
				}
				acked[Position(p)] = payload
				maxAcked = max(maxAcked, Position(p))
				lines++
			}
		}
		timer.Stop()
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child ended without being killed: %v", round, err)
		}

		l, err := Open(dir, Options{MaxSegmentSize: 32 << 10, Preallocate: true})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		if l.LastPosition() < maxAcked {
			t.Fatalf("round %d: LastPosition %d below the highest acknowledged %d", round, l.LastPosition(), maxAcked)
		}
		got := readAll(t, l, 0)
		seen := make(map[Position]bool, len(got))
		for i, r := range got {
			if i > 0 && r.pos != got[i-1].pos+1 {
				t.Fatalf("round %d: position %d follows %d", round, r.pos, got[i-1].pos)
			}
			if want, ok := acked[r.pos]; ok && want != r.rec {
				t.Fatalf("round %d: position %d holds %q, acknowledged %q", round, r.pos, r.rec, want)
			}
			seen[r.pos] = true
		}
		for p, want := range acked {
			if p >= removedTo && !seen[p] {
				t.Fatalf("round %d: acknowledged record %d %q is missing", round, p, want)
			}
		}
		if st := l.Stats(); st.Corruptions != 0 || st.Gaps != 0 {
			t.Fatalf("round %d: a kill must not look like damage: %v", round, l.Problems())
		}
		payload := fmt.Sprintf("parent-%d", round)
		p, err := l.Append([]byte(payload))
		if err != nil || p != l.LastPosition() {
			t.Fatalf("round %d: append after kill = %d, %v", round, p, err)
		}
		acked[p], maxAcked = payload, p
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if testing.Verbose() {
			t.Logf("round %d: killed after %v, %d acknowledged lines, %d records on disk", round, delay, lines, len(got))
		}
	}
	if removedTo == 0 || len(acked) < 500 {
		t.Fatalf("%d records acknowledged over %d kills, removal up to %d: the children hardly ran", len(acked), kills, removedTo)
	}
}
