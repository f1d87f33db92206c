package balance

import (
	"math"
	"time"
)

// SlowStartWeight is the weight of a backend age into its slow-start window, by
// Envoy's formula: weight × max(minPercent/100, (age/window)^(1/aggression)). It is
// the full weight once age reaches window (or when window is not positive), and at
// least 1. aggression ≤ 0 is read as 1 (a linear ramp); larger values ramp faster
// early on. minPercent is clamped to 0..100. Envoy further floors age at 1 s; weir
// does not, so that short windows (tests, demos) ramp from the minimum.
func SlowStartWeight(weight uint32, age, window time.Duration, aggression float64, minPercent int) uint32 {
	if weight == 0 {
		weight = 1
	}
	if window <= 0 || age >= window {
		return weight
	}
	if aggression <= 0 || math.IsNaN(aggression) {
		aggression = 1
	}
	floor := float64(min(max(minPercent, 0), 100)) / 100
	factor := 0.0
	if age > 0 {
		factor = math.Pow(float64(age)/float64(window), 1/aggression)
	}
	w := float64(weight) * max(floor, factor)
	return uint32(max(1, math.Round(w)))
}
