package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"weir.dev/weir/internal/balance"
)

// Snapshot is the immutable result of one Translate. Data planes read it and never
// modify it; a new configuration is a new Snapshot.
type Snapshot struct {
	// Version increases with every Snapshot a runner hands out.
	Version uint64
	// Services sorted by namespace and name.
	Services []*Service
	// Gateway is the L7 configuration; nil when there is no Gateway or Ingress of weir's.
	Gateway *GatewayConfig
	// NetworkPolicy is what the network-policy data plane enforces; nil when there is
	// no NetworkPolicy.
	NetworkPolicy *NetworkPolicySet `json:",omitempty"`
	// Delta, when set, says what differs from the Snapshot of version Delta.Base (a
	// Translator's previous result); nil means anything may differ. A data plane that
	// applied version Base may apply only the delta; any other must treat the Snapshot
	// as new.
	Delta *Delta
}

// Delta is what changed between two Snapshots of one Translator.
type Delta struct {
	// Base is the Version of the Snapshot this one was derived from; 0 means none.
	Base uint64
	// Services lists the keys of the Services added, removed or changed since Base,
	// sorted. A Service not listed is the same pointer in both Snapshots.
	Services []ServiceKey
	// Gateway is true when Gateway differs from Base's (otherwise it is the same pointer).
	Gateway bool
	// NetworkPolicy is true when NetworkPolicy differs from Base's (otherwise it is the
	// same pointer).
	NetworkPolicy bool
}

// DeltaFrom returns the delta of s against version applied, or nil when s has none
// against it (a data plane must then compare everything).
func (s *Snapshot) DeltaFrom(applied uint64) *Delta {
	if s == nil || s.Delta == nil || applied == 0 || s.Delta.Base != applied {
		return nil
	}
	return s.Delta
}

// ServiceKey names a Service.
type ServiceKey struct {
	Namespace string
	Name      string
}

func (k ServiceKey) String() string { return k.Namespace + "/" + k.Name }

// Compare orders keys by namespace, then name (the order of Snapshot.Services).
func (k ServiceKey) Compare(o ServiceKey) int {
	if c := cmp.Compare(k.Namespace, o.Namespace); c != 0 {
		return c
	}
	return cmp.Compare(k.Name, o.Name)
}

// Service returns the Service with the given key, or nil. It binary-searches
// Services, which Translate sorts.
func (s *Snapshot) Service(key ServiceKey) *Service {
	if s == nil {
		return nil
	}
	i, ok := slices.BinarySearchFunc(s.Services, key, func(svc *Service, k ServiceKey) int {
		return svc.Key.Compare(k)
	})
	if !ok {
		return nil
	}
	return s.Services[i]
}

// ServiceType is the Kubernetes Service type.
type ServiceType string

// The Service types.
const (
	ClusterIP    ServiceType = "ClusterIP"
	NodePort     ServiceType = "NodePort"
	LoadBalancer ServiceType = "LoadBalancer"
	ExternalName ServiceType = "ExternalName"
)

// Protocol is an L4 protocol.
type Protocol string

// The protocols a Service port may use.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// Service is one Kubernetes Service, translated.
type Service struct {
	Key  ServiceKey
	Type ServiceType
	// Headless Services (clusterIP: None) and ExternalName Services are not proxied;
	// they are kept for DNS.
	Headless     bool
	ExternalName string
	// ProxiedElsewhere: the Service carries the label service.kubernetes.io/service-proxy-name
	// (LabelServiceProxyName) or service.kubernetes.io/headless (LabelHeadless), so, as
	// kube-proxy, no weir data plane programs it; it is kept for DNS and the gateway.
	ProxiedElsewhere bool

	ClusterIPs      []netip.Addr // empty when headless or ExternalName
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr // from status.loadBalancer.ingress
	// LoadBalancerSourceRanges are the sources allowed to reach the LoadBalancer IPs, as
	// kube-proxy enforces them: spec.loadBalancerSourceRanges (or the annotation), and,
	// in a family where a range holds the node's IP, the family's LoadBalancer IPs too
	// (traffic from the node to a VIP bound locally comes from the VIP). A family with
	// no range here, or whose ranges held a /0, is not restricted: see SourceRanges.
	LoadBalancerSourceRanges []netip.Prefix

	// AffinityTimeout is the ClientIP session affinity timeout; zero means no affinity.
	AffinityTimeout time.Duration

	InternalTrafficLocal bool // internalTrafficPolicy: Local
	ExternalTrafficLocal bool // externalTrafficPolicy: Local
	// HealthCheckNodePort serves the count of local endpoints when ExternalTrafficLocal.
	HealthCheckNodePort int32
	// LocalEndpoints counts the ready endpoints on this node (for the health check node port).
	LocalEndpoints int

	PublishNotReadyAddresses bool

	Ports []*ServicePort

	// DNSEndpoints are the endpoints DNS publishes for a headless Service: ready ones, or
	// all when PublishNotReadyAddresses. One entry per address, sorted by address.
	DNSEndpoints []DNSEndpoint

	// Policy is the resolved TrafficPolicy for the Service, defaults applied. Never nil.
	Policy *Policy
}

