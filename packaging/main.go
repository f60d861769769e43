// Command packaging builds fpagent for linux/amd64 and linux/arm64 and wraps
// each binary in a .deb and an .rpm (with nfpm as a library):
//
//	go -C packaging run . -version 1.2.3
//
// writes dist/fpagent_1.2.3-1_amd64.deb, dist/fpagent-1.2.3-1.x86_64.rpm and
// their arm64/aarch64 twins. arm64 is cross-built with cgo, so it needs
// gcc-aarch64-linux-gnu and g++-aarch64-linux-gnu. Run with -h for the flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "packaging:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("packaging", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.Version, "version", "", "package and binary version, e.g. 1.2.3 or 1.3.0-rc1 (required)")
	fs.StringVar(&o.Release, "release", "1", "package revision (Debian revision, RPM release)")
	fs.StringVar(&o.Commit, "commit", "", "commit stamped into the binary (default: git rev-parse HEAD)")
	fs.StringVar(&o.Date, "date", "", "build date stamped into the binary and the package files, RFC 3339\n(default: $SOURCE_DATE_EPOCH, else the commit time, so that builds repeat)")
	archs := fs.String("arch", "amd64,arm64", "comma-separated GOARCH values: amd64, arm64")
	formats := fs.String("formats", "deb,rpm", "comma-separated package formats: deb, rpm")
	fs.StringVar(&o.Compression, "compression", "xz", "payload compression: xz (smallest), zstd or gzip (faster to build)")
	fs.StringVar(&o.Out, "out", "", "output directory (default: <repository>/dist)")
	fs.StringVar(&o.Root, "root", "", "repository root (default: found from the working directory)")
	fs.StringVar(&o.Maintainer, "maintainer", defaultMaintainer, "package maintainer, \"Name <email>\"")
	fs.StringVar(&o.CCArm64, "cc-arm64", "aarch64-linux-gnu-gcc", "C cross compiler for arm64")
	fs.StringVar(&o.CXXArm64, "cxx-arm64", "aarch64-linux-gnu-g++", "C++ cross compiler for arm64")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go -C packaging run . -version VERSION [flags]\n\n"+
			"Builds fpagent for each -arch and packages it in each -format into -out.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; run with -h", fs.Arg(0))
	}
	o.Archs = splitList(*archs)
	o.Formats = splitList(*formats)
	if err := o.complete(); err != nil {
		return err
	}
	b := &builder{opts: o, log: stdout}
	paths, err := b.all()
	for _, p := range paths {
		fmt.Fprintln(stdout, "wrote", p)
	}
	return err
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// findRoot walks up from dir to the directory whose go.mod is fpagent's.
func findRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	start := dir
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), "module "+mainModule+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s in %s or above it; pass -root", mainModule, start)
		}
		dir = parent
	}
}
