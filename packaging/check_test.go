package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// maxExposure is the worst systemd-analyze security rating the unit may get.
const maxExposure = 2.0

// checkUnit runs systemd-analyze verify (which exits 0 on parse warnings,
// so any output fails) and security --offline on the unit at path.
func checkUnit(t *testing.T, path string) {
	t.Helper()
	out, err := shErr("systemd-analyze", "verify", path)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify %s: %v\n%s", path, err, out)
	}
	score := exposure(t, path)
	t.Logf("systemd-analyze security --offline=yes %s: %.1f", path, score)
	if score > maxExposure {
		t.Errorf("exposure %.1f, want %.1f or better", score, maxExposure)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for fpagent\.service: (\d+\.\d+)`)

func exposure(t *testing.T, path string) float64 {
	t.Helper()
	out, err := shErr("systemd-analyze", "security", "--offline=yes", "--no-pager", path)
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposureRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	return f
}

// TestUnitSecurity rates the unit in the repository; needs no root and no
// build. verify runs on the installed unit in TestDebLifecycle.
func TestUnitSecurity(t *testing.T) {
	need(t, "systemd-analyze")
	score := exposure(t, "../systemd/fpagent.service")
	t.Logf("exposure %.1f", score)
	if score > maxExposure {
		t.Errorf("exposure %.1f, want %.1f or better", score, maxExposure)
	}
	unit, err := os.ReadFile("../systemd/fpagent.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"Type=notify", "User=fpagent", "StateDirectory=fpagent",
		"ExecStart=/usr/bin/fpagent -config /etc/fpagent/agent.yaml $FPAGENT_OPTS",
		"EnvironmentFile=-/etc/default/fpagent", "EnvironmentFile=-/etc/sysconfig/fpagent",
		"ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "TimeoutStopSec=90s",
		"LimitNOFILE=65536", "ProtectSystem=strict", "CapabilityBoundingSet=", "MemoryDenyWriteExecute=yes",
		"SystemCallFilter=@system-service", "ProcSubset=pid", "UMask=0027",
	} {
		if !strings.Contains(string(unit), "\n"+line+"\n") {
			t.Errorf("unit lacks %q", line)
		}
	}
}

// TestLintian runs lintian on both .debs; any error or warning that
// lintian-suppress does not list (with its reason) fails.
func TestLintian(t *testing.T) {
	need(t, "lintian")
	a := build(t)
	out, _ := shErr("lintian", "--suppress-tags-from-file", "lintian-suppress", "--no-tag-display-limit",
		a.pkgs["deb/amd64"], a.pkgs["deb/arm64"])
	t.Logf("lintian:\n%s", out)
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", line)
		}
	}
}

// TestDebMetadata checks what dpkg-deb reads from both .debs without
// installing them.
func TestDebMetadata(t *testing.T) {
	need(t, "dpkg-deb")
	a := build(t)
	for _, arch := range []string{"amd64", "arm64"} {
		deb, _, err := dependencies(a.bin[arch])
		if err != nil {
			t.Fatal(err)
		}
		f := sh(t, "dpkg-deb", "-f", a.pkgs["deb/"+arch], "Package", "Version", "Architecture", "Depends")
		want := fmt.Sprintf("Package: fpagent\nVersion: 0.1.0-1\nArchitecture: %s\nDepends: %s\n", arch, strings.Join(append(deb, "adduser"), ", "))
		if f != want {
			t.Errorf("%s control:\n%s\nwant:\n%s", arch, f, want)
		}
		for _, lib := range []string{"libc6 (>= 2.", "libstdc++6 (>= ", "libgcc-s1"} {
			if !strings.Contains(f, lib) {
				t.Errorf("%s: Depends lacks %s", arch, lib)
			}
		}
		conf := sh(t, "dpkg-deb", "-I", a.pkgs["deb/"+arch], "conffiles")
		if conf != "/etc/default/fpagent\n/etc/fpagent/agent.yaml\n" {
			t.Errorf("%s conffiles: %q", arch, conf)
		}
		for _, script := range []string{"postinst", "prerm", "postrm"} {
			body := sh(t, "dpkg-deb", "-I", a.pkgs["deb/"+arch], script)
			if out, err := shErr("sh", "-n", "-c", body); err != nil {
				t.Errorf("%s %s: sh -n: %v\n%s", arch, script, err, out)
			}
		}
	}
}

// rpmFile is one line of the file list query below.
const rpmQF = `[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags}\n]`

var rpmFiles = []string{
	"/etc/fpagent drwxr-xr-x root root ",
	"/etc/fpagent/agent.yaml -rw-r----- root fpagent cn",
	"/etc/sysconfig/fpagent -rw-r--r-- root root cn",
	"/usr/bin/fpagent -rwxr-xr-x root root ",
	"/usr/lib/systemd/system/fpagent.service -rw-r--r-- root root ",
	"/usr/share/doc/fpagent/README.md -rw-r--r-- root root d",
	"/usr/share/doc/fpagent/agent.yaml.example -rw-r--r-- root root d",
	"/usr/share/licenses/fpagent/LICENSE -rw-r--r-- root root l",
	"/var/lib/fpagent drwxr-x--- fpagent fpagent ",
}

// TestRPM checks both .rpms with Debian's rpm: name, version and arch; the
// file list with modes, owners and flags (config noreplace, doc, license);
// the config files; the requirements against what the binary links; the
// scripts (what they call, and sh -n).
func TestRPM(t *testing.T) {
	need(t, "rpm")
	a := build(t)
	for arch, rpmArch := range map[string]string{"amd64": "x86_64", "arm64": "aarch64"} {
		p := a.pkgs["rpm/"+arch]
		if got := sh(t, "rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}", p); got != "fpagent 0.1.0 1 "+rpmArch+" Apache-2.0" {
			t.Errorf("%s: %q", p, got)
		}
		if got := lines(sh(t, "rpm", "-qp", "--qf", rpmQF, p)); !equal(got, rpmFiles) {
			t.Errorf("%s files:\n%s\nwant:\n%s", p, strings.Join(got, "\n"), strings.Join(rpmFiles, "\n"))
		}
		if got := lines(sh(t, "rpm", "-qp", "--configfiles", p)); !equal(got, []string{"/etc/fpagent/agent.yaml", "/etc/sysconfig/fpagent"}) {
			t.Errorf("%s config files: %q", p, got)
		}
		_, rpmDeps, err := dependencies(a.bin[arch])
		if err != nil {
			t.Fatal(err)
		}
		var req []string
		for _, r := range lines(sh(t, "rpm", "-qp", "--requires", p)) {
			if !strings.HasPrefix(r, "rpmlib(") {
				req = append(req, r)
			}
		}
		if want := append(rpmDeps, "shadow-utils"); !equal(req, want) {
			t.Errorf("%s requires %q, want %q", p, req, want)
		}
		for _, lib := range []string{"glibc >= 2.", "libstdc++ >= ", "libgcc"} {
			if !strings.Contains(strings.Join(req, "\n"), lib) {
				t.Errorf("%s: requirements lack %s", p, lib)
			}
		}
		for tag, wants := range map[string][]string{
			"PREIN":  {"groupadd -r fpagent", "useradd -r -g fpagent -M -d /var/lib/fpagent -s /sbin/nologin"},
			"POSTIN": {"systemctl --no-reload preset fpagent.service", "[ -d /run/systemd/system ]"},
			"PREUN":  {`[ "$1" -eq 0 ]`, "systemctl --no-reload disable fpagent.service", "systemctl stop fpagent.service"},
			"POSTUN": {`[ "$1" -ge 1 ]`, "systemctl try-restart fpagent.service"},
		} {
			body := sh(t, "rpm", "-qp", "--qf", "%{"+tag+"}", p)
			for _, w := range wants {
				if !strings.Contains(body, w) {
					t.Errorf("%s %%{%s} lacks %q:\n%s", p, tag, w, body)
				}
			}
			if out, err := shErr("sh", "-n", "-c", body); err != nil {
				t.Errorf("%s %%{%s}: sh -n: %v\n%s", p, tag, err, out)
			}
		}
	}
}

// TestRPMScratchRoot installs the amd64 .rpm into an empty root with
// --noscripts (a scratch root has no shell): files land with their owners
// and modes, rpm -V finds nothing changed, an upgrade keeps an edited
// config|noreplace file, and erase saves it as .rpmsave.
func TestRPMScratchRoot(t *testing.T) {
	needRoot(t)
	need(t, "rpm")
	a := build(t)
	root := t.TempDir()
	// What the %pre would have made, so that rpm resolves the owners.
	users := map[string]int{"root": 0, "fpagent": 990}
	writeFile(t, filepath.Join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nfpagent:x:990:990:fpagent daemon:/var/lib/fpagent:/sbin/nologin\n")
	writeFile(t, filepath.Join(root, "etc/group"), "root:x:0:\nfpagent:x:990:\n")
	rpm := func(args ...string) string {
		return sh(t, "rpm", append([]string{"--root", root, "--dbpath", "/var/lib/rpm"}, args...)...)
	}
	rpm("--initdb")
	rpm("-i", "--nodeps", "--noscripts", "--nosignature", a.pkgs["rpm/amd64"])
	if got := rpm("-q", "fpagent"); strings.TrimSpace(got) != "fpagent-0.1.0-1.x86_64" {
		t.Errorf("rpm -q: %q", got)
	}
	for _, w := range []wantFile{
		{"/usr/bin/fpagent", "root", "root", 0o755},
		{"/etc/fpagent/agent.yaml", "root", "fpagent", 0o640},
		{"/etc/sysconfig/fpagent", "root", "root", 0o644},
		{"/usr/lib/systemd/system/fpagent.service", "root", "root", 0o644},
		{"/var/lib/fpagent", "fpagent", "fpagent", os.ModeDir | 0o750},
		{"/usr/share/licenses/fpagent/LICENSE", "root", "root", 0o644},
	} {
		checkFile(t, root, w, users)
	}
	if out, err := shErr("rpm", "--root", root, "--dbpath", "/var/lib/rpm", "-V", "--nodeps", "fpagent"); err != nil || out != "" {
		t.Errorf("rpm -V after install: %v\n%s", err, out)
	}
	cfg := filepath.Join(root, "etc/fpagent/agent.yaml")
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	edited := "# edited by TestRPMScratchRoot\n" + string(orig)
	writeFile(t, cfg, edited)
	rpm("-U", "--nodeps", "--noscripts", "--nosignature", a.rpm2)
	if got := rpm("-q", "fpagent"); strings.TrimSpace(got) != "fpagent-0.2.0-1.x86_64" {
		t.Errorf("rpm -q after upgrade: %q", got)
	}
	if got, _ := os.ReadFile(cfg); string(got) != edited {
		t.Errorf("upgrade replaced the edited agent.yaml")
	}
	rpm("-e", "--nodeps", "--noscripts", "fpagent")
	if got, err := os.ReadFile(cfg + ".rpmsave"); err != nil || string(got) != edited {
		t.Errorf("erase did not keep the edited config as agent.yaml.rpmsave: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/bin/fpagent")); err == nil {
		t.Errorf("erase left /usr/bin/fpagent")
	}
}

// TestArm64UnderQEMU runs the arm64 binary under qemu-user: version, the
// demo, and an agent that takes points over HTTP into DuckDB.
func TestArm64UnderQEMU(t *testing.T) {
	need(t, "qemu-aarch64")
	a := build(t)
	const sysroot = "/usr/aarch64-linux-gnu"
	if _, err := os.Stat(sysroot); err != nil {
		t.Fatalf("%s: %v (apt-get install libc6-arm64-cross libstdc++6-arm64-cross)", sysroot, err)
	}
	qemu := func(args ...string) *exec.Cmd {
		return exec.Command("qemu-aarch64", append([]string{"-L", sysroot, a.bin["arm64"]}, args...)...)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := qemu(args...).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-aarch64 fpagent %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run("version"); !strings.Contains(out, "fpagent 0.1.0") || !strings.Contains(out, "0123456789ab") {
		t.Errorf("version: %q", out)
	}
	run("demo", "-records", "20", "-dir", t.TempDir())

	dir := t.TempDir()
	p := newPorts(t)
	cfg := fmt.Sprintf("data_dir: %s\nstorage:\n  flush_interval: 200ms\nadmin:\n  listen: 127.0.0.1:%d\n"+
		"inputs:\n  http:\n    listen: 127.0.0.1:%d\n  tcp:\n    listen: 127.0.0.1:%d\n  udp:\n    listen: 127.0.0.1:%d\n",
		filepath.Join(dir, "data"), p.admin, p.http, p.tcp, p.udp)
	writeFile(t, filepath.Join(dir, "agent.yaml"), cfg)
	cmd := qemu("-config", filepath.Join(dir, "agent.yaml"))
	cmd.Env = os.Environ()
	agent := startAgent(t, cmd, 2*time.Minute)
	code, body := httpDo(t, "POST", fmt.Sprintf("http://127.0.0.1:%d/api/v2/write?bucket=arm&precision=s", p.http),
		"qemu,board=pi value=42 1767323045\nqemu,board=pi value=43 1767323046\nqemu,board=pi value=44 1767323047\n")
	if code != 204 {
		t.Fatalf("POST /api/v2/write: %d %s", code, body)
	}
	if code, body := httpDo(t, "POST", fmt.Sprintf("http://127.0.0.1:%d/api/v1/flush", p.admin), ""); code != 200 {
		t.Fatalf("POST /api/v1/flush: %d %s", code, body)
	}
	out := run("query", "-addr", fmt.Sprintf("127.0.0.1:%d", p.admin), "-format", "csv",
		"SELECT count(*) AS n, CAST(sum((fields->>'value')::DOUBLE) AS BIGINT) AS s FROM readings WHERE measurement = 'qemu'")
	if !strings.Contains(out, "3,129") {
		t.Errorf("readings in DuckDB under qemu: %q, want 3 points summing to 129", out)
	}
	agent.stop(t, 2*time.Minute)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

func equal(a, b []string) bool {
	a, b = append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(a)
	sort.Strings(b)
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}
