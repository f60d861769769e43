package storage

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash test runs the store in a child process (this test binary again)
// that stores batches and prints each acknowledged one; the parent kills it
// with SIGKILL at random moments, mid-store and mid-flush, restarts it, and
// in the end checks DuckDB against the acknowledgements.

const (
	crashChildEnv   = "FPAGENT_STORAGE_CRASH_CHILD"
	crashBatchSize  = 50
	crashSeriesMod  = 37
	crashPointsBase = 1_600_000_000_000_000_000
)

func crashPoint(seq int) Point {
	return Point{
		Measurement: "crash",
		Tags:        []Tag{{"series", strconv.Itoa(seq % crashSeriesMod)}},
		Fields:      []Field{{"seq", IntValue(int64(seq))}, {"payload", StringValue(strings.Repeat("x", seq%50))}},
		Time:        crashPointsBase + int64(seq),
	}
}

// TestCrashChild is the child's body; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("runs only as the crash test's child process")
	}
	start, _ := strconv.Atoi(os.Getenv("FPAGENT_CRASH_START"))
	cfg := testConfig(dir)
	cfg.BatchSize = 400
	cfg.FlushInterval = 20 * time.Millisecond
	cfg.MaxWALSize = 32 << 10
	s := openTest(t, dir, cfg)
	out := bufio.NewWriter(os.Stdout)
	for b := start; ; b++ {
		batch := &Batch{Source: "crash"}
		for i := range crashBatchSize {
			batch.Points = append(batch.Points, crashPoint(b*crashBatchSize+i))
		}
		fmt.Fprintf(out, "TRY %d\n", b)
		out.Flush()
		if err := s.WriteBatch(context.Background(), batch); err != nil {
			fmt.Fprintf(out, "ERR %d %v\n", b, err)
			out.Flush()
			continue
		}
		fmt.Fprintf(out, "ACK %d\n", b)
		out.Flush()
	}
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash test starts many processes")
	}
	dir := t.TempDir()
	kills := 30
	acked := map[int]bool{}
	tried := map[int]bool{}
	next := 0
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for k := 0; k < kills; k++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, "FPAGENT_CRASH_START="+strconv.Itoa(next))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Wait for the first acknowledgement (recovery done enough to
		// store), then kill at a random moment after it.
		killAt := time.Duration(rng.IntN(400)) * time.Millisecond
		var timer <-chan time.Time
		deadline := time.After(60 * time.Second)
	read:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break read
				}
				var n int
				switch {
				case strings.HasPrefix(line, "TRY "):
					n, _ = strconv.Atoi(line[4:])
					tried[n] = true
				case strings.HasPrefix(line, "ACK "):
					n, _ = strconv.Atoi(line[4:])
					acked[n] = true
					if timer == nil {
						timer = time.After(killAt)
					}
				case strings.HasPrefix(line, "ERR "):
					t.Errorf("child: %s", line)
				}
				next = max(next, n+1)
			case <-timer:
				cmd.Process.Signal(syscall.SIGKILL)
				timer = nil
			case <-deadline:
				cmd.Process.Kill()
				t.Fatal("child made no progress for 60s")
			}
		}
		cmd.Wait()
	}

	// Open once more, flush, and compare.
	s := openTest(t, dir, testConfig(dir))
	waitReady(t, s)
	mustFlush(t, s)
	rows, err := s.DB().Query(`SELECT (fields->>'seq')::BIGINT, epoch_ns(ts), count(*) OVER (PARTITION BY key, ts) FROM readings`)
	if err != nil {
		t.Fatal(err)
	}
	found := map[int]bool{}
	for rows.Next() {
		var seq, ts, dup int64
		if err := rows.Scan(&seq, &ts, &dup); err != nil {
			t.Fatal(err)
		}
		if dup != 1 {
			t.Errorf("point %d is stored %d times", seq, dup)
		}
		if ts != crashPointsBase+seq {
			t.Errorf("point %d has time %d", seq, ts)
		}
		if !tried[int(seq)/crashBatchSize] {
			t.Errorf("point %d was never written", seq)
		}
		found[int(seq)] = true
	}
	rows.Close()
	missing := 0
	for b := range acked {
		for i := range crashBatchSize {
			if !found[b*crashBatchSize+i] {
				missing++
			}
		}
	}
	t.Logf("kills: %d, acknowledged batches: %d, points found: %d, missing: %d", kills, len(acked), len(found), missing)
	if missing > 0 {
		t.Fatalf("%d acknowledged points are missing", missing)
	}
	if len(acked) < kills {
		t.Fatalf("only %d batches acknowledged over %d runs: the test did not exercise much", len(acked), kills)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "wal", "*.broken")); len(m) > 0 {
		t.Fatalf("SIGKILL alone left damaged segments: %v", m)
	}
}
