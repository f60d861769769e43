package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const (
	mainModule        = "github.com/fpagent/fpagent"
	versionPkg        = mainModule + "/internal/version"
	defaultMaintainer = "fpagent maintainers <fpagent@users.noreply.github.com>"
	homepage          = "https://github.com/fpagent/fpagent"
)

// supportedArchs are the GOARCH values packaged; arm64 is cross-built with
// cgo on other hosts.
var supportedArchs = []string{"amd64", "arm64"}

// options is what one run builds.
type options struct {
	Version, Release string
	Commit, Date     string
	Archs, Formats   []string
	Out, Root        string
	Maintainer       string
	Compression      string
	CCArm64          string
	CXXArm64         string

	mtime time.Time // Date, parsed
}

// versionRE accepts what both dpkg and rpm can order: digits first, then
// letters, digits, dots, '+', '~' and one '-' for a pre-release (1.3.0-rc1).
var versionRE = regexp.MustCompile(`^[0-9][0-9A-Za-z.+~]*(-[0-9A-Za-z.]+)?$`)

// complete checks o and fills in what was left to defaults.
func (o *options) complete() error {
	if o.Version == "" {
		return fmt.Errorf("-version is required, e.g. -version 1.2.3")
	}
	o.Version = strings.TrimPrefix(o.Version, "v")
	if !versionRE.MatchString(o.Version) {
		return fmt.Errorf("-version %q: want digits first, then letters, digits, '.', '+', '~' and at most one '-' (1.2.3, 1.3.0-rc1)", o.Version)
	}
	if !regexp.MustCompile(`^[0-9A-Za-z.+~]+$`).MatchString(o.Release) {
		return fmt.Errorf("-release %q: want letters, digits, '.', '+' or '~', e.g. 1", o.Release)
	}
	for _, a := range o.Archs {
		if !contains(supportedArchs, a) {
			return fmt.Errorf("-arch %q: supported are %s", a, strings.Join(supportedArchs, ", "))
		}
	}
	for _, f := range o.Formats {
		if f != "deb" && f != "rpm" {
			return fmt.Errorf("-formats %q: supported are deb, rpm", f)
		}
	}
	if !contains([]string{"xz", "zstd", "gzip"}, o.Compression) {
		return fmt.Errorf("-compression %q: supported are xz, zstd, gzip", o.Compression)
	}
	if len(o.Archs) == 0 || len(o.Formats) == 0 {
		return fmt.Errorf("-arch and -formats need at least one value each")
	}
	if o.Root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if o.Root, err = findRoot(wd); err != nil {
			return err
		}
	}
	if o.Out == "" {
		o.Out = filepath.Join(o.Root, "dist")
	}
	if o.Commit == "" {
		o.Commit = gitOutput(o.Root, "rev-parse", "HEAD")
		if o.Commit == "" {
			o.Commit = "unknown"
		}
	}
	switch {
	case o.Date != "":
		t, err := time.Parse(time.RFC3339, o.Date)
		if err != nil {
			return fmt.Errorf("-date %q: want RFC 3339, e.g. 2026-01-02T03:04:05Z", o.Date)
		}
		o.mtime = t
	case os.Getenv("SOURCE_DATE_EPOCH") != "":
		sec, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", os.Getenv("SOURCE_DATE_EPOCH"))
		}
		o.mtime = time.Unix(sec, 0)
	default:
		t, err := time.Parse(time.RFC3339, gitOutput(o.Root, "log", "-1", "--format=%cI"))
		if err != nil {
			t = time.Now()
		}
		o.mtime = t
	}
	o.mtime = o.mtime.UTC().Truncate(time.Second)
	o.Date = o.mtime.Format(time.RFC3339)
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// gitOutput runs git in dir and returns its trimmed output, or "" when git
// or the repository is missing.
func gitOutput(dir string, args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// builder builds binaries and packages them.
type builder struct {
	opts options
	log  io.Writer
}

// all builds every arch, then every package, and returns the package paths.
func (b *builder) all() ([]string, error) {
	if err := os.MkdirAll(b.opts.Out, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, arch := range b.opts.Archs {
		bin, err := b.binary(arch)
		if err != nil {
			return paths, err
		}
		for _, format := range b.opts.Formats {
			p, err := b.pkg(format, arch, bin)
			if err != nil {
				return paths, err
			}
			paths = append(paths, p)
		}
	}
	return paths, nil
}

// binary builds fpagent for arch into <out>/build/linux-<arch>/fpagent.
func (b *builder) binary(arch string) (string, error) {
	out := filepath.Join(b.opts.Out, "build", "linux-"+arch, "fpagent")
	ldflags := strings.Join([]string{
		"-s", "-w",
		"-X", versionPkg + ".Version=" + b.opts.Version,
		"-X", versionPkg + ".Commit=" + b.opts.Commit,
		"-X", versionPkg + ".Date=" + b.opts.Date,
		// Full RELRO, as Debian's and Fedora's hardened builds link.
		"-extldflags", "'-Wl,-z,relro,-z,now'",
	}, " ")
	cmd := exec.Command(goTool(), "build", "-trimpath", "-buildmode=pie", "-ldflags", ldflags, "-o", out, "./cmd/fpagent")
	cmd.Dir = b.opts.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH="+arch)
	if arch == "arm64" && hostArch() != "arm64" {
		for _, tool := range []string{b.opts.CCArm64, b.opts.CXXArm64} {
			if _, err := exec.LookPath(tool); err != nil {
				return "", fmt.Errorf("cross-building arm64 needs %s (apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu): %w", tool, err)
			}
		}
		cmd.Env = append(cmd.Env, "CC="+b.opts.CCArm64, "CXX="+b.opts.CXXArm64)
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = b.log, &stderr
	fmt.Fprintf(b.log, "building %s (linux/%s, version %s)\n", out, arch, b.opts.Version)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build for linux/%s: %w\n%s", arch, err, stderr.String())
	}
	fmt.Fprintf(b.log, "built %s in %s\n", out, time.Since(start).Round(time.Second))
	return out, nil
}

// goTool is the go command that runs this program, so that the build uses
// the same toolchain.
func goTool() string {
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

func hostArch() string {
	out, err := exec.Command(goTool(), "env", "GOHOSTARCH").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
