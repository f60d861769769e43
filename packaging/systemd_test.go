package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// smokeScript runs inside a container booted with systemd as PID 1. It
// prints "CHECK <name> ok" or "CHECK <name> FAIL <detail>" lines and
// "SMOKE DONE" at the end.
const smokeScript = `
check() { name=$1; shift; if "$@" >/tmp/check.out 2>&1; then echo "CHECK $name ok"; else echo "CHECK $name FAIL: $(tr '\n' ' ' </tmp/check.out)"; fi; }
prop() { systemctl show -P "$1" fpagent; }
# The image may forbid service starts (a Docker-style policy-rc.d): this
# test is about what the maintainer scripts do when they are allowed.
rm -f /usr/sbin/policy-rc.d

dpkg -i /smoke/v1.deb
check started-by-postinst test "$(prop ActiveState)" = active
check enabled test "$(systemctl is-enabled fpagent)" = enabled
pid1=$(prop MainPID)
check hardened-seccomp grep -q '^Seccomp:[[:space:]]*2' /proc/$pid1/status
check hardened-nonewprivs grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$pid1/status
check hardened-no-caps grep -q '^CapBnd:[[:space:]]*0000000000000000' /proc/$pid1/status
check runs-as-fpagent test "$(stat -c %U /proc/$pid1)" = fpagent
check write test "$(curl -s -o /dev/null -w '%{http_code}' --data-binary 'smoke,host=ns value=42 1767323045' 'http://127.0.0.1:8186/api/v2/write?bucket=x&precision=s')" = 204
check read-back sh -c "curl -sf 'http://127.0.0.1:8187/api/v1/records?key=smoke,db=x,host=ns' | grep -q '\"value\":42'"
check flush curl -sf -X POST http://127.0.0.1:8187/api/v1/flush
check query sh -c "fpagent query -config /etc/fpagent/agent.yaml -format csv 'SELECT count(*) AS n FROM readings' | grep -qx 1"
check stats curl -sf http://127.0.0.1:8187/stats
systemctl reload fpagent; sleep 1
check reload-keeps-running test "$(prop ActiveState) $(prop MainPID)" = "active $pid1"
check reload-logged sh -c "journalctl -u fpagent --no-pager | grep -q 'SIGHUP: config reloaded'"

dpkg -i /smoke/v2.deb
check upgrade-restarted sh -c "test \"$(prop ActiveState)\" = active && test \"$(prop MainPID)\" != $pid1"
check upgrade-new-version sh -c "journalctl -u fpagent --no-pager | grep -q 'starting fpagent.*version=0.2.0'"
check upgrade-keeps-data sh -c "curl -sf 'http://127.0.0.1:8187/api/v1/records?key=smoke,db=x,host=ns' | grep -q '\"value\":42'"

dpkg -r fpagent
check remove-stops test "$(prop ActiveState)" = inactive
check clean-exit test "$(prop ExecMainStatus)" = 0
check no-errors-logged sh -c "! journalctl -u fpagent --no-pager | grep -E 'level=ERROR|status=(31|SYS)|code=killed'"
check no-restarts test "$(prop NRestarts)" = 0
dpkg -P fpagent
check purge-removes-user sh -c "! getent passwd fpagent"

# The .rpm's scriptlets under the same systemd (Debian's rpm, --nodeps:
# this system's libraries are not in an rpm database).
rpm --initdb
rpmi() { rpm --nodeps --force-debian "$@"; }
# Fedora's and RHEL's presets leave a new service disabled; say so here.
mkdir -p /etc/systemd/system-preset
echo 'disable fpagent.service' >/etc/systemd/system-preset/50-fpagent-test.preset
rpmi -i /smoke/v1.rpm
check rpm-pre-creates-user sh -c "getent passwd fpagent | grep -q ':/var/lib/fpagent:/sbin/nologin$'"
check rpm-post-follows-preset test "$(systemctl is-enabled fpagent)" = disabled
check rpm-post-does-not-start test "$(prop ActiveState)" = inactive
systemctl enable --now fpagent
check rpm-enable-now test "$(systemctl is-enabled fpagent) $(prop ActiveState)" = "enabled active"
pid1=$(prop MainPID)
check rpm-write test "$(curl -s -o /dev/null -w '%{http_code}' --data-binary 'smoke,host=rpm value=42 1767323045' 'http://127.0.0.1:8186/api/v2/write?bucket=x&precision=s')" = 204
rpmi -U /smoke/v2.rpm
check rpm-postun-restarts sh -c "test \"$(prop ActiveState)\" = active && test \"$(prop MainPID)\" != $pid1"
check rpm-upgrade-keeps-data sh -c "curl -sf 'http://127.0.0.1:8187/api/v1/records?key=smoke,db=x,host=rpm' | grep -q '\"value\":42'"
rpmi -e fpagent
check rpm-preun-stops test "$(prop ActiveState)" = inactive
check rpm-preun-disables sh -c "! systemctl is-enabled fpagent"
check rpm-erase-keeps-data test -s /var/lib/fpagent/fpagent.duckdb
check rpm-erase-keeps-user getent passwd fpagent
journalctl -u fpagent --no-pager -o short-monotonic | tail -60
echo SMOKE DONE
`

