package manifest

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
)

// Algorithms lists the schedulers a TrafficPolicy may name.
var algorithms = []string{
	string(weirv1alpha1.RoundRobin), string(weirv1alpha1.WeightedRoundRobin),
	string(weirv1alpha1.LeastConnections), string(weirv1alpha1.WeightedLeastConnections),
	string(weirv1alpha1.Random), string(weirv1alpha1.PowerOfTwoChoices), string(weirv1alpha1.PeakEWMA),
	string(weirv1alpha1.SourceHash), string(weirv1alpha1.DestinationHash), string(weirv1alpha1.Maglev),
}

// retryConditions are the values retry.retryOn accepts.
var retryConditions = []string{"connect-failure", "refused-stream", "reset", "5xx", "502", "503", "504"}

// policyTargets are the kinds a TrafficPolicy attaches to, with their groups.
var policyTargets = map[string]string{
	"Service":   "",
	"HTTPRoute": gatewayv1.GroupName,
	"GRPCRoute": gatewayv1.GroupName,
}

func (c checker) trafficPolicy(p *weirv1alpha1.TrafficPolicy) {
	c.metadata(p, validation.IsDNS1123Subdomain)
	spec := &p.Spec
	switch n := len(spec.TargetRefs); {
	case n == 0:
		c.errorf("spec.targetRefs", "at least one target is required")
	case n > maxPolicyTarget:
		c.errorf("spec.targetRefs", "%d targets is more than the %d allowed", n, maxPolicyTarget)
	}
	for i, ref := range spec.TargetRefs {
		path := fmt.Sprintf("spec.targetRefs[%d]", i)
		group, ok := policyTargets[string(ref.Kind)]
		switch {
		case !ok:
			c.errorf(path+".kind", "%q is not a kind a TrafficPolicy can target (Service, HTTPRoute, GRPCRoute)", ref.Kind)
		case string(ref.Group) != group:
			c.errorf(path+".group", "%q is not the group of %s (want %q)", ref.Group, ref.Kind, group)
		}
		if ref.Name == "" {
			c.errorf(path+".name", "is required")
		}
	}
	if lb := spec.LoadBalancer; lb != nil {
		if lb.Algorithm != "" {
			c.oneOf("spec.loadBalancer.algorithm", string(lb.Algorithm), algorithms...)
		}
		if h := lb.HashOn; h != nil {
			set := 0
			for _, b := range []bool{h.Header != "", h.Cookie != "", h.QueryParam != "", h.SourceIP} {
				if b {
					set++
				}
			}
			if set > 1 {
				c.errorf("spec.loadBalancer.hashOn", "set at most one of header, cookie, queryParam and sourceIP")
			}
			if h.Header != "" {
				c.check("spec.loadBalancer.hashOn.header", h.Header, validation.IsHTTPHeaderName(h.Header))
			}
		}
		if m := lb.Maglev; m != nil && m.TableSize != 0 {
			switch {
			case m.TableSize < minMaglevTable || m.TableSize > maxMaglevTable:
				c.errorf("spec.loadBalancer.maglev.tableSize", "%d is not in %d..%d", m.TableSize, minMaglevTable, maxMaglevTable)
			case !isPrime(m.TableSize):
				c.errorf("spec.loadBalancer.maglev.tableSize", "%d is not prime (try 16381, 32749 or 65521)", m.TableSize)
			}
		}
	}
	if h := spec.HealthCheck; h != nil {
		if h.Type != "" {
			c.oneOf("spec.healthCheck.type", h.Type, "TCP", "HTTP")
		}
		c.positive("spec.healthCheck.interval", h.Interval)
		c.positive("spec.healthCheck.timeout", h.Timeout)
		c.nonNegative("spec.healthCheck.healthyThreshold", h.HealthyThreshold)
		c.nonNegative("spec.healthCheck.unhealthyThreshold", h.UnhealthyThreshold)
		if h.HTTP != nil {
			if h.HTTP.Path != "" && !strings.HasPrefix(h.HTTP.Path, "/") {
				c.errorf("spec.healthCheck.http.path", "%q must start with /", h.HTTP.Path)
			}
			for i, s := range h.HTTP.ExpectedStatuses {
				if s < 100 || s > 599 {
					c.errorf(fmt.Sprintf("spec.healthCheck.http.expectedStatuses[%d]", i), "%d is not in 100..599", s)
				}
			}
		}
	}
	if o := spec.Outlier; o != nil {
		c.nonNegative("spec.outlierDetection.consecutiveFailures", o.ConsecutiveFailures)
		c.nonNegative("spec.outlierDetection.consecutiveGatewayErrors", o.ConsecutiveGatewayErrors)
		c.positive("spec.outlierDetection.interval", o.Interval)
		c.positive("spec.outlierDetection.baseEjectionTime", o.BaseEjectionTime)
		c.percent("spec.outlierDetection.maxEjectionPercent", o.MaxEjectionPercent)
		if o.PanicThresholdPercent != nil {
			c.percent("spec.outlierDetection.panicThresholdPercent", *o.PanicThresholdPercent)
		}
	}
	if t := spec.Timeouts; t != nil {
		c.positive("spec.timeouts.connect", t.Connect)
		c.positive("spec.timeouts.idle", t.Idle)
		c.positive("spec.timeouts.request", t.Request)
		c.positive("spec.timeouts.response", t.Response)
	}
	if r := spec.Retry; r != nil {
		if r.Attempts != nil {
			c.nonNegative("spec.retry.attempts", *r.Attempts)
		}
		c.positive("spec.retry.perTryTimeout", r.PerTryTimeout)
		c.positive("spec.retry.backoffBase", r.BackoffBase)
		for i, on := range r.RetryOn {
			c.oneOf(fmt.Sprintf("spec.retry.retryOn[%d]", i), on, retryConditions...)
		}
		if r.BudgetPercent != nil {
			c.percent("spec.retry.budgetPercent", *r.BudgetPercent)
		}
		if r.MinRetryConcurrency != nil {
			c.nonNegative("spec.retry.minRetryConcurrency", *r.MinRetryConcurrency)
		}
	}
	if cb := spec.CircuitBreaker; cb != nil {
		limits := []struct {
			name string
			v    *int32
		}{{"maxConnections", cb.MaxConnections}, {"maxPendingRequests", cb.MaxPendingRequests}, {"maxRequests", cb.MaxRequests}}
		for _, l := range limits {
			if l.v != nil && *l.v < 1 {
				c.errorf("spec.circuitBreaker."+l.name, "%d must be at least 1", *l.v)
			}
		}
	}
	if s := spec.SlowStart; s != nil {
		if s.Window.Duration <= 0 {
			c.errorf("spec.slowStart.window", "%s must be positive", s.Window.Duration)
		}
		if s.Aggression != "" {
			if a, err := strconv.ParseFloat(s.Aggression, 64); err != nil || a <= 0 {
				c.errorf("spec.slowStart.aggression", "%q is not a positive number", s.Aggression)
			}
		}
		if s.MinWeightPercent != nil {
			c.percent("spec.slowStart.minWeightPercent", *s.MinWeightPercent)
		}
	}
	if rl := spec.RateLimit; rl != nil {
		if rl.Requests < 1 {
			c.errorf("spec.rateLimit.requests", "%d must be at least 1", rl.Requests)
		}
		c.positive("spec.rateLimit.period", rl.Period)
		c.nonNegative("spec.rateLimit.burst", rl.Burst)
		switch key, header, isHeader := rl.Key, "", false; {
		case key == "" || key == "route" || key == "sourceIP":
		default:
			if header, isHeader = strings.CutPrefix(key, "header:"); isHeader && header != "" {
				c.check("spec.rateLimit.key", key, validation.IsHTTPHeaderName(header))
			} else {
				c.errorf("spec.rateLimit.key", `%q is not one of "route", "sourceIP", "header:<Name>"`, key)
			}
		}
	}
	if ca := spec.CanaryAnalysis; ca != nil {
		if ca.Backend == "" {
			c.errorf("spec.canaryAnalysis.backend", "is required")
		} else {
			c.check("spec.canaryAnalysis.backend", ca.Backend, validation.IsDNS1035Label(ca.Backend))
		}
		c.positive("spec.canaryAnalysis.window", ca.Window)
		c.nonNegative("spec.canaryAnalysis.minRequests", ca.MinRequests)
		if ca.MaxErrorPercent != nil {
			c.percent("spec.canaryAnalysis.maxErrorPercent", *ca.MaxErrorPercent)
		}
	}
}
