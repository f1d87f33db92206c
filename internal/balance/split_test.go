package balance

import "testing"

func TestSplit(t *testing.T) {
	var s Split
	weights := []int64{70, 30, 0, -5}
	got := make([]int, len(weights))
	for range 500 {
		i := s.Pick(len(weights), func(i int) int64 { return weights[i] })
		if i < 0 {
			t.Fatal("no choice")
		}
		got[i]++
	}
	if got[2] != 0 || got[3] != 0 || got[0] < 348 || got[0] > 352 {
		t.Fatalf("split %v, want 350/150/0/0 within two", got)
	}
	if i := s.Pick(2, func(int) int64 { return 0 }); i != -1 {
		t.Fatalf("all weights 0: %d, want -1", i)
	}
}
