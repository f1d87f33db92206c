package model

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
	"weir.dev/weir/internal/balance"
)

func TestDefaultPolicy(t *testing.T) {
	want := &Policy{
		Algorithm:       balance.RoundRobin,
		MaglevTableSize: 0, // automatic
		Outlier: OutlierDetection{
			ConsecutiveFailures:   5,
			Interval:              10 * time.Second,
			BaseEjectionTime:      30 * time.Second,
			MaxEjectionPercent:    50,
			PanicThresholdPercent: 50,
		},
		ConnectTimeout:  5 * time.Second,
		ResponseTimeout: 60 * time.Second,
		IdleTimeout:     time.Hour,
		UDPIdleTimeout:  30 * time.Second,
		Retry: RetryPolicy{
			Attempts:            2,
			RetryOn:             []string{"connect-failure", "refused-stream", "503"},
			BackoffBase:         25 * time.Millisecond,
			BudgetPercent:       20,
			MinRetryConcurrency: 3,
		},
		CircuitBreaker: CircuitBreaker{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024},
	}
	got := DefaultPolicy()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DefaultPolicy() =\n%+v\nwant\n%+v", got, want)
	}
	// Each call is a new Policy: a caller may not change another's.
	got.Retry.RetryOn[0] = "changed"
	if DefaultPolicy().Retry.RetryOn[0] != "connect-failure" {
		t.Fatal("DefaultPolicy shares its RetryOn slice")
	}
	if p := ResolvePolicy(&weirv1alpha1.TrafficPolicySpec{}, "ns/empty"); p.Source != "ns/empty" || !reflect.DeepEqual(withSource(p, ""), want) {
		t.Fatalf("empty spec = %+v, want the defaults", p)
	}
}

