package balance

import (
	"sync"
	"testing"
	"time"
)

// TestPickConcurrent runs every scheduler from several goroutines while loads change
// (run it with -race).
func TestPickConcurrent(t *testing.T) {
	for _, alg := range Algorithms() {
		for _, opts := range []Options{{}, {RandSeed: 1, Seed: 2, MaglevTableSize: 1021}} {
			bs := backends(1, 2, 3, 4, 5, 6, 7, 8)
			p := mustNew(t, alg, bs, opts)
			var wg sync.WaitGroup
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := 0; k < 1000; k++ {
						i := p.Pick(uint64(k * g))
						if i < 0 || i >= len(bs) {
							t.Errorf("%s: Pick = %d", alg, i)
							return
						}
						l := bs[i].Load
						l.Begin()
						l.ObserveAt(time.Duration(i+1)*time.Millisecond, t0.Add(time.Duration(k)*time.Millisecond))
						l.End()
					}
				}()
			}
			wg.Wait()
			for i, b := range bs {
				if b.Load.Active() != 0 {
					t.Errorf("%s: backend %d ends with %d active", alg, i, b.Load.Active())
				}
			}
		}
	}
}
