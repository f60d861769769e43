package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLint keeps the tree gofmt-, vet- and staticcheck-clean: the quality bar
// is part of the test suite, so CI holds every change to it.
func TestLint(t *testing.T) {
	if testing.Short() {
		t.Skip("lint runs the whole tree through vet and staticcheck")
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run("gofmt", "-l", "."); strings.TrimSpace(out) != "" {
		t.Errorf("gofmt would change:\n%s", out)
	}
	run("go", "vet", "./...")
	run("go", "run", "honnef.co/go/tools/cmd/staticcheck@v0.8.2", "./...")
}
