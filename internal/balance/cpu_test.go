//go:build linux

package balance

import (
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestCPUPerPick measures Pick by the thread's CPU time rather than wall time, which
// on a busy shared machine counts other processes' turns on the CPU. It runs only
// with WEIR_BALANCE_CPU=1:
//
//	WEIR_BALANCE_CPU=1 go test -run TestCPUPerPick -v ./internal/balance
func TestCPUPerPick(t *testing.T) {
	if os.Getenv("WEIR_BALANCE_CPU") == "" {
		t.Skip("set WEIR_BALANCE_CPU=1 to measure")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, alg := range Algorithms() {
		for _, weighted := range []bool{false, true} {
			p := mustNew(t, alg, benchBackends(100, weighted), Options{})
			const n = 3000000
			best := time.Hour
			for r := 0; r < 5; r++ {
				start := threadCPU()
				k := uint64(0)
				for i := 0; i < n; i++ {
					k += golden
					p.Pick(k)
				}
				best = min(best, threadCPU()-start)
			}
			t.Logf("%-25s n=100 weighted=%-5v %6.1f ns/pick (thread CPU time, best of 5 × %d)", alg, weighted, float64(best)/n, n)
		}
	}
}
