package main

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// wantFile is a path an installed package must have, with its owner and mode.
type wantFile struct {
	path         string
	owner, group string
	mode         os.FileMode // permission bits and ModeDir
}

var debFiles = []wantFile{
	{"/usr/bin/fpagent", "root", "root", 0o755},
	{"/etc/fpagent/agent.yaml", "root", "fpagent", 0o640},
	{"/etc/default/fpagent", "root", "root", 0o644},
	{"/lib/systemd/system/fpagent.service", "root", "root", 0o644},
	{"/var/lib/fpagent", "fpagent", "fpagent", os.ModeDir | 0o750},
	{"/usr/share/doc/fpagent/copyright", "root", "root", 0o644},
	{"/usr/share/doc/fpagent/changelog.Debian.gz", "root", "root", 0o644},
	{"/usr/share/doc/fpagent/README.md", "root", "root", 0o644},
	{"/usr/share/doc/fpagent/examples/agent.yaml.example", "root", "root", 0o644},
}

// checkFile fails t unless path exists with w's owner, group and mode.
func checkFile(t *testing.T, rootDir string, w wantFile, users map[string]int) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(rootDir, w.path))
	if err != nil {
		t.Errorf("%s: %v", w.path, err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if got := fi.Mode() & (os.ModeDir | os.ModePerm | os.ModeSymlink); got != w.mode {
		t.Errorf("%s: mode %v, want %v", w.path, got, w.mode)
	}
	uid, gid := lookupIDs(t, w.owner, w.group, users)
	if int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s: owner %d:%d, want %s:%s (%d:%d)", w.path, st.Uid, st.Gid, w.owner, w.group, uid, gid)
	}
}