const smokeUnit = `[Unit]
Description=fpagent packaging test under systemd
After=sysinit.target

[Service]
Type=oneshot
ExecStart=/bin/sh /smoke/run.sh
StandardOutput=file:/smoke-out/log
StandardError=inherit
ExecStopPost=/bin/systemctl --no-block poweroff
`

// bootScript boots the host's own system, on a throwaway overlay, in a
// container with systemd as PID 1, a private network and the smoke unit as
// its only goal. It runs in a private mount namespace (unshare -m).
const bootScript = `set -e
ovl=$1
mount -t tmpfs tmpfs /run
mount -t tmpfs -o size=4g tmpfs "$ovl"
mkdir -p "$ovl/upper" "$ovl/work" "$ovl/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$ovl/upper,workdir=$ovl/work" "$ovl/merged"
mkdir -p "$ovl/merged/smoke" "$ovl/merged/smoke-out"
cp "$SMOKE/fpagent-smoke.service" "$ovl/merged/etc/systemd/system/"
tr -d '-' </proc/sys/kernel/random/uuid >"$ovl/merged/etc/machine-id"
exec systemd-nspawn --quiet --link-journal=no --register=no --keep-unit \
	--directory="$ovl/merged" --private-network --machine=fpagent-test \
	--bind-ro="$SMOKE:/smoke" --bind="$SMOKE_OUT:/smoke-out" \
	--boot -- --unit=fpagent-smoke.service
`

// TestUnderSystemd installs the .deb in a container that runs systemd: the
// postinst starts the hardened unit (Type=notify, seccomp, no capabilities,
// ProcSubset=pid, MemoryDenyWriteExecute), a point goes in and comes back,
// reload keeps the process, an upgrade restarts it and keeps the data, and
// removal stops it cleanly. Then the same for the .rpm's scriptlets: the
// user, the preset, a restart on upgrade, stop and disable on erase.
func TestUnderSystemd(t *testing.T) {
	needRoot(t)
	need(t, "systemd-nspawn", "unshare", "curl")
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		t.Skip("the host has no systemd to boot in a container")
	}
	a := build(t)
	smoke, out, ovl := t.TempDir(), t.TempDir(), t.TempDir()
	for name, data := range map[string]string{"run.sh": smokeScript, "fpagent-smoke.service": smokeUnit, "boot.sh": bootScript} {
		writeFile(t, filepath.Join(smoke, name), data)
	}
	for name, src := range map[string]string{"v1.deb": a.pkgs["deb/amd64"], "v2.deb": a.debV2,
		"v1.rpm": a.pkgs["rpm/amd64"], "v2.rpm": a.rpm2} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(smoke, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-m", "--propagation", "private", "sh", filepath.Join(smoke, "boot.sh"), ovl)
	cmd.Env = append(os.Environ(), "SMOKE="+smoke, "SMOKE_OUT="+out)
	start := time.Now()
	console, err := cmd.CombinedOutput()
	log, _ := os.ReadFile(filepath.Join(out, "log"))
	if err != nil || !strings.Contains(string(log), "SMOKE DONE") {
		t.Fatalf("container run: %v\nconsole (tail):\n%s\nsmoke log:\n%s", err, tail(string(console), 3000), log)
	}
	t.Logf("container booted, tested and powered off in %s", time.Since(start).Round(time.Second))
	checks := 0
	for _, line := range strings.Split(string(log), "\n") {
		if !strings.HasPrefix(line, "CHECK ") {
			continue
		}
		checks++
		t.Log(line)
		if !strings.HasSuffix(line, " ok") {
			t.Error(line)
		}
	}
	if checks < 30 || t.Failed() {
		t.Fatalf("%d checks ran; smoke log:\n%s", checks, log)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
