//go:build linux

package storage

import (
	"runtime"
	"syscall"
	"testing"
)

// threadNice is the calling thread's nice value (the kernel answers 20 - nice).
func threadNice() (int, error) {
	p, err := syscall.Getpriority(syscall.PRIO_PROCESS, syscall.Gettid())
	return 20 - p, err
}

func TestLowerPriority(t *testing.T) {
	for _, nice := range []int{0, 5, 19} {
		type result struct {
			before, after int
			err           error
		}
		done := make(chan result, 1)
		go func() {
			runtime.LockOSThread() // before and after on one thread; lowerPriority locks it too
			var r result
			if r.before, r.err = threadNice(); r.err == nil {
				if r.err = lowerPriority(nice); r.err == nil {
					r.after, r.err = threadNice()
				}
			}
			done <- r
		}()
		r := <-done
		if r.err != nil {
			t.Fatalf("lowerPriority(%d): %v", nice, r.err)
		}
		want := nice
		if nice == 0 {
			want = r.before // 0 leaves the thread alone
		} else if r.before > nice {
			t.Skipf("the test runs at nice %d already, above %d", r.before, nice)
		}
		if r.after != want {
			t.Errorf("lowerPriority(%d): the thread's nice value went from %d to %d, want %d", nice, r.before, r.after, want)
		}
	}
}
