package wal

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// plRun is one scripted run against a memFS that may lose power.
type plRun struct {
	acked     map[Position]string // acknowledged appends
	attempted map[string]bool     // every payload ever offered
	removedTo Position            // records below may have been removed on purpose
	synced    Position            // highest position the log had fsynced before the power loss
	spares    Stats               // Preallocated and Recycled over the run
}

// powerLossScript appends single records and batches into small segments
// (so that it rotates often), removes old segments, dies without closing,
// reopens, appends again and closes. Errors after the power loss are expected and ignored.
func powerLossScript(fs *memFS, sync SyncPolicy, prealloc bool) *plRun {
	run := &plRun{acked: map[Position]string{}, attempted: map[string]bool{}}
	opts := Options{FS: fs, Sync: sync, MaxSegmentSize: 256, MaxSegmentAge: -1, SyncInterval: 1 << 40,
		Preallocate: prealloc, preallocInline: prealloc}
	id := 0
	next := func() string {
		id++
		s := fmt.Sprintf("r%04d", id)
		run.attempted[s] = true
		return s
	}
	work := func(l *Log, n int) {
		again := true // a second removal when no spare is ready, so that one is recycled
		for i := 0; i < n; i++ {
			if i%5 == 4 {
				a, b, c := next(), next(), next()
				if last, err := l.AppendBatch([][]byte{[]byte(a), []byte(b), []byte(c)}); err == nil {
					run.acked[last-2], run.acked[last-1], run.acked[last] = a, b, c
				}
			} else {
				p := next()
				if pos, err := l.Append([]byte(p)); err == nil {
					run.acked[pos] = p
				}
			}
			if i == n/2 || (again && i > n/2+2 && !l.spareReady.Load()) {
				to := l.LastPosition() - 4
				if i != n/2 {
					to, again = l.LastPosition(), false
				}
				run.removedTo = max(run.removedTo, to)
				l.RemoveBefore(to)
			}
			run.synced = max(run.synced, Position(l.synced.Load()))
		}
	}
	for round := 0; round < 2; round++ {
		l, err := Open("/wal", opts)
		if err != nil {
			return run
		}
		work(l, 20)
		st := l.Stats()
		run.spares.Preallocated += st.Preallocated
		run.spares.Recycled += st.Recycled
		if round == 0 {
			// The process dies; the next one builds on what is in the page cache.
			fs.processDied()
		}
		l.Close()
		run.synced = max(run.synced, Position(l.synced.Load()))
	}
	return run
}

// checkAfterPowerLoss reopens the file system as it came back and checks
// that every record that had to survive did, that the survivors are in
// order with no hole, and that appends continue.
func checkAfterPowerLoss(t *testing.T, fs *memFS, run *plRun, mustSurvive Position, label string) {
	t.Helper()
	l, err := Open("/wal", Options{FS: fs, MaxSegmentSize: 256})
	if err != nil {
		t.Fatalf("%s: reopen after power loss: %v", label, err)
	}
	defer l.Close()
	got := readAllRaw(t, l)
	seen := map[Position]bool{}
	var prev Position
	for i, r := range got {
		if i > 0 && r.pos != prev+1 {
			t.Fatalf("%s: position %d follows %d: a hole", label, r.pos, prev)
		}
		prev = r.pos
		seen[r.pos] = true
		if want, ok := run.acked[r.pos]; ok && want != r.rec {
			t.Fatalf("%s: position %d holds %q, acknowledged as %q", label, r.pos, r.rec, want)
		}
		if !run.attempted[r.rec] {
			t.Fatalf("%s: position %d holds %q, never appended", label, r.pos, r.rec)
		}
	}
	for p, want := range run.acked {
		if p >= run.removedTo && p <= mustSurvive && !seen[p] {
			t.Fatalf("%s: acknowledged record %d (%q) lost; must survive up to %d; read %v", label, p, want, mustSurvive, got)
		}
	}
	if st := l.Stats(); st.Corruptions != 0 || st.Gaps != 0 {
		t.Fatalf("%s: a power loss must not look like damage: %+v, %v", label, st, l.Problems())
	}
	want := l.LastPosition() + 1
	if pos, err := l.Append([]byte("after")); err != nil || pos != want {
		t.Fatalf("%s: append after power loss = %d, %v; want %d", label, pos, err, want)
	}
}

func readAllRaw(t *testing.T, l *Log) []readRec {
	t.Helper()
	return readAll(t, l, 0)
}

// TestPowerLoss loses power at every mutating file system operation of a
// scripted run (appends, rotations, removals, close, reopen), with and
// without preallocated segments.
//
//   - always: every acknowledged record survives.
//   - interval, none: records acknowledged after the last fsync may be
//     lost (interval: up to SyncInterval of them; none: up to the whole
//     active segment), but everything fsynced before the power loss
//     survives, and what survives has no hole.
func TestPowerLoss(t *testing.T) {
	for _, tc := range []struct {
		sync     SyncPolicy
		prealloc bool
	}{{SyncAlways, false}, {SyncInterval, false}, {SyncNone, false}, {SyncAlways, true}, {SyncInterval, true}, {SyncNone, true}} {
		sync := tc.sync
		name := string(sync)
		if tc.prealloc {
			name += "-preallocated"
		}
		t.Run(name, func(t *testing.T) {
			dry := newMemFS()
			dryRun := powerLossScript(dry, sync, tc.prealloc)
			if tc.prealloc && (dryRun.spares.Preallocated == 0 || dryRun.spares.Recycled == 0) {
				t.Fatalf("the script neither preallocated nor recycled a segment: %+v", dryRun.spares)
			}
			total := dry.ops
			if total < 50 {
				t.Fatalf("the script made only %d file system operations", total)
			}
			t.Logf("losing power at each of %d operations", total)
			rng := rand.New(rand.NewPCG(1, 2))
			for at := 1; at <= total+1; at++ {
				fs := newMemFS()
				fs.crashAt = at
				run := powerLossScript(fs, sync, tc.prealloc)
				mustSurvive := run.synced
				if sync == SyncAlways {
					mustSurvive = ^Position(0)
				}
				label := fmt.Sprintf("power lost at operation %d of %d", at, total)
				checkAfterPowerLoss(t, fs.afterPowerLoss(nil), run, mustSurvive, label+" (strict)")
				checkAfterPowerLoss(t, fs.afterPowerLoss(rng), run, mustSurvive, label+" (unsynced bytes partly kept)")
			}
		})
	}
}
