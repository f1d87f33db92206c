package model

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
	"weir.dev/weir/internal/balance"
)

// The defaults of a TrafficPolicy, documented in docs/semantics.md. They follow Envoy
// and Istio where those have one.
const (
	DefaultAlgorithm = balance.RoundRobin
	// DefaultMaglevTableSize 0 lets internal/balance size the table: Cilium's 16381, grown
	// with large backend sets so that disruption stays within 1/N + 1 %.
	DefaultMaglevTableSize = 0

	DefaultConsecutiveFailures   = 5
	DefaultOutlierInterval       = 10 * time.Second
	DefaultBaseEjectionTime      = 30 * time.Second
	DefaultMaxEjectionPercent    = 50
	DefaultPanicThresholdPercent = 50

	DefaultConnectTimeout = 5 * time.Second
	// DefaultResponseTimeout bounds the wait for a response head at L7 (nginx's
	// proxy_read_timeout).
	DefaultResponseTimeout = 60 * time.Second
	DefaultIdleTimeout     = time.Hour
	DefaultUDPIdleTimeout  = 30 * time.Second

	DefaultRetryAttempts       = 2
	DefaultRetryBackoffBase    = 25 * time.Millisecond
	DefaultRetryBudgetPercent  = 20
	DefaultMinRetryConcurrency = 3

	DefaultCircuitBreakerLimit = 1024

	DefaultHealthCheckInterval   = 5 * time.Second
	DefaultHealthCheckTimeout    = time.Second
	DefaultHealthyThreshold      = 1
	DefaultUnhealthyThreshold    = 3
	DefaultHealthCheckPath       = "/"
	DefaultHealthCheckStatus     = 200
	DefaultSlowStartAggression   = 1.0
	DefaultSlowStartMinWeight    = 10
	DefaultRateLimitPeriod       = time.Second
	DefaultRateLimitKey          = "route"
	DefaultCanaryWindow          = 30 * time.Second
	DefaultCanaryMinRequests     = 20
	DefaultCanaryMaxErrorPercent = 5
)

// DefaultRetryOn returns the conditions retried by default.
func DefaultRetryOn() []string { return []string{"connect-failure", "refused-stream", "503"} }

// DefaultPolicy returns a new Policy holding every default: the policy of a Service or
// route no TrafficPolicy targets.
func DefaultPolicy() *Policy { return ResolvePolicy(nil, "") }