func withSource(p *Policy, src string) *Policy {
	c := *p
	c.Source = src
	return &c
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func TestResolvePolicy(t *testing.T) {
	tests := []struct {
		name  string
		spec  weirv1alpha1.TrafficPolicySpec
		check func(t *testing.T, p *Policy)
	}{
		{
			name: "algorithm and Maglev",
			spec: weirv1alpha1.TrafficPolicySpec{LoadBalancer: &weirv1alpha1.LoadBalancer{
				Algorithm: weirv1alpha1.Maglev, Maglev: &weirv1alpha1.MaglevConfig{TableSize: 65537, Seed: 42},
			}},
			check: func(t *testing.T, p *Policy) {
				if p.Algorithm != balance.Maglev || p.MaglevTableSize != 65537 || p.MaglevSeed != 42 {
					t.Errorf("got %s %d %d", p.Algorithm, p.MaglevTableSize, p.MaglevSeed)
				}
				if p.HashOn != (HashOn{SourceIP: true}) {
					t.Errorf("HashOn = %+v, want the client address by default", p.HashOn)
				}
			},
		},
		{
			name: "Maglev default table size, hash on a header",
			spec: weirv1alpha1.TrafficPolicySpec{LoadBalancer: &weirv1alpha1.LoadBalancer{
				Algorithm: weirv1alpha1.Maglev, HashOn: &weirv1alpha1.HashOn{Header: "X-User"},
			}},
			check: func(t *testing.T, p *Policy) {
				if p.MaglevTableSize != 0 || p.HashOn != (HashOn{Header: "X-User"}) {
					t.Errorf("got %d %+v", p.MaglevTableSize, p.HashOn)
				}
			},
		},
		{
			name: "round robin does not hash",
			spec: weirv1alpha1.TrafficPolicySpec{LoadBalancer: &weirv1alpha1.LoadBalancer{Algorithm: weirv1alpha1.LeastConnections}},
			check: func(t *testing.T, p *Policy) {
				if p.Algorithm != balance.LeastConnections || p.HashOn != (HashOn{}) {
					t.Errorf("got %s %+v", p.Algorithm, p.HashOn)
				}
			},
		},
		{
			name: "TCP health check defaults",
			spec: weirv1alpha1.TrafficPolicySpec{HealthCheck: &weirv1alpha1.HealthCheck{}},
			check: func(t *testing.T, p *Policy) {
				want := &ActiveHealthCheck{Interval: 5 * time.Second, Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 3}
				if !reflect.DeepEqual(p.HealthCheck, want) {
					t.Errorf("HealthCheck = %+v, want %+v", p.HealthCheck, want)
				}
			},
		},
		{
			name: "HTTP health check defaults",
			spec: weirv1alpha1.TrafficPolicySpec{HealthCheck: &weirv1alpha1.HealthCheck{Type: "HTTP"}},
			check: func(t *testing.T, p *Policy) {
				want := &ActiveHealthCheck{HTTP: true, Path: "/", ExpectedStatuses: []int{200},
					Interval: 5 * time.Second, Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 3}
				if !reflect.DeepEqual(p.HealthCheck, want) {
					t.Errorf("HealthCheck = %+v, want %+v", p.HealthCheck, want)
				}
			},
		},
		{
			name: "HTTP health check set",
			spec: weirv1alpha1.TrafficPolicySpec{HealthCheck: &weirv1alpha1.HealthCheck{
				Type: "HTTP", Interval: dur(2 * time.Second), Timeout: dur(500 * time.Millisecond),
				HealthyThreshold: 2, UnhealthyThreshold: 4,
				HTTP: &weirv1alpha1.HTTPHealthCheck{Path: "/healthz", Host: "web.local", ExpectedStatuses: []int32{200, 204}},
			}},
			check: func(t *testing.T, p *Policy) {
				want := &ActiveHealthCheck{HTTP: true, Path: "/healthz", Host: "web.local", ExpectedStatuses: []int{200, 204},
					Interval: 2 * time.Second, Timeout: 500 * time.Millisecond, HealthyThreshold: 2, UnhealthyThreshold: 4}
				if !reflect.DeepEqual(p.HealthCheck, want) {
					t.Errorf("HealthCheck = %+v, want %+v", p.HealthCheck, want)
				}
			},
		},
		{
			name: "outlier detection, panic threshold 0 is a value",
			spec: weirv1alpha1.TrafficPolicySpec{Outlier: &weirv1alpha1.Outlier{
				ConsecutiveFailures: 3, ConsecutiveGatewayErrors: 2, Interval: dur(time.Second),
				BaseEjectionTime: dur(5 * time.Second), MaxEjectionPercent: 20, PanicThresholdPercent: ptr(int32(0)),
			}},
			check: func(t *testing.T, p *Policy) {
				want := OutlierDetection{ConsecutiveFailures: 3, ConsecutiveGatewayErrors: 2, Interval: time.Second,
					BaseEjectionTime: 5 * time.Second, MaxEjectionPercent: 20, PanicThresholdPercent: 0}
				if p.Outlier != want {
					t.Errorf("Outlier = %+v, want %+v", p.Outlier, want)
				}
			},
		},
		{
			name: "outlier section present but empty keeps the defaults",
			spec: weirv1alpha1.TrafficPolicySpec{Outlier: &weirv1alpha1.Outlier{}},
			check: func(t *testing.T, p *Policy) {
				if p.Outlier != DefaultPolicy().Outlier {
					t.Errorf("Outlier = %+v", p.Outlier)
				}
			},
		},
		{
			name: "timeouts: idle applies to TCP and UDP",
			spec: weirv1alpha1.TrafficPolicySpec{Timeouts: &weirv1alpha1.Timeouts{
				Connect: dur(time.Second), Idle: dur(time.Minute), Request: dur(15 * time.Second),
			}},
			check: func(t *testing.T, p *Policy) {
				if p.ConnectTimeout != time.Second || p.IdleTimeout != time.Minute || p.UDPIdleTimeout != time.Minute || p.RequestTimeout != 15*time.Second {
					t.Errorf("got %v %v %v %v", p.ConnectTimeout, p.IdleTimeout, p.UDPIdleTimeout, p.RequestTimeout)
				}
			},
		},
		{
			name: "negative durations are unset",
			spec: weirv1alpha1.TrafficPolicySpec{Timeouts: &weirv1alpha1.Timeouts{Connect: dur(-time.Second), Idle: dur(-1)}},
			check: func(t *testing.T, p *Policy) {
				if p.ConnectTimeout != 5*time.Second || p.IdleTimeout != time.Hour || p.UDPIdleTimeout != 30*time.Second {
					t.Errorf("got %v %v %v", p.ConnectTimeout, p.IdleTimeout, p.UDPIdleTimeout)
				}
			},
		},
		{
			name: "retry set, attempts 0 disables",
			spec: weirv1alpha1.TrafficPolicySpec{Retry: &weirv1alpha1.Retry{
				Attempts: ptr(int32(0)), PerTryTimeout: dur(time.Second), RetryOn: []string{"5xx"},
				BackoffBase: dur(10 * time.Millisecond), BudgetPercent: ptr(int32(0)), MinRetryConcurrency: ptr(int32(1)),
				RetryNonIdempotent: true,
			}},
			check: func(t *testing.T, p *Policy) {
				want := RetryPolicy{Attempts: 0, PerTryTimeout: time.Second, RetryOn: []string{"5xx"}, BackoffBase: 10 * time.Millisecond,
					BudgetPercent: 0, MinRetryConcurrency: 1, RetryNonIdempotent: true}
				if !reflect.DeepEqual(p.Retry, want) {
					t.Errorf("Retry = %+v, want %+v", p.Retry, want)
				}
			},
		},
		{
			name: "circuit breaker: unset limits keep 1024",
			spec: weirv1alpha1.TrafficPolicySpec{CircuitBreaker: &weirv1alpha1.CircuitBreaker{MaxConnections: ptr(int32(10))}},
			check: func(t *testing.T, p *Policy) {
				if want := (CircuitBreaker{10, 1024, 1024}); p.CircuitBreaker != want {
					t.Errorf("CircuitBreaker = %+v, want %+v", p.CircuitBreaker, want)
				}
			},
		},
		{
			name: "slow start",
			spec: weirv1alpha1.TrafficPolicySpec{SlowStart: &weirv1alpha1.SlowStart{Window: metav1.Duration{Duration: time.Minute}, Aggression: "2.5"}},
			check: func(t *testing.T, p *Policy) {
				if want := (&SlowStart{Window: time.Minute, Aggression: 2.5, MinWeightPercent: 10}); !reflect.DeepEqual(p.SlowStart, want) {
					t.Errorf("SlowStart = %+v, want %+v", p.SlowStart, want)
				}
			},
		},
		{
			name: "slow start with a bad aggression is linear; without a window it is off",
			spec: weirv1alpha1.TrafficPolicySpec{SlowStart: &weirv1alpha1.SlowStart{Window: metav1.Duration{Duration: time.Minute}, Aggression: "fast", MinWeightPercent: ptr(int32(0))}},
			check: func(t *testing.T, p *Policy) {
				if want := (&SlowStart{Window: time.Minute, Aggression: 1, MinWeightPercent: 0}); !reflect.DeepEqual(p.SlowStart, want) {
					t.Errorf("SlowStart = %+v, want %+v", p.SlowStart, want)
				}
				if ResolvePolicy(&weirv1alpha1.TrafficPolicySpec{SlowStart: &weirv1alpha1.SlowStart{}}, "").SlowStart != nil {
					t.Error("slow start without a window is on")
				}
			},
		},
		{
			name: "rate limit defaults",
			spec: weirv1alpha1.TrafficPolicySpec{RateLimit: &weirv1alpha1.RateLimit{Requests: 100}},
			check: func(t *testing.T, p *Policy) {
				if want := (&RateLimit{Requests: 100, Period: time.Second, Burst: 100, Key: "route"}); !reflect.DeepEqual(p.RateLimit, want) {
					t.Errorf("RateLimit = %+v, want %+v", p.RateLimit, want)
				}
			},
		},
		{
			name: "rate limit set",
			spec: weirv1alpha1.TrafficPolicySpec{RateLimit: &weirv1alpha1.RateLimit{Requests: 10, Period: dur(time.Minute), Burst: 20, Key: "sourceIP"}},
			check: func(t *testing.T, p *Policy) {
				if want := (&RateLimit{Requests: 10, Period: time.Minute, Burst: 20, Key: "sourceIP"}); !reflect.DeepEqual(p.RateLimit, want) {
					t.Errorf("RateLimit = %+v, want %+v", p.RateLimit, want)
				}
			},
		},
		{
			name: "canary analysis in the policy's namespace",
			spec: weirv1alpha1.TrafficPolicySpec{CanaryAnalysis: &weirv1alpha1.CanaryAnalysis{Backend: "web-canary"}},
			check: func(t *testing.T, p *Policy) {
				want := &CanaryAnalysis{Backend: ServiceKey{"shop", "web-canary"}, Window: 30 * time.Second, MinRequests: 20, MaxErrorPercent: 5}
				if !reflect.DeepEqual(p.CanaryAnalysis, want) {
					t.Errorf("CanaryAnalysis = %+v, want %+v", p.CanaryAnalysis, want)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ResolvePolicy(&tc.spec, "shop/policy")
			if p.Source != "shop/policy" {
				t.Errorf("Source = %q", p.Source)
			}
			tc.check(t, p)
		})
	}
}

// trafficPolicy builds a TrafficPolicy in testNS created at minute age of the clock,
// choosing the round-robin-free algorithm alg so that tests can tell policies apart.
func trafficPolicy(name string, minute int, alg weirv1alpha1.Algorithm, refs ...gatewayv1.LocalPolicyTargetReferenceWithSectionName) *weirv1alpha1.TrafficPolicy {
	return &weirv1alpha1.TrafficPolicy{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: testNS, Name: name,
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, minute, 0, 0, time.UTC)),
		},
		Spec: weirv1alpha1.TrafficPolicySpec{TargetRefs: refs, LoadBalancer: &weirv1alpha1.LoadBalancer{Algorithm: alg}},
	}
}

