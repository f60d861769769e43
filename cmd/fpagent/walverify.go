package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/fpagent/fpagent/wal"
)

func cmdWAL(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprintln(stderr, "Usage: fpagent wal verify [-v] [-tmp DIR] WALDIR")
			return exitOK
		}
		fmt.Fprintln(stderr, "Usage: fpagent wal verify [-v] [-tmp DIR] WALDIR")
		return exitUsage
	}
	return cmdWALVerify(args[1:], stdout, stderr)
}

// segInfo is one file of the WAL directory as found on disk.
type segInfo struct {
	name    string
	seq     uint64
	first   wal.Position
	size    int64
	records int
	lo, hi  wal.Position
	after   int64 // size once the wal package has recovered it; -1 when set aside
}

func cmdWALVerify(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("wal verify", "fpagent wal verify [-v] [-tmp DIR] WALDIR",
		"Read a WAL directory offline and report its segments, records and positions, and any\n"+
			"damage: corrupt records, missing positions, files that are not segments, a torn tail.\n"+
			"The directory is not changed: the check runs on a copy (in -tmp), with the same\n"+
			"recovery the agent runs at start. Exit 0 when the WAL is sound (a torn tail alone,\n"+
			"normal after a crash, is reported but not an error), 1 on damage, 2 on bad usage.", stderr)
	verbose := fs.Bool("v", false, "also print what the recovery logged")
	tmp := fs.String("tmp", "", "where to put the copy (default: the system's temporary directory)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	dir := fs.Arg(0)
	segs, others, err := listSegments(dir)
	if err != nil {
		fmt.Fprintf(stderr, "fpagent wal verify: %v\n", err)
		return exitUsage
	}
	if sub := filepath.Join(dir, "wal"); len(segs) == 0 {
		// Given the data directory: its WAL is in wal/.
		if st, err := os.Stat(sub); err == nil && st.IsDir() {
			dir = sub
			if segs, others, err = listSegments(dir); err != nil {
				fmt.Fprintf(stderr, "fpagent wal verify: %v\n", err)
				return exitUsage
			}
		}
	}
	work, err := os.MkdirTemp(*tmp, "fpagent-wal-verify-")
	if err != nil {
		fmt.Fprintf(stderr, "fpagent wal verify: make a work directory: %v (set -tmp)\n", err)
		return exitFailure
	}
	defer os.RemoveAll(work)
	for _, s := range segs {
		if err := copyFile(filepath.Join(dir, s.name), filepath.Join(work, s.name)); err != nil {
			fmt.Fprintf(stderr, "fpagent wal verify: copy %s: %v\n", s.name, err)
			return exitFailure
		}
	}

	var logBuf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	l, err := wal.Open(work, wal.Options{Logger: logger, MaxSegmentAge: -1})
	if err != nil {
		fmt.Fprintf(stdout, "WAL directory %s cannot be opened: %v\n", dir, err)
		return exitFailure
	}
	problems := l.Problems()
	first, last := l.FirstPosition(), l.LastPosition()
	var records, bytesRead int64
	var readErr error
	r, err := l.NewReader(first)
	if err != nil {
		readErr = err
	} else {
		for {
			rec, pos, err := r.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					readErr = err
				}
				break
			}
			records++
			bytesRead += int64(len(rec))
			if s := segmentOf(segs, pos); s != nil {
				s.records++
				if s.lo == 0 {
					s.lo = pos
				}
				s.hi = pos
			}
		}
		r.Close()
	}
	problems = append(problems, l.Problems()[len(problems):]...)
	if err := l.Close(); err != nil && readErr == nil {
		readErr = err
	}
	for i := range segs {
		segs[i].after = -1
		if st, err := os.Stat(filepath.Join(work, segs[i].name)); err == nil {
			segs[i].after = st.Size()
		}
	}

	fmt.Fprintf(stdout, "WAL directory: %s\n", dir)
	var total int64
	for _, s := range segs {
		total += s.size
	}
	fmt.Fprintf(stdout, "segments: %d (%s)\n", len(segs), fmtBytes(total))
	torn := 0
	for _, s := range segs {
		span := "no records"
		if s.records > 0 {
			span = fmt.Sprintf("positions %d-%d, %d records", s.lo, s.hi, s.records)
		}
		note := ""
		switch {
		case s.after < 0:
			note = "  DAMAGED: set aside (not a readable segment)"
		case s.after < s.size:
			note = fmt.Sprintf("  torn tail: %d bytes after offset %d are not a whole record", s.size-s.after, s.after)
			torn++
		}
		fmt.Fprintf(stdout, "  %s  seq %d  first %d  %s  %s%s\n", s.name, s.seq, s.first, fmtBytes(s.size), span, note)
	}
	for _, o := range others {
		fmt.Fprintf(stdout, "  %s  (not a segment; ignored)\n", o)
	}
	if records > 0 {
		fmt.Fprintf(stdout, "records: %d (%s of payload), positions %d to %d\n", records, fmtBytes(bytesRead), first, last)
	} else {
		fmt.Fprintf(stdout, "records: 0\n")
	}
	if *verbose && logBuf.Len() > 0 {
		fmt.Fprintf(stdout, "recovery log:\n%s", indent(logBuf.String()))
	}
	damaged := len(problems) > 0 || readErr != nil
	for _, s := range segs {
		damaged = damaged || s.after < 0
	}
	switch {
	case damaged:
		fmt.Fprintf(stdout, "DAMAGE: %d problem(s)\n", len(problems)+boolInt(readErr != nil))
		for _, p := range problems {
			fmt.Fprintf(stdout, "  %v\n", p)
		}
		if readErr != nil {
			fmt.Fprintf(stdout, "  reading: %v\n", readErr)
		}
		fmt.Fprintln(stdout, "The agent sets damaged regions aside at start (renamed *.broken) and goes on; the records in them are lost.")
		return exitFailure
	case torn > 0:
		fmt.Fprintln(stdout, "OK, with a torn tail: the last write before a crash did not complete; the agent cuts it at start (under sync: always it was never acknowledged).")
	default:
		fmt.Fprintln(stdout, "OK: no damage found")
	}
	return exitOK
}

// listSegments finds the segment files (%016x-%016x.wal) of dir, in order.
func listSegments(dir string) ([]segInfo, []string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	var segs []segInfo
	var others []string
	for _, e := range entries {
		name := e.Name()
		if name == "LOCK" || e.IsDir() {
			continue
		}
		seqHex, firstHex, ok := strings.Cut(strings.TrimSuffix(name, ".wal"), "-")
		seq, err1 := strconv.ParseUint(seqHex, 16, 64)
		first, err2 := strconv.ParseUint(firstHex, 16, 64)
		if !ok || !strings.HasSuffix(name, ".wal") || len(seqHex) != 16 || len(firstHex) != 16 || err1 != nil || err2 != nil {
			others = append(others, name)
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, nil, err
		}
		segs = append(segs, segInfo{name: name, seq: seq, first: wal.Position(first), size: info.Size()})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].seq < segs[j].seq })
	return segs, others, nil
}

// segmentOf finds the segment holding pos: the last one whose first position is at or below it.
func segmentOf(segs []segInfo, pos wal.Position) *segInfo {
	var found *segInfo
	for i := range segs {
		if segs[i].first <= pos {
			found = &segs[i]
		}
	}
	return found
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
