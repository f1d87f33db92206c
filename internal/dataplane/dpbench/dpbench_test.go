package dpbench

import (
	"testing"
	"time"
)

func TestPredictFullSync(t *testing.T) {
	for _, tc := range []struct {
		name     string
		measured []Result
		n        int
		want     time.Duration
	}{
		{"nothing measured", nil, 1000, 0},
		{"one point: linear", []Result{{N: 100, FullSyncMS: 30}}, 1000, 300 * time.Millisecond},
		{"sublinear growth counts as linear", []Result{{N: 100, FullSyncMS: 32}, {N: 1000, FullSyncMS: 195}}, 5000, 975 * time.Millisecond},
		// iptables on the benchmark VM: 0.24 s at 100, 5.7 s at 1,000 (k ≈ 1.37).
		{"superlinear growth", []Result{{N: 100, FullSyncMS: 242}, {N: 1000, FullSyncMS: 5721}}, 5000, 52 * time.Second},
	} {
		got := predictFullSync(tc.measured, tc.n)
		if d := got - tc.want; d < -tc.want/50 || d > tc.want/50 {
			t.Errorf("%s: predicted %v, want ≈ %v", tc.name, got, tc.want)
		}
	}
}