// Proxied reports whether data planes forward traffic for the Service.
func (s *Service) Proxied() bool { return !s.Headless && s.Type != ExternalName && !s.ProxiedElsewhere }

// SourceRanges returns the sources allowed to reach the Service's LoadBalancer IPs of
// one family; nil means the family is not restricted. kube-proxy runs one proxier per
// family, so ranges of one family never restrict the other.
func (s *Service) SourceRanges(ipv6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s.LoadBalancerSourceRanges {
		if p.Addr().Is6() == ipv6 {
			out = append(out, p)
		}
	}
	return out
}

// ServicePort is one port of a Service with its endpoints already chosen.
type ServicePort struct {
	Name        string
	Protocol    Protocol
	Port        int32
	NodePort    int32 // zero unless NodePort or LoadBalancer
	AppProtocol string

	// Endpoints lists every endpoint known for this port, with its conditions, sorted
	// by address and port. Data planes forward to Cluster and External, never to this.
	Endpoints []Endpoint

	// Cluster is where traffic to the ClusterIP goes (internalTrafficPolicy applied).
	Cluster EndpointSet
	// External is where traffic to node ports, external IPs and LoadBalancer IPs goes
	// (externalTrafficPolicy applied).
	External EndpointSet
	// ShortCircuit is where traffic to node ports, external IPs and LoadBalancer IPs
	// goes when it comes from this node, or from a pod that --detect-local-mode
	// recognises, and externalTrafficPolicy is Local: the endpoints that policy Cluster
	// chooses, whatever the policies say. kube-proxy short-circuits such traffic as if
	// it had gone out to the load balancer and come back in. It is the same set as
	// External when the external policy is Cluster. ProxyConfig.External says which set
	// a source gets.
	ShortCircuit EndpointSet

	// Policy is the TrafficPolicy in force for this port: one that targets the port by
	// sectionName, else the Service's. Never nil; the same pointer as Service.Policy
	// when no policy narrows to this port.
	Policy *Policy
}

// SetKind names one of a ServicePort's endpoint sets.
type SetKind uint8

// The endpoint sets of a ServicePort.
const (
	ClusterSet      SetKind = iota // ServicePort.Cluster
	ExternalSet                    // ServicePort.External
	ShortCircuitSet                // ServicePort.ShortCircuit
)

// Set returns the endpoint set of that kind.
func (p *ServicePort) Set(k SetKind) EndpointSet {
	switch k {
	case ExternalSet:
		return p.External
	case ShortCircuitSet:
		return p.ShortCircuit
	}
	return p.Cluster
}

// ID is "namespace/name:port" with the port's name, or its number when unnamed.
func (p *ServicePort) ID(svc ServiceKey) string {
	if p.Name != "" {
		return svc.String() + ":" + p.Name
	}
	return fmt.Sprintf("%s:%d", svc, p.Port)
}

// Verdict says what happens to traffic for an endpoint set.
type Verdict uint8

// The verdicts, as in kube-proxy.
const (
	// Forward to one of Endpoints.
	Forward Verdict = iota
	// Reject: the Service has no usable endpoint at all; the client gets a TCP reset or
	// ICMP unreachable at once.
	Reject
	// Drop: traffic policy Local and no local endpoint.
	Drop
)

func (v Verdict) String() string {
	switch v {
	case Forward:
		return "forward"
	case Reject:
		return "reject"
	case Drop:
		return "drop"
	}
	return fmt.Sprintf("verdict(%d)", v)
}

// EndpointSet is the outcome of kube-proxy's endpoint selection for one kind of traffic.
// Verdict is Forward exactly when Endpoints is not empty.
//
// kube-proxy runs one proxier per IP family, so the choice (including the terminating
// fallback) is made separately for IPv4 and IPv6 endpoints; Endpoints is the IPv4 choice
// followed by the IPv6 one. A data plane that programs each family on its own (kernel
// tables) uses ForFamily; Verdict is Forward when either family forwards, else Drop when
// either drops, else Reject.
type EndpointSet struct {
	Verdict   Verdict
	Endpoints []Endpoint
	// IPv4Verdict and IPv6Verdict are the verdicts per family. A family the Service
	// does not have is Reject.
	IPv4Verdict Verdict
	IPv6Verdict Verdict
}