func svcRef(name string) gatewayv1.LocalPolicyTargetReferenceWithSectionName {
	return gatewayv1.LocalPolicyTargetReferenceWithSectionName{
		LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Group: "", Kind: "Service", Name: gatewayv1.ObjectName(name)},
	}
}

func portRef(name, port string) gatewayv1.LocalPolicyTargetReferenceWithSectionName {
	r := svcRef(name)
	r.SectionName = ptr(gatewayv1.SectionName(port))
	return r
}

func TestPolicyAttachment(t *testing.T) {
	svc := service("web", withPorts(
		corev1.ServicePort{Name: "http", Port: 80}, corev1.ServicePort{Name: "grpc", Port: 9000},
	))
	otherNS := trafficPolicy("elsewhere", 0, weirv1alpha1.Random, svcRef("web"))
	otherNS.Namespace = "other"
	routeRef := svcRef("web")
	routeRef.Group, routeRef.Kind = "gateway.networking.k8s.io", "HTTPRoute"
	wrongKind := trafficPolicy("route", 0, weirv1alpha1.Random, routeRef)

	tests := []struct {
		name     string
		policies []*weirv1alpha1.TrafficPolicy
		// want source of the Service's policy and of the two ports'.
		service, http, grpc string
	}{
		{
			name: "none: defaults",
		},
		{
			name:     "whole Service",
			policies: []*weirv1alpha1.TrafficPolicy{trafficPolicy("p", 0, weirv1alpha1.Random, svcRef("web"))},
			service:  "ns/p", http: "ns/p", grpc: "ns/p",
		},
		{
			name:     "another namespace, another kind, another Service: ignored",
			policies: []*weirv1alpha1.TrafficPolicy{otherNS, wrongKind, trafficPolicy("api", 0, weirv1alpha1.Random, svcRef("api"))},
		},
		{
			name: "oldest wins",
			policies: []*weirv1alpha1.TrafficPolicy{
				trafficPolicy("a-new", 5, weirv1alpha1.Random, svcRef("web")),
				trafficPolicy("z-old", 1, weirv1alpha1.Random, svcRef("web")),
			},
			service: "ns/z-old", http: "ns/z-old", grpc: "ns/z-old",
		},
		{
			name: "same age: alphabetical",
			policies: []*weirv1alpha1.TrafficPolicy{
				trafficPolicy("b", 1, weirv1alpha1.Random, svcRef("web")),
				trafficPolicy("a", 1, weirv1alpha1.Random, svcRef("web")),
			},
			service: "ns/a", http: "ns/a", grpc: "ns/a",
		},
		{
			name: "sectionName narrows to a port and wins over the whole-Service policy",
			policies: []*weirv1alpha1.TrafficPolicy{
				trafficPolicy("svc", 0, weirv1alpha1.Random, svcRef("web")),
				trafficPolicy("grpc-only", 9, weirv1alpha1.Maglev, portRef("web", "grpc")),
			},
			service: "ns/svc", http: "ns/svc", grpc: "ns/grpc-only",
		},
		{
			name: "port policy conflicts: oldest wins",
			policies: []*weirv1alpha1.TrafficPolicy{
				trafficPolicy("new", 9, weirv1alpha1.Maglev, portRef("web", "http")),
				trafficPolicy("old", 2, weirv1alpha1.Random, portRef("web", "http")),
			},
			http: "ns/old",
		},
		{
			name: "a port that does not exist: ignored",
			policies: []*weirv1alpha1.TrafficPolicy{
				trafficPolicy("p", 0, weirv1alpha1.Maglev, portRef("web", "nope")),
			},
		},
		{
			name: "one policy, several targets",
			policies: []*weirv1alpha1.TrafficPolicy{
				trafficPolicy("p", 0, weirv1alpha1.Maglev, svcRef("api"), portRef("web", "http")),
			},
			http: "ns/p",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{Services: []*corev1.Service{svc, service("api")}, Policies: tc.policies}
			s := mustService(t, Translate(objs, thisNode), "web")
			got := []string{s.Policy.Source, s.Ports[0].Policy.Source, s.Ports[1].Policy.Source}
			if want := []string{tc.service, tc.http, tc.grpc}; !reflect.DeepEqual(got, want) {
				t.Errorf("policy sources (service, http, grpc) = %q, want %q", got, want)
			}
			for _, p := range append([]*Policy{s.Policy}, s.Ports[0].Policy, s.Ports[1].Policy) {
				if p.Source == "" && !reflect.DeepEqual(p, DefaultPolicy()) {
					t.Errorf("default policy = %+v", p)
				}
			}
			if s.Ports[0].Policy.Source == tc.service && s.Ports[0].Policy != s.Policy {
				t.Error("port without its own policy does not share the Service's")
			}
		})
	}
}

func TestPolicySharedAcrossServices(t *testing.T) {
	objs := &Objects{
		Services: []*corev1.Service{service("a"), service("b"), service("c")},
		Policies: []*weirv1alpha1.TrafficPolicy{trafficPolicy("p", 0, weirv1alpha1.Random, svcRef("a"), svcRef("b"))},
	}
	snap := Translate(objs, thisNode)
	a, b, c := mustService(t, snap, "a"), mustService(t, snap, "b"), mustService(t, snap, "c")
	if a.Policy != b.Policy || a.Policy.Algorithm != balance.Random {
		t.Error("one TrafficPolicy resolved twice")
	}
	if c.Policy == nil || c.Policy.Source != "" {
		t.Errorf("service without a policy: %+v", c.Policy)
	}
}