// ResolvePolicy turns a TrafficPolicy spec into a Policy with every unset field
// defaulted. source is "namespace/name" of the TrafficPolicy ("" for none); its
// namespace is that of the canary backend. A nil spec gives the defaults. Values the
// validator should have refused (a negative duration, a zero count) are taken as unset.
// It returns a new Policy each time.
func ResolvePolicy(spec *weirv1alpha1.TrafficPolicySpec, source string) *Policy {
	if spec == nil {
		spec = &weirv1alpha1.TrafficPolicySpec{}
	}
	p := &Policy{
		Source:          source,
		Algorithm:       DefaultAlgorithm,
		MaglevTableSize: DefaultMaglevTableSize,
		Outlier: OutlierDetection{
			ConsecutiveFailures:   DefaultConsecutiveFailures,
			Interval:              DefaultOutlierInterval,
			BaseEjectionTime:      DefaultBaseEjectionTime,
			MaxEjectionPercent:    DefaultMaxEjectionPercent,
			PanicThresholdPercent: DefaultPanicThresholdPercent,
		},
		ConnectTimeout:  DefaultConnectTimeout,
		ResponseTimeout: DefaultResponseTimeout,
		IdleTimeout:     DefaultIdleTimeout,
		UDPIdleTimeout:  DefaultUDPIdleTimeout,
		Retry: RetryPolicy{
			Attempts:            DefaultRetryAttempts,
			RetryOn:             DefaultRetryOn(),
			BackoffBase:         DefaultRetryBackoffBase,
			BudgetPercent:       DefaultRetryBudgetPercent,
			MinRetryConcurrency: DefaultMinRetryConcurrency,
		},
		CircuitBreaker: CircuitBreaker{
			MaxConnections:     DefaultCircuitBreakerLimit,
			MaxPendingRequests: DefaultCircuitBreakerLimit,
			MaxRequests:        DefaultCircuitBreakerLimit,
		},
	}

	if lb := spec.LoadBalancer; lb != nil {
		if lb.Algorithm != "" {
			p.Algorithm = balance.Algorithm(lb.Algorithm)
		}
		if h := lb.HashOn; h != nil {
			p.HashOn = HashOn{Header: h.Header, Cookie: h.Cookie, QueryParam: h.QueryParam, SourceIP: h.SourceIP}
		}
		if m := lb.Maglev; m != nil {
			if m.TableSize > 0 {
				p.MaglevTableSize = int(m.TableSize)
			}
			p.MaglevSeed = uint64(m.Seed)
		}
	}
	if p.HashOn == (HashOn{}) && (p.Algorithm == balance.Maglev || p.Algorithm == balance.SourceHash) {
		// A hashing scheduler with nothing named hashes the client address.
		p.HashOn.SourceIP = true
	}

	if hc := spec.HealthCheck; hc != nil {
		a := &ActiveHealthCheck{
			HTTP:               hc.Type == "HTTP",
			Interval:           duration(hc.Interval, DefaultHealthCheckInterval),
			Timeout:            duration(hc.Timeout, DefaultHealthCheckTimeout),
			HealthyThreshold:   positive(hc.HealthyThreshold, DefaultHealthyThreshold),
			UnhealthyThreshold: positive(hc.UnhealthyThreshold, DefaultUnhealthyThreshold),
		}
		if a.HTTP {
			a.Path = DefaultHealthCheckPath
			a.ExpectedStatuses = []int{DefaultHealthCheckStatus}
			if h := hc.HTTP; h != nil {
				if h.Path != "" {
					a.Path = h.Path
				}
				a.Host = h.Host
				if len(h.ExpectedStatuses) > 0 {
					a.ExpectedStatuses = make([]int, len(h.ExpectedStatuses))
					for i, s := range h.ExpectedStatuses {
						a.ExpectedStatuses[i] = int(s)
					}
				}
			}
		}
		p.HealthCheck = a
	}

	if o := spec.Outlier; o != nil {
		p.Outlier.ConsecutiveFailures = positive(o.ConsecutiveFailures, DefaultConsecutiveFailures)
		p.Outlier.ConsecutiveGatewayErrors = positive(o.ConsecutiveGatewayErrors, 0)
		p.Outlier.Interval = duration(o.Interval, DefaultOutlierInterval)
		p.Outlier.BaseEjectionTime = duration(o.BaseEjectionTime, DefaultBaseEjectionTime)
		p.Outlier.MaxEjectionPercent = percent(&o.MaxEjectionPercent, DefaultMaxEjectionPercent, false)
		p.Outlier.PanicThresholdPercent = percent(o.PanicThresholdPercent, DefaultPanicThresholdPercent, true)
	}

	if t := spec.Timeouts; t != nil {
		p.ConnectTimeout = duration(t.Connect, DefaultConnectTimeout)
		if t.Idle != nil && t.Idle.Duration > 0 {
			p.IdleTimeout = t.Idle.Duration
			p.UDPIdleTimeout = t.Idle.Duration
		}
		p.RequestTimeout = duration(t.Request, 0)
		p.ResponseTimeout = duration(t.Response, DefaultResponseTimeout)
	}

	if r := spec.Retry; r != nil {
		if r.Attempts != nil && *r.Attempts >= 0 {
			p.Retry.Attempts = int(*r.Attempts)
		}
		p.Retry.PerTryTimeout = duration(r.PerTryTimeout, 0)
		if len(r.RetryOn) > 0 {
			p.Retry.RetryOn = slices.Clone(r.RetryOn)
		}
		p.Retry.BackoffBase = duration(r.BackoffBase, DefaultRetryBackoffBase)
		p.Retry.BudgetPercent = percent(r.BudgetPercent, DefaultRetryBudgetPercent, true)
		if r.MinRetryConcurrency != nil && *r.MinRetryConcurrency >= 0 {
			p.Retry.MinRetryConcurrency = int(*r.MinRetryConcurrency)
		}
		p.Retry.RetryNonIdempotent = r.RetryNonIdempotent
	}

	if cb := spec.CircuitBreaker; cb != nil {
		p.CircuitBreaker.MaxConnections = positivePtr(cb.MaxConnections, DefaultCircuitBreakerLimit)
		p.CircuitBreaker.MaxPendingRequests = positivePtr(cb.MaxPendingRequests, DefaultCircuitBreakerLimit)
		p.CircuitBreaker.MaxRequests = positivePtr(cb.MaxRequests, DefaultCircuitBreakerLimit)
	}

	if ss := spec.SlowStart; ss != nil && ss.Window.Duration > 0 {
		s := &SlowStart{
			Window:           ss.Window.Duration,
			Aggression:       DefaultSlowStartAggression,
			MinWeightPercent: percent(ss.MinWeightPercent, DefaultSlowStartMinWeight, true),
		}
		if a, err := strconv.ParseFloat(strings.TrimSpace(ss.Aggression), 64); err == nil && a > 0 {
			s.Aggression = a
		}
		p.SlowStart = s
	}

	if rl := spec.RateLimit; rl != nil && rl.Requests > 0 {
		p.RateLimit = &RateLimit{
			Requests: int(rl.Requests),
			Period:   duration(rl.Period, DefaultRateLimitPeriod),
			Burst:    positive(rl.Burst, rl.Requests),
			Key:      cmp.Or(rl.Key, DefaultRateLimitKey),
		}
	}

	if ca := spec.CanaryAnalysis; ca != nil && ca.Backend != "" {
		ns, _, _ := strings.Cut(source, "/")
		p.CanaryAnalysis = &CanaryAnalysis{
			Backend:         ServiceKey{Namespace: ns, Name: ca.Backend},
			Window:          duration(ca.Window, DefaultCanaryWindow),
			MinRequests:     positive(ca.MinRequests, DefaultCanaryMinRequests),
			MaxErrorPercent: percent(ca.MaxErrorPercent, DefaultCanaryMaxErrorPercent, true),
		}
	}
	return p
}

