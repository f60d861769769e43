package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mountTmpfs mounts a small tmpfs, or skips when this process may not mount.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	return dir
}

// A full disk and a read-only file system fail at start with a message and
// exit 3, and leave nothing that stops the next start once there is room.
func TestFullAndReadOnlyDisk(t *testing.T) {
	mnt := mountTmpfs(t, "2m")
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(filler, os.O_WRONLY, 0)
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()

	cfg := testConfig(t, filepath.Join(mnt, "data"))
	cfg.Storage.MaxWALSize = 64 << 10
	a := newAgent("", cfg, &bytes.Buffer{})
	code, err := a.start()
	a.shutdown()
	if code != exitDataDir || err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("full disk: exit %d, %v", code, err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	a = newAgent("", cfg, &bytes.Buffer{})
	if _, err := a.start(); err != nil {
		t.Fatalf("start once there is room: %v", err)
	}
	if !a.shutdown() {
		t.Fatal("unclean shutdown")
	}

	if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot remount read-only: %v %s", err, out)
	}
	a = newAgent("", testConfig(t, filepath.Join(mnt, "other")), &bytes.Buffer{})
	code, err = a.start()
	a.shutdown()
	if code != exitDataDir || err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("read-only file system: exit %d, %v", code, err)
	}
}