// lookupIDs resolves names on this system, or in users when it is given.
func lookupIDs(t *testing.T, owner, group string, users map[string]int) (int, int) {
	t.Helper()
	if users != nil {
		return users[owner], users[group]
	}
	u, err := user.Lookup(owner)
	if err != nil {
		t.Fatalf("user %s: %v", owner, err)
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatalf("group %s: %v", group, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(g.Gid)
	return uid, gid
}

// TestDebLifecycle installs the amd64 .deb on this machine, runs the
// installed agent as the unit does, upgrades, removes and purges.
func TestDebLifecycle(t *testing.T) {
	needRoot(t)
	need(t, "dpkg", "dpkg-deb", "dpkg-statoverride", "adduser", "deb-systemd-helper", "setpriv", "systemd-analyze")
	a := build(t)
	if out, err := shErr("dpkg-query", "-W", "-f=${Status}", "fpagent"); err == nil && strings.Contains(out, "installed") {
		t.Fatalf("fpagent is already installed here (%s); the test would replace it: dpkg -P fpagent first", out)
	}
	if _, err := user.Lookup("fpagent"); err == nil {
		t.Fatal("a user fpagent exists already; the test checks that the package creates and purges it: userdel fpagent first")
	}
	if _, err := os.Stat("/var/lib/fpagent"); err == nil {
		t.Fatal("/var/lib/fpagent exists already; the test checks that purge removes it: remove it first")
	}
	t.Cleanup(func() {
		if out, err := shErr("dpkg", "-P", "fpagent"); err != nil {
			t.Logf("cleanup: dpkg -P fpagent: %v\n%s", err, out)
		}
	})

	// Install.
	sh(t, "dpkg", "-i", a.pkgs["deb/amd64"])
	for _, w := range debFiles {
		checkFile(t, "", w, nil)
	}
	pw := sh(t, "getent", "passwd", "fpagent")
	f := strings.Split(strings.TrimSpace(pw), ":")
	if uid, _ := strconv.Atoi(f[2]); uid >= 1000 || uid == 0 || f[5] != "/nonexistent" || f[6] != "/usr/sbin/nologin" {
		t.Errorf("fpagent user %q: want a system uid (1-999), home /nonexistent, shell /usr/sbin/nologin", pw)
	}
	if _, err := os.Stat("/nonexistent"); err == nil {
		t.Errorf("/nonexistent exists: the user was given a home")
	}
	conffiles := sh(t, "dpkg-query", "-W", "-f=${Conffiles}", "fpagent")
	for _, c := range []string{"/etc/fpagent/agent.yaml", "/etc/default/fpagent"} {
		if !strings.Contains(conffiles, c+" ") {
			t.Errorf("%s is not a conffile: %q", c, conffiles)
		}
	}
	status := sh(t, "dpkg-query", "-W", "-f=${Depends}", "fpagent")
	if !regexp.MustCompile(`libc6 \(>= 2\.\d+\)`).MatchString(status) || !strings.Contains(status, "libstdc++6") || !strings.Contains(status, "libgcc-s1") {
		t.Errorf("Depends: %s, want libc6, libstdc++6 and libgcc-s1", status)
	}
	// Enabled for the next boot, although no systemd runs here.
	const wants = "/etc/systemd/system/multi-user.target.wants/fpagent.service"
	if dst, err := os.Readlink(wants); err != nil || dst != "/lib/systemd/system/fpagent.service" {
		t.Errorf("install did not enable the unit: readlink %s = %q, %v", wants, dst, err)
	}
	pristine, err := os.ReadFile(filepath.Join(a.staged, "agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	installed, err := os.ReadFile("/etc/fpagent/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(installed) != string(pristine) || !strings.Contains(string(installed), "\ndata_dir: /var/lib/fpagent\n") {
		t.Errorf("/etc/fpagent/agent.yaml is not the production config with data_dir /var/lib/fpagent")
	}
	if out, err := shErr("/usr/bin/fpagent", "check", "-config", "/etc/fpagent/agent.yaml"); err != nil {
		t.Errorf("fpagent check on the installed config: %v\n%s", err, out)
	}

	checkUnit(t, "/lib/systemd/system/fpagent.service")

	// Edit the conffile as an admin would: other ports and a marker.
	p := newPorts(t)
	const marker = "# edited by TestDebLifecycle\n"
	edited := marker + p.rewrite(t, string(installed))
	if err := os.WriteFile("/etc/fpagent/agent.yaml", []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}

	// Run as the unit does, ingest a point, read it back, stop.
	agent := startAsUnit(t)
	key := "pkgtest,db=packaging,host=ci"
	code, body := httpDo(t, "POST", fmt.Sprintf("http://127.0.0.1:%d/api/v2/write?bucket=packaging&precision=s", p.http),
		"pkgtest,host=ci value=42 1767323045\n")
	if code != 204 {
		t.Fatalf("POST /api/v2/write: %d %s", code, body)
	}
	readBack(t, p, key)
	agent.stop(t, 90*time.Second)
	walkOwned(t, "/var/lib/fpagent")

	// Upgrade: the edited conffile, the statoverride and the data stay.
	sh(t, "dpkg", "-i", a.debV2)
	if got, _ := os.ReadFile("/etc/fpagent/agent.yaml"); string(got) != edited {
		t.Errorf("upgrade replaced the edited /etc/fpagent/agent.yaml")
	}
	if _, err := os.Stat("/etc/fpagent/agent.yaml.dpkg-new"); err == nil {
		t.Errorf("upgrade left agent.yaml.dpkg-new although the packaged config did not change")
	}
	checkFile(t, "", wantFile{"/etc/fpagent/agent.yaml", "root", "fpagent", 0o640}, nil)
	if out := sh(t, "/usr/bin/fpagent", "version"); !strings.Contains(out, "0.2.0") {
		t.Errorf("after the upgrade fpagent version says %q, want 0.2.0", out)
	}
	agent = startAsUnit(t)
	readBack(t, p, key)
	out := sh(t, "/usr/bin/fpagent", "query", "-config", "/etc/fpagent/agent.yaml", "-format", "csv",
		"SELECT count(*) AS n FROM readings WHERE measurement = 'pkgtest'")
	if !strings.Contains(out, "\n1") {
		t.Errorf("readings after the upgrade: %q, want the 1 point written before it", out)
	}
	agent.stop(t, 90*time.Second)

	// Remove keeps config, data and user; purge removes them.
	sh(t, "dpkg", "-r", "fpagent")
	for _, path := range []string{"/etc/fpagent/agent.yaml", "/etc/default/fpagent", "/var/lib/fpagent/fpagent.duckdb"} {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("dpkg -r removed %s: %v", path, err)
		}
	}
	if _, err := os.Stat("/usr/bin/fpagent"); err == nil {
		t.Errorf("dpkg -r left /usr/bin/fpagent")
	}
	if _, err := user.Lookup("fpagent"); err != nil {
		t.Errorf("dpkg -r removed the user: %v", err)
	}
	sh(t, "dpkg", "-P", "fpagent")
	for _, path := range []string{"/etc/fpagent", "/etc/default/fpagent", "/var/lib/fpagent", wants} {
		if _, err := os.Lstat(path); err == nil {
			t.Errorf("dpkg -P left %s", path)
		}
	}
	if _, err := user.Lookup("fpagent"); err == nil {
		t.Errorf("dpkg -P left the user fpagent")
	}
	if _, err := user.LookupGroup("fpagent"); err == nil {
		t.Errorf("dpkg -P left the group fpagent")
	}
	if out, err := shErr("dpkg-statoverride", "--list", "/etc/fpagent/agent.yaml"); err == nil {
		t.Errorf("dpkg -P left a statoverride: %s", out)
	}
}

// startAsUnit starts the installed binary the way fpagent.service does: as
// user fpagent without capabilities or new privileges, in /var/lib/fpagent,
// with umask 0027, the EnvironmentFile's variables and $FPAGENT_OPTS, and a
// notify socket.
func startAsUnit(t *testing.T) *agentProc {
	t.Helper()
	env := readEnvFile(t, "/etc/default/fpagent")
	args := []string{"-c", `umask 0027 && exec setpriv --reuid=fpagent --regid=fpagent --init-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"`,
		"sh", "/usr/bin/fpagent", "-config", "/etc/fpagent/agent.yaml"}
	args = append(args, strings.Fields(env["FPAGENT_OPTS"])...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Dir = "/var/lib/fpagent"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return startAgent(t, cmd, 60*time.Second)
}

// readEnvFile reads VAR=value lines as systemd's EnvironmentFile= does (the
// subset the packaged file uses).
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not VAR=value", path, line)
		}
		env[k] = strings.Trim(v, `"`)
	}
	return env
}

// readBack reads the record of key through the admin API.
func readBack(t *testing.T, p ports, key string) {
	t.Helper()
	code, body := httpDo(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/api/v1/records?key=%s", p.admin, url.QueryEscape(key)), "")
	if code != 200 || !strings.Contains(body, `"value":42`) {
		t.Fatalf("GET record %s: %d %s", key, code, body)
	}
}

// walkOwned fails t when something under dir is not the fpagent user's or
// is readable by others (the unit's UMask=0027).
func walkOwned(t *testing.T, dir string) {
	t.Helper()
	uid, _ := lookupIDs(t, "fpagent", "fpagent", nil)
	n := 0
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		n++
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
			t.Errorf("%s: owner uid %d, want fpagent (%d)", path, st.Uid, uid)
		}
		if fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s: mode %v is open to others", path, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Errorf("%s holds %d entries after a run, want the WAL and the DuckDB file", dir, n)
	}
}
