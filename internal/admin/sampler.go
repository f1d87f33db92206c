package admin

import (
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"weir.dev/weir/internal/health"
)

// Sampling of the counters the dashboard shows.
const (
	// historyLen is how many intervals a sparkline shows.
	historyLen = 30
	// latencyWindow is how many intervals the latency percentiles cover.
	latencyWindow = 5
)

// Kinds of entity the sampler keeps rates for.
const (
	kindService = "service" // a Service, "namespace/name": L4 connections and L7 requests to it
	kindRoute   = "route"   // a route rule, "namespace/name/rule": L7 requests
	kindDNS     = "dns"     // cluster DNS: queries
	// kindEndpoint is one endpoint of a service port, "namespace/name:port ip:port":
	// the connections or requests the data planes reported to the health overlay.
	kindEndpoint = "endpoint"
)

// endpointName names an endpoint of a service port for the sampler.
func endpointName(k health.Key) string { return k.ServicePort + " " + k.Endpoint.String() }

// entityKey names one entity.
type entityKey struct{ kind, name string }

// counts are an entity's cumulative counters at one sample.
type counts struct {
	events, errors float64
	buckets        []bucket // cumulative latency histogram, when the entity has one
}

type bucket struct{ le, count float64 }

// history is an entity's recent rates.
type history struct {
	rate, errRate []float64  // per second, oldest first, at most historyLen
	hist          [][]bucket // cumulative histograms of the last latencyWindow+1 samples
	prev          counts
}

// sampler reads weir's own Prometheus counters every interval and keeps a short
// history of rates per Service, route rule and for DNS: what the dashboard draws.
type sampler struct {
	g        prometheus.Gatherer
	traffic  func(fn func(k health.Key, successes, failures uint64))
	interval time.Duration

	mu      sync.Mutex
	last    time.Time
	entries map[entityKey]*history
}

func newSampler(g prometheus.Gatherer, traffic func(func(health.Key, uint64, uint64)), interval time.Duration) *sampler {
	return &sampler{g: g, traffic: traffic, interval: interval, entries: map[entityKey]*history{}}
}