// ForFamily returns the part of the set for one IP family, with that family's verdict.
// The returned Endpoints share the set's backing array.
func (s EndpointSet) ForFamily(ipv6 bool) EndpointSet {
	// Endpoints are sorted by address, and netip orders every IPv4 address first.
	i, _ := slices.BinarySearchFunc(s.Endpoints, true, func(e Endpoint, _ bool) int {
		if e.Addr.Is4() {
			return -1
		}
		return 1
	})
	out := EndpointSet{IPv4Verdict: s.IPv4Verdict, IPv6Verdict: s.IPv6Verdict}
	if ipv6 {
		out.Verdict, out.Endpoints = s.IPv6Verdict, s.Endpoints[i:]
	} else {
		out.Verdict, out.Endpoints = s.IPv4Verdict, s.Endpoints[:i:i]
	}
	if len(out.Endpoints) == 0 {
		out.Endpoints = nil
	}
	return out
}

// Endpoint is one backend address and port.
type Endpoint struct {
	Addr        netip.Addr
	Port        int32
	Ready       bool
	Serving     bool
	Terminating bool
	Hostname    string
	NodeName    string
	Zone        string
	// Local is true when NodeName is this node.
	Local bool
	// Weight from the slice's weir.dev/weight annotation; 1 when unset.
	Weight uint32
}

// EffectiveWeight is Weight, or 1 when unset (Snapshots built by hand may leave it 0).
func (e Endpoint) EffectiveWeight() uint32 { return max(e.Weight, 1) }

// SameEndpoints reports whether a and b list the same addresses, ports and weights in
// the same order: what a data plane compares to decide that two sets can share rules.
func SameEndpoints(a, b []Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y Endpoint) bool {
		return x.AddrPort() == y.AddrPort() && x.EffectiveWeight() == y.EffectiveWeight()
	})
}

// AddrPort is the endpoint's address and port.
func (e Endpoint) AddrPort() netip.AddrPort { return netip.AddrPortFrom(e.Addr, uint16(e.Port)) }

// DNSEndpoint is an address a headless Service publishes in DNS.
type DNSEndpoint struct {
	Addr     netip.Addr
	Hostname string // empty when the endpoint has none; DNS then uses the dashed IP
	Ready    bool
}

// Policy is a resolved TrafficPolicy: every field holds a usable value.
type Policy struct {
	// Source is "namespace/name" of the TrafficPolicy, or "" for the defaults.
	Source string

	Algorithm       balance.Algorithm
	HashOn          HashOn
	MaglevTableSize int // 0: automatic (balance.AutoMaglevTableSize)
	MaglevSeed      uint64

	HealthCheck *ActiveHealthCheck // nil when no active check is configured
	Outlier     OutlierDetection

	ConnectTimeout time.Duration
	IdleTimeout    time.Duration // TCP connections
	UDPIdleTimeout time.Duration
	RequestTimeout time.Duration // zero: none
	// ResponseTimeout bounds the wait for a response head after a try's request is sent.
	ResponseTimeout time.Duration

	Retry          RetryPolicy
	CircuitBreaker CircuitBreaker
	SlowStart      *SlowStart // nil: off
	RateLimit      *RateLimit // nil: off
	CanaryAnalysis *CanaryAnalysis
}

// HashOn is the request attribute an L7 hashing scheduler hashes.
type HashOn struct {
	Header     string
	Cookie     string
	QueryParam string
	SourceIP   bool
}

// ActiveHealthCheck probes endpoints.
type ActiveHealthCheck struct {
	HTTP               bool // false: TCP connect
	Path               string
	Host               string
	ExpectedStatuses   []int
	Interval           time.Duration
	Timeout            time.Duration
	HealthyThreshold   int
	UnhealthyThreshold int
}

// OutlierDetection is passive health checking.
type OutlierDetection struct {
	ConsecutiveFailures      int
	ConsecutiveGatewayErrors int
	Interval                 time.Duration
	BaseEjectionTime         time.Duration
	MaxEjectionPercent       int
	PanicThresholdPercent    int
}

// RetryPolicy is L7 retry policy.
type RetryPolicy struct {
	Attempts            int
	PerTryTimeout       time.Duration
	RetryOn             []string
	BackoffBase         time.Duration
	BudgetPercent       int
	MinRetryConcurrency int
	RetryNonIdempotent  bool
}

// CircuitBreaker limits per backend.
type CircuitBreaker struct {
	MaxConnections     int
	MaxPendingRequests int
	MaxRequests        int
}

// SlowStart ramps new endpoints.
type SlowStart struct {
	Window           time.Duration
	Aggression       float64
	MinWeightPercent int
}

// RateLimit is a local token bucket.
type RateLimit struct {
	Requests int
	Period   time.Duration
	Burst    int
	Key      string // "route", "sourceIP" or "header:<Name>"
}

// CanaryAnalysis rolls a canary back on its error rate.
type CanaryAnalysis struct {
	Backend         ServiceKey
	Window          time.Duration
	MinRequests     int
	MaxErrorPercent int
}
