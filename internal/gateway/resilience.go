package gateway

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

// Health is the shared endpoint health the gateway reads and feeds: internal/health's
// *Overlay. servicePort is model.ServicePort.ID.
type Health interface {
	Healthy(servicePort string, ep netip.AddrPort) bool
	// Eligible is health.Eligible's rule over a port's endpoints: the healthy ones, or
	// all of them in panic mode.
	Eligible(servicePort string, eps []model.Endpoint) []model.Endpoint
	ReportSuccess(servicePort string, ep netip.AddrPort)
	ReportFailure(servicePort string, ep netip.AddrPort, kind health.FailureKind)
}

// canary watches one canary backend's 5xx rate over a sliding window of ten buckets
// and rolls it back (weight 0) when the rate exceeds the threshold with enough
// requests. A rollback lasts until the route's canary weight changes.
type canary struct {
	ca     model.CanaryAnalysis
	weight int32 // the configured weight the rollback applies to

	rolledBack atomic.Bool
	mu         sync.Mutex
	buckets    [10]canaryBucket
}

type canaryBucket struct {
	start       time.Time
	total, errs int
}

// record counts one answer; it returns true when this answer triggered the rollback.
func (c *canary) record(code int, now time.Time) bool {
	if c.rolledBack.Load() {
		return false
	}
	width := c.ca.Window / 10
	if width <= 0 {
		width = time.Second
	}
	slot := now.Truncate(width)
	c.mu.Lock()
	defer c.mu.Unlock()
	b := &c.buckets[int(slot.UnixNano()/int64(width))%len(c.buckets)]
	if !b.start.Equal(slot) {
		*b = canaryBucket{start: slot}
	}
	b.total++
	if code >= 500 {
		b.errs++
	}
	total, errs := 0, 0
	cutoff := now.Add(-c.ca.Window)
	for _, x := range c.buckets {
		if x.start.After(cutoff) {
			total += x.total
			errs += x.errs
		}
	}
	if total >= c.ca.MinRequests && errs*100 > c.ca.MaxErrorPercent*total {
		c.rolledBack.Store(true)
		return true
	}
	return false
}
