package storage

import (
	"math/rand/v2"
	"testing"
)

// TestDedupe checks the hash-table dedupe against the rule it implements:
// of the rows with the same series and time, only the last one lives.
func TestDedupe(t *testing.T) {
	cases := []struct {
		name          string
		series, times int // ranges the random rows draw from
		rows          int
	}{
		{"no repeats possible", 1000, 1 << 30, 5000},
		{"few series, many repeats", 3, 50, 2000},
		{"many series, some repeats", 5000, 20, 20000},
		{"one series", 1, 10, 100},
		{"series ids above 64", 300, 5, 3000},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var fb flushBatch
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for round := range 3 {
				fb.reset(uint64(round+1), nil)
				infos := make(map[uint32]*seriesInfo)
				for range tc.rows {
					id := uint32(rng.IntN(tc.series))
					s := infos[id]
					if s == nil {
						s = &seriesInfo{id: id}
						infos[id] = s
						// A third of the series did not go back in time:
						// their rows are left alone.
						if id%3 != 2 {
							fb.backwards = append(fb.backwards, s)
						}
					}
					fb.rows = append(fb.rows, row{ts: int64(rng.IntN(tc.times)) - 3, series: id})
				}
				fb.dedupe()
				last := make(map[[2]int64]int)
				for i, r := range fb.rows {
					k := [2]int64{int64(r.series), r.ts}
					if r.series%3 == 2 {
						k[1], k[0] = int64(i), -1 // unflagged: every row lives
					}
					last[k] = i
				}
				live := 0
				for i, r := range fb.rows {
					k := [2]int64{int64(r.series), r.ts}
					if r.series%3 == 2 {
						k[1], k[0] = int64(i), -1
					}
					want := last[k] != i
					if r.dead != want {
						t.Fatalf("round %d: row %d (series %d, ts %d) dead=%v, want %v", round, i, r.series, r.ts, r.dead, want)
					}
					if !r.dead {
						live++
					}
				}
				if live != len(last) {
					t.Fatalf("round %d: %d live rows, want %d", round, live, len(last))
				}
			}
		})
	}
}

// TestDedupeOnlyFlaggedSeries: rows of series that never went back in time
// are left alone, even when another series' rows share their times, and
// whatever their ids.
func TestDedupeOnlyFlaggedSeries(t *testing.T) {
	var fb flushBatch
	fb.reset(1, nil)
	back := &seriesInfo{id: 70}
	fb.backwards = append(fb.backwards, back)
	// Series 1 and 500 are not flagged; 500 is beyond the flagged ids.
	fb.rows = append(fb.rows,
		row{ts: 5, series: 1}, row{ts: 5, series: 70}, row{ts: 4, series: 70},
		row{ts: 5, series: 70}, row{ts: 5, series: 1}, row{ts: 5, series: 500}, row{ts: 5, series: 500})
	fb.dedupe()
	want := []bool{false, true, false, false, false, false, false}
	for i, r := range fb.rows {
		if r.dead != want[i] {
			t.Errorf("row %d (series %d, ts %d): dead=%v, want %v", i, r.series, r.ts, r.dead, want[i])
		}
	}
	for i, w := range fb.flagged {
		if w != 0 {
			t.Errorf("flagged[%d] = %#x after dedupe, want cleared", i, w)
		}
	}
}
