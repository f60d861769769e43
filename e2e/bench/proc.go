package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is sysconf(_SC_CLK_TCK), the unit of utime and stime in
// /proc/<pid>/stat; 100 on Linux unless getconf says otherwise.
var clockTicks = sync.OnceValue(func() float64 {
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
})

// procCPU returns the user plus system CPU seconds process pid has used.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line; the command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc stat line %.80q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc stat line %.80q", b)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected utime/stime %q %q in /proc stat line", f[11], f[12])
	}
	return float64(utime+stime) / clockTicks(), nil
}

// procMem returns VmRSS and VmHWM (peak RSS) of process pid in bytes.
func procMem(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStatusMem(b)
}

func parseStatusMem(b []byte) (rss, hwm int64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("unexpected %s line %q in /proc status", k, sc.Text())
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("unexpected %s line %q in /proc status", k, sc.Text())
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("no VmRSS/VmHWM in /proc status")
	}
	return rss, hwm, nil
}

// machine describes where the bench ran.
type machine struct {
	CPU, Kernel, FS       string
	Cores                 int
	RAM                   int64
	GoVersion, DuckDB     string
	AgentVersion, Commit  string
	LoadBefore, LoadAfter string
	Started               time.Time
}

func readMachine(bin, dataDir string) machine {
	m := machine{Cores: runtime.NumCPU(), Started: time.Now().UTC(), CPU: "unknown", Kernel: "unknown", FS: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(v)
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					m.RAM = n << 10
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.FS = mountOf(dataDir)
	m.LoadBefore = loadAvg()
	var v struct {
		Version string `json:"version"`
		Commit  string `json:"commit"`
		Go      string `json:"go_version"`
		DuckDB  string `json:"duckdb_version"`
	}
	if out, err := exec.Command(bin, "version", "-json").Output(); err == nil && json.Unmarshal(out, &v) == nil {
		m.AgentVersion, m.Commit, m.GoVersion, m.DuckDB = v.Version, v.Commit, v.Go, v.DuckDB
	}
	return m
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// mountOf names the filesystem holding dir (device and type), from the
// longest matching mount point: fsync costs depend on it.
func mountOf(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "unknown"
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "unknown"
	}
	best, what := "", "unknown"
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, what = mp, fmt.Sprintf("%s (%s on %s)", mp, f[2], f[0])
		}
	}
	return what
}

// udpDrops returns the kernel's count of datagrams dropped on process pid's
// UDP socket bound to port (the last column of /proc/<pid>/net/udp): what
// arrived while the socket's receive buffer was full.
func udpDrops(pid, port int) (uint64, error) {
	var total uint64
	found := false
	for _, name := range []string{"udp", "udp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, name))
		if err != nil {
			continue
		}
		n, ok, err := parseUDPDrops(b, port)
		if err != nil {
			return 0, err
		}
		total += n
		found = found || ok
	}
	if !found {
		return 0, fmt.Errorf("no UDP socket on port %d in /proc/%d/net/udp", port, pid)
	}
	return total, nil
}

func parseUDPDrops(b []byte, port int) (drops uint64, found bool, err error) {
	want := fmt.Sprintf(":%04X", port)
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 13 || f[0] == "sl" || !strings.HasSuffix(f[1], want) {
			continue
		}
		n, err := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("unexpected drops %q in /proc net/udp line %q", f[len(f)-1], line)
		}
		drops += n
		found = true
	}
	return drops, found, nil
}
