package version

import (
	"runtime"
	"testing"
)

func TestGet(t *testing.T) {
	old := [3]string{Version, Commit, Date}
	defer func() { Version, Commit, Date = old[0], old[1], old[2] }()
	Version, Commit, Date = "1.2.3", "abc", "2026-01-02T03:04:05Z"
	if got := Get(); got != (Info{"1.2.3", "abc", "2026-01-02T03:04:05Z", runtime.Version()}) {
		t.Fatalf("Get() = %+v", got)
	}
	Version, Commit, Date = "dev", "", ""
	if got := Get(); got.Commit == "" || got.Date == "" || got.Version == "" {
		t.Fatalf("unstamped Get() has empty fields: %+v", got)
	}
}