// sample gathers the counters once and appends a rate to every entity's history.
func (s *sampler) sample(now time.Time) error {
	families, err := s.g.Gather()
	if err != nil && len(families) == 0 {
		return err
	}
	cur := map[entityKey]*counts{}
	get := func(kind, name string) *counts {
		k := entityKey{kind, name}
		c := cur[k]
		if c == nil {
			c = &counts{}
			cur[k] = c
		}
		return c
	}
	for _, mf := range families {
		switch mf.GetName() {
		case "weir_l4_connections_total":
			for _, m := range mf.Metric {
				get(kindService, serviceOfPort(label(m, "service_port"))).events += m.GetCounter().GetValue()
			}
		case "weir_l4_connect_errors_total", "weir_l4_refused_total":
			for _, m := range mf.Metric {
				get(kindService, serviceOfPort(label(m, "service_port"))).errors += m.GetCounter().GetValue()
			}
		case "weir_gateway_requests_total":
			for _, m := range mf.Metric {
				v := m.GetCounter().GetValue()
				is5xx := label(m, "code") == "5xx"
				for _, c := range []*counts{get(kindRoute, label(m, "route")), get(kindService, serviceOfPort(label(m, "backend")))} {
					c.events += v
					if is5xx {
						c.errors += v
					}
				}
			}
		case "weir_gateway_request_duration_seconds":
			for _, m := range mf.Metric {
				h := m.GetHistogram()
				addBuckets(get(kindRoute, label(m, "route")), h)
				addBuckets(get(kindService, serviceOfPort(label(m, "backend"))), h)
			}
		case "weir_dns_requests_total":
			for _, m := range mf.Metric {
				v := m.GetCounter().GetValue()
				c := get(kindDNS, "")
				c.events += v
				if rc := label(m, "rcode"); rc == "SERVFAIL" || rc == "REFUSED" {
					c.errors += v
				}
			}
		}
	}
	if s.traffic != nil {
		s.traffic(func(k health.Key, ok, bad uint64) {
			c := get(kindEndpoint, endpointName(k))
			c.events, c.errors = float64(ok+bad), float64(bad)
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dt := now.Sub(s.last).Seconds()
	first := s.last.IsZero()
	s.last = now
	for k, c := range cur {
		h := s.entries[k]
		if h == nil {
			h = &history{}
			s.entries[k] = h
		}
		if !first && dt > 0 {
			h.rate = push(h.rate, rate(h.prev.events, c.events, dt))
			h.errRate = push(h.errRate, rate(h.prev.errors, c.errors, dt))
		}
		h.prev = *c
		if c.buckets != nil {
			h.hist = append(h.hist, c.buckets)
			if len(h.hist) > latencyWindow+1 {
				h.hist = h.hist[len(h.hist)-latencyWindow-1:]
			}
		}
	}
	for k := range s.entries {
		if cur[k] == nil {
			delete(s.entries, k) // the entity is gone
		}
	}
	return nil
}

// stats is what the summary shows of one entity.
type stats struct {
	// Rate is events (connections, requests, queries) per second over the last
	// intervals, oldest first; omitted when all zero.
	Rate []float64 `json:"rate,omitempty"`
	// ErrorRate is the share of the last interval's events that failed, 0 to 1.
	ErrorRate float64 `json:"errorRate,omitempty"`
	// P50 and P99 are latency percentiles in seconds over the last intervals.
	P50 float64 `json:"p50,omitempty"`
	P99 float64 `json:"p99,omitempty"`
}

// stats returns an entity's stats, or nil when it has none.
func (s *sampler) stats(kind, name string) *stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.entries[entityKey{kind, name}]
	if h == nil {
		return nil
	}
	var st stats
	for _, r := range h.rate {
		if r != 0 {
			st.Rate = roundAll(h.rate)
			break
		}
	}
	if n := len(h.rate); n > 0 && h.rate[n-1] > 0 {
		st.ErrorRate = round(min(h.errRate[n-1]/h.rate[n-1], 1))
	}
	if len(h.hist) >= 2 {
		d := delta(h.hist[0], h.hist[len(h.hist)-1])
		st.P50, st.P99 = round(quantile(0.5, d)), round(quantile(0.99, d))
	}
	if st.Rate == nil && st.P50 == 0 {
		return nil
	}
	return &st
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// serviceOfPort is the Service of a service port ID ("namespace/name:port").
func serviceOfPort(id string) string {
	svc, _, _ := strings.Cut(id, ":")
	return svc
}

func addBuckets(c *counts, h *dto.Histogram) {
	if c.buckets == nil {
		for _, b := range h.Bucket {
			c.buckets = append(c.buckets, bucket{le: b.GetUpperBound()})
		}
		c.buckets = append(c.buckets, bucket{le: math.Inf(1)})
	}
	if len(c.buckets) != len(h.Bucket)+1 {
		return // different bucket layouts are not summed
	}
	for i, b := range h.Bucket {
		c.buckets[i].count += float64(b.GetCumulativeCount())
	}
	c.buckets[len(h.Bucket)].count += float64(h.GetSampleCount())
}

func push(xs []float64, x float64) []float64 {
	xs = append(xs, x)
	if len(xs) > historyLen {
		xs = xs[len(xs)-historyLen:]
	}
	return xs
}

// rate is a counter's increase per second; a counter that went down was reset.
func rate(prev, cur, dt float64) float64 {
	if cur < prev {
		return cur / dt
	}
	return (cur - prev) / dt
}

// delta is the histogram of the observations between two cumulative histograms.
func delta(old, cur []bucket) []bucket {
	if len(old) != len(cur) {
		return cur
	}
	out := make([]bucket, len(cur))
	for i := range cur {
		out[i] = bucket{le: cur[i].le, count: cur[i].count - old[i].count}
	}
	return out
}

// quantile interpolates the q-quantile within its bucket, as PromQL's
// histogram_quantile does; 0 without observations.
func quantile(q float64, bs []bucket) float64 {
	if len(bs) == 0 {
		return 0
	}
	total := bs[len(bs)-1].count
	if total <= 0 {
		return 0
	}
	rank := q * total
	i := sort.Search(len(bs), func(i int) bool { return bs[i].count >= rank })
	if i >= len(bs)-1 {
		if len(bs) >= 2 {
			return bs[len(bs)-2].le // in the +Inf bucket: the highest finite bound
		}
		return 0
	}
	lo, loCount := 0.0, 0.0
	if i > 0 {
		lo, loCount = bs[i-1].le, bs[i-1].count
	}
	inBucket := bs[i].count - loCount
	if inBucket <= 0 {
		return bs[i].le
	}
	return lo + (bs[i].le-lo)*(rank-loCount)/inBucket
}

// round keeps three significant digits: enough for a dashboard, short in JSON.
func round(x float64) float64 {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	p := math.Pow(10, 2-math.Floor(math.Log10(math.Abs(x))))
	return math.Round(x*p) / p
}

func roundAll(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = round(x)
	}
	return out
}
