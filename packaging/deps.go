package main

import (
	"debug/elf"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// linkedLib is one shared library the binary needs, the distributions'
// package names for it, and the symbol version prefix that tells which
// release of it is the oldest that works.
type linkedLib struct {
	deb, rpm      string
	versionPrefix string // GLIBC_, GLIBCXX_; "" = no versioned dependency
}

// knownLibs maps the DT_NEEDED sonames a cgo build of fpagent links to
// packages. A soname not listed here fails the build, so a new link
// dependency cannot slip into a package that does not declare it.
var knownLibs = map[string]linkedLib{
	"libc.so.6":             {deb: "libc6", rpm: "glibc", versionPrefix: "GLIBC_"},
	"libm.so.6":             {deb: "libc6", rpm: "glibc", versionPrefix: "GLIBC_"},
	"libpthread.so.0":       {deb: "libc6", rpm: "glibc", versionPrefix: "GLIBC_"},
	"libdl.so.2":            {deb: "libc6", rpm: "glibc", versionPrefix: "GLIBC_"},
	"libresolv.so.2":        {deb: "libc6", rpm: "glibc", versionPrefix: "GLIBC_"},
	"ld-linux-x86-64.so.2":  {deb: "libc6", rpm: "glibc", versionPrefix: "GLIBC_"},
	"ld-linux-aarch64.so.1": {deb: "libc6", rpm: "glibc", versionPrefix: "GLIBC_"},
	"libstdc++.so.6":        {deb: "libstdc++6", rpm: "libstdc++", versionPrefix: "GLIBCXX_"},
	"libgcc_s.so.1":         {deb: "libgcc-s1", rpm: "libgcc"},
}

// glibcxxToGCC maps libstdc++'s GLIBCXX_3.4.N symbol versions to the first
// GCC release that provides them (the libstdc++ manual's ABI policy table);
// Debian's libstdc++6 and Fedora's libstdc++ carry GCC's version.
var glibcxxToGCC = map[int]string{
	21: "5", 22: "6", 23: "7", 24: "7.2", 25: "8", 26: "9", 27: "9.2", 28: "9.3",
	29: "11", 30: "12", 31: "13", 32: "13.2", 33: "14", 34: "15",
}

// dependencies reads the ELF binary at path and returns the Debian and RPM
// dependencies of what it links, each with the oldest version its symbols allow.
func dependencies(path string) (deb, rpm []string, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read the binary's dependencies: %w", err)
	}
	defer f.Close()
	needed, err := f.ImportedLibraries()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: DT_NEEDED: %w", path, err)
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: dynamic symbols: %w", path, err)
	}
	// The highest symbol version needed per prefix (GLIBC_2.34, GLIBCXX_3.4.30).
	highest := map[string][]int{}
	for _, s := range syms {
		for _, prefix := range []string{"GLIBC_", "GLIBCXX_"} {
			if v, ok := strings.CutPrefix(s.Version, prefix); ok && s.Section == elf.SHN_UNDEF {
				if n := parseDotted(v); n != nil && lessDotted(highest[prefix], n) {
					highest[prefix] = n
				}
			}
		}
	}
	debs, rpms := map[string]string{}, map[string]string{}
	for _, so := range needed {
		lib, ok := knownLibs[so]
		if !ok {
			return nil, nil, fmt.Errorf("%s links %s, which packaging/deps.go does not map to a package: add it to knownLibs", path, so)
		}
		if lib.deb == "" {
			continue
		}
		min, err := minVersion(lib.versionPrefix, highest[lib.versionPrefix])
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		debs[lib.deb], rpms[lib.rpm] = min, min
	}
	render := func(m map[string]string, format string) []string {
		var out []string
		for name, min := range m {
			if min == "" {
				out = append(out, name)
			} else {
				out = append(out, fmt.Sprintf(format, name, min))
			}
		}
		sort.Strings(out)
		return out
	}
	return render(debs, "%s (>= %s)"), render(rpms, "%s >= %s"), nil
}

// minVersion turns the highest symbol version needed into a package version.
func minVersion(prefix string, v []int) (string, error) {
	if v == nil {
		return "", nil
	}
	switch prefix {
	case "GLIBC_":
		return joinDotted(v), nil
	case "GLIBCXX_":
		if len(v) == 3 && v[0] == 3 && v[1] == 4 {
			if v[2] < 21 {
				return "5", nil // older than any supported distribution
			}
			if gcc, ok := glibcxxToGCC[v[2]]; ok {
				return gcc, nil
			}
		}
		return "", fmt.Errorf("needs GLIBCXX_%s, which packaging/deps.go does not map to a GCC release: add it to glibcxxToGCC", joinDotted(v))
	}
	return "", nil
}

func parseDotted(s string) []int {
	var out []int
	for _, p := range strings.Split(s, ".") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil
		}
		out = append(out, n)
	}
	return out
}

func lessDotted(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

func joinDotted(v []int) string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ".")
}