func duration(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil || d.Duration <= 0 {
		return def
	}
	return d.Duration
}

func positive(v, def int32) int {
	if v <= 0 {
		return int(def)
	}
	return int(v)
}

func positivePtr(v *int32, def int32) int {
	if v == nil {
		return int(def)
	}
	return positive(*v, def)
}

// percent reads a percentage in 0..100. zeroSet says whether 0 is a value (a pointer
// field) or means unset (a plain omitempty field).
func percent(v *int32, def int32, zeroSet bool) int {
	switch {
	case v == nil, *v < 0, *v > 100, *v == 0 && !zeroSet:
		return int(def)
	}
	return int(*v)
}

// attachment is the TrafficPolicies that target one Service: the one for the whole
// Service and the ones narrowed to a port by sectionName.
type attachment struct {
	service *weirv1alpha1.TrafficPolicy
	ports   map[string]*weirv1alpha1.TrafficPolicy
}

// policyIndex resolves which TrafficPolicy applies to which Service and port.
type policyIndex struct {
	bySvc    map[ServiceKey]*attachment
	resolved map[*weirv1alpha1.TrafficPolicy]*Policy
}

// indexPolicies attaches TrafficPolicies to Services by targetRefs (group "", kind
// Service, in the policy's namespace). When several target the same Service, or the same
// port, the oldest by creationTimestamp wins, then the first by namespace/name (Gateway
// API policy attachment, GEP-713). A policy narrowed to a port by sectionName wins over
// one for the whole Service; the two are not merged.
func indexPolicies(in []*weirv1alpha1.TrafficPolicy) policyIndex {
	idx := policyIndex{}
	if len(in) == 0 {
		return idx
	}
	ordered := slices.Clone(in)
	ordered = slices.DeleteFunc(ordered, func(p *weirv1alpha1.TrafficPolicy) bool { return p == nil })
	slices.SortStableFunc(ordered, policyPrecedence)
	idx.bySvc = make(map[ServiceKey]*attachment)
	idx.resolved = make(map[*weirv1alpha1.TrafficPolicy]*Policy, len(ordered))
	for _, tp := range ordered {
		for _, ref := range tp.Spec.TargetRefs {
			if ref.Group != "" || ref.Kind != "Service" || ref.Name == "" {
				continue
			}
			key := ServiceKey{Namespace: tp.Namespace, Name: string(ref.Name)}
			a := idx.bySvc[key]
			if a == nil {
				a = &attachment{}
				idx.bySvc[key] = a
			}
			if ref.SectionName == nil || *ref.SectionName == "" {
				if a.service == nil {
					a.service = tp
				}
				continue
			}
			if a.ports == nil {
				a.ports = make(map[string]*weirv1alpha1.TrafficPolicy)
			}
			if _, taken := a.ports[string(*ref.SectionName)]; !taken {
				a.ports[string(*ref.SectionName)] = tp
			}
		}
	}
	return idx
}

// policyPrecedence orders TrafficPolicies by Gateway API conflict resolution: the
// oldest first, then by namespace/name.
func policyPrecedence(a, b *weirv1alpha1.TrafficPolicy) int {
	if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

// resolve returns the Policy of a TrafficPolicy, resolved once per Translate so that
// every Service it targets shares it.
func (idx policyIndex) resolve(tp *weirv1alpha1.TrafficPolicy) *Policy {
	if p, ok := idx.resolved[tp]; ok {
		return p
	}
	p := ResolvePolicy(&tp.Spec, tp.Namespace+"/"+tp.Name)
	idx.resolved[tp] = p
	return p
}

// servicePolicies are the policies in force for one Service.
type servicePolicies struct {
	service *Policy
	ports   map[string]*Policy
}

func (sp servicePolicies) port(name string) *Policy {
	if p, ok := sp.ports[name]; ok && name != "" {
		return p
	}
	return sp.service
}

func (idx policyIndex) forService(key ServiceKey, defaults *Policy) servicePolicies {
	out := servicePolicies{service: defaults}
	a := idx.bySvc[key]
	if a == nil {
		return out
	}
	if a.service != nil {
		out.service = idx.resolve(a.service)
	}
	if len(a.ports) > 0 {
		out.ports = make(map[string]*Policy, len(a.ports))
		for name, tp := range a.ports {
			out.ports[name] = idx.resolve(tp)
		}
	}
	return out
}
