package balance

import (
	"testing"
	"time"
)

func TestSlowStartWeight(t *testing.T) {
	const w = time.Minute
	tests := []struct {
		name       string
		weight     uint32
		age        time.Duration
		aggression float64
		minPercent int
		want       uint32
	}{
		{"new endpoint gets the minimum", 100, 0, 1, 10, 10},
		{"linear halfway", 100, w / 2, 1, 10, 50},
		{"linear below minimum", 100, w / 20, 1, 10, 10},
		{"aggression 2 ramps faster early", 100, w / 4, 2, 10, 50}, // (1/4)^(1/2)
		{"aggression 0.5 ramps slower", 100, w / 2, 0.5, 10, 25},   // (1/2)^2
		{"done", 100, w, 1, 10, 100},
		{"long done", 100, time.Hour, 1, 10, 100},
		{"no window", 100, 0, 1, 10, 100},
		{"never below 1", 3, 0, 1, 0, 1},
		{"weight 0 reads as 1", 0, w / 2, 1, 10, 1},
		{"aggression 0 reads as 1", 100, w / 2, 0, 10, 50},
		{"min above 100 clamps", 100, 0, 1, 150, 100},
		{"negative age", 100, -time.Second, 1, 20, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			window := w
			if tt.name == "no window" {
				window = 0
			}
			if got := SlowStartWeight(tt.weight, tt.age, window, tt.aggression, tt.minPercent); got != tt.want {
				t.Errorf("SlowStartWeight(%d, %v, %v, %v, %d) = %d, want %d", tt.weight, tt.age, window, tt.aggression, tt.minPercent, got, tt.want)
			}
		})
	}
}
