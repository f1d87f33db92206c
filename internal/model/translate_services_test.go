package model

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// TestEndpointChoice follows the cases of kube-proxy's TestCategorizeEndpoints
// (pkg/proxy/topology_test.go), through the whole of Translate: a Service and its
// slices in, the Cluster and External sets and their verdicts out. The node is node-a in
// zone-a; endpoints are on node-b unless local.
func TestEndpointChoice(t *testing.T) {
	const (
		e0 = "10.0.0.0:8080"
		e1 = "10.0.0.1:8080"
		e2 = "10.0.0.2:8080"
		e3 = "10.0.0.3:8080"
	)
	tests := []struct {
		name string
		svc  []func(*corev1.Service)
		eps  []discoveryv1.Endpoint
		node *Node // default thisNode

		cluster         []string
		clusterVerdict  Verdict
		external        []string // nil: same as cluster
		externalVerdict Verdict
	}{
		// Zone hints.
		{
			name: "PreferClose: hints of this zone",
			svc:  opts(distribution(corev1.ServiceTrafficDistributionPreferClose)),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b")),
				ep("10.0.0.2", zoneHints("zone-c")), ep("10.0.0.3", zoneHints("zone-a")),
			},
			cluster: []string{e0, e3},
		},
		{
			name: "PreferSameZone: hints of this zone",
			svc:  opts(distribution(corev1.ServiceTrafficDistributionPreferSameZone)),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b")),
			},
			cluster: []string{e0},
		},
		{
			name: "topology-mode Auto: hints of this zone",
			svc:  opts(annotate(corev1.AnnotationTopologyMode, "Auto")),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b")),
			},
			cluster: []string{e0},
		},
		{
			name: "topology-aware-hints auto (deprecated): hints of this zone",
			svc:  opts(annotate(corev1.DeprecatedAnnotationTopologyAwareHints, "auto")),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b")),
			},
			cluster: []string{e0},
		},
		{
			name: "topology-mode aUto (wrong case): hints ignored",
			svc:  opts(annotate(corev1.AnnotationTopologyMode, "aUto")),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b")),
			},
			cluster: []string{e0, e1},
		},
		{
			name: "topology-mode Disabled: hints ignored",
			svc:  opts(annotate(corev1.AnnotationTopologyMode, "Disabled")),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b")),
			},
			cluster: []string{e0, e1},
		},
		{
			name: "hints without trafficDistribution: ignored",
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b")),
			},
			cluster: []string{e0, e1},
		},
		{
			name:    "node without a zone: no filtering",
			svc:     opts(distribution(corev1.ServiceTrafficDistributionPreferClose)),
			node:    &Node{Name: "node-a"},
			eps:     []discoveryv1.Endpoint{ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b"))},
			cluster: []string{e0, e1},
		},
		{
			name:    "no hint for this node's zone: no filtering",
			svc:     opts(distribution(corev1.ServiceTrafficDistributionPreferClose)),
			node:    &Node{Name: "node-a", Zone: "zone-z"},
			eps:     []discoveryv1.Endpoint{ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b"))},
			cluster: []string{e0, e1},
		},
		{
			name: "hints all-or-nothing: one ready endpoint without a hint disables them",
			svc:  opts(distribution(corev1.ServiceTrafficDistributionPreferClose)),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b")),
				ep("10.0.0.2"), ep("10.0.0.3", zoneHints("zone-a")),
			},
			cluster: []string{e0, e1, e2, e3},
		},
		{
			name: "hints all-or-nothing counts ready endpoints only",
			svc:  opts(distribution(corev1.ServiceTrafficDistributionPreferClose)),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b")),
				ep("10.0.0.2", notReady),
			},
			cluster: []string{e0},
		},
		{
			name: "unready endpoint of this zone is not used",
			svc:  opts(distribution(corev1.ServiceTrafficDistributionPreferClose)),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a")), ep("10.0.0.1", zoneHints("zone-b")),
				ep("10.0.0.2", zoneHints("zone-c")), ep("10.0.0.3", zoneHints("zone-a"), notReady),
			},
			cluster: []string{e0},
		},
		{
			name: "only unready endpoints in this zone: no filtering",
			svc:  opts(distribution(corev1.ServiceTrafficDistributionPreferClose)),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a"), notReady), ep("10.0.0.1", zoneHints("zone-b")),
				ep("10.0.0.2", zoneHints("zone-c")), ep("10.0.0.3", zoneHints("zone-a"), notReady),
			},
			cluster: []string{e1, e2},
		},
		{
			name: "several hints per endpoint",
			svc:  opts(distribution(corev1.ServiceTrafficDistributionPreferClose)),
			node: &Node{Name: "node-a", Zone: "zone-c"},
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a", "zone-b", "zone-c")), ep("10.0.0.1", zoneHints("zone-b", "zone-c")),
				ep("10.0.0.2", zoneHints("zone-b", "zone-d")), ep("10.0.0.3", zoneHints("zone-c")),
			},
			cluster: []string{e0, e1, e3},
		},
		{
			name: "PreferSameNode: node hints",
			svc:  opts(distribution(corev1.ServiceTrafficDistributionPreferSameNode)),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", nodeHints("node-a"), zoneHints("zone-a")),
				ep("10.0.0.1", nodeHints("node-b"), zoneHints("zone-a")),
				ep("10.0.0.2", nodeHints("node-c"), zoneHints("zone-b")),
			},
			cluster: []string{e0},
		},
		{
			name: "PreferSameNode: no hint for this node falls back to zone hints",
			svc:  opts(distribution(corev1.ServiceTrafficDistributionPreferSameNode)),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", nodeHints("node-x"), zoneHints("zone-a")),
				ep("10.0.0.1", nodeHints("node-b"), zoneHints("zone-a")),
				ep("10.0.0.2", nodeHints("node-c"), zoneHints("zone-b")),
			},
			cluster: []string{e0, e1},
		},
		{
			name: "PreferClose ignores node hints",
			svc:  opts(distribution(corev1.ServiceTrafficDistributionPreferClose)),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", nodeHints("node-a"), zoneHints("zone-a")),
				ep("10.0.0.1", nodeHints("node-b"), zoneHints("zone-a")),
				ep("10.0.0.2", nodeHints("node-c"), zoneHints("zone-b")),
			},
			cluster: []string{e0, e1},
		},
		{
			name: "externalTrafficPolicy Local: topology applies to Cluster, not to local endpoints",
			svc:  opts(withType(corev1.ServiceTypeNodePort), externalLocal, distribution(corev1.ServiceTrafficDistributionPreferClose)),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a"), local), ep("10.0.0.1", zoneHints("zone-b"), local),
				ep("10.0.0.2", zoneHints("zone-c")), ep("10.0.0.3", zoneHints("zone-a")),
			},
			cluster:  []string{e0, e3},
			external: []string{e0, e1},
		},
		{
			name: "internalTrafficPolicy Local: topology does not apply to local endpoints",
			svc:  opts(withType(corev1.ServiceTypeNodePort), internalLocal, distribution(corev1.ServiceTrafficDistributionPreferClose)),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0", zoneHints("zone-a"), local), ep("10.0.0.1", zoneHints("zone-b"), local),
				ep("10.0.0.2", zoneHints("zone-c")), ep("10.0.0.3", zoneHints("zone-a")),
			},
			cluster:  []string{e0, e1},
			external: []string{e0, e3},
		},

		// Ready, serving, terminating.
		{
			name:    "some endpoints ready: the ready ones",
			eps:     []discoveryv1.Endpoint{ep("10.0.0.0", notReady), ep("10.0.0.1")},
			cluster: []string{e1},
		},
		{
			name:           "no endpoint ready and none terminating: reject",
			eps:            []discoveryv1.Endpoint{ep("10.0.0.0", notReady), ep("10.0.0.1", notReady)},
			cluster:        []string{},
			clusterVerdict: Reject, externalVerdict: Reject,
		},
		{
			name:    "all terminating and serving: fall back to them",
			eps:     []discoveryv1.Endpoint{ep("10.0.0.0", terminating, local), ep("10.0.0.1", terminating)},
			cluster: []string{e0, e1},
		},
		{
			name:    "terminating endpoints are not used while one is ready",
			eps:     []discoveryv1.Endpoint{ep("10.0.0.0", terminating), ep("10.0.0.1")},
			cluster: []string{e1},
		},
		{
			name:           "terminating and not serving: never used",
			eps:            []discoveryv1.Endpoint{ep("10.0.0.0", gone), ep("10.0.0.1", gone)},
			cluster:        []string{},
			clusterVerdict: Reject, externalVerdict: Reject,
		},
		{
			name:    "ready but not serving counts as ready (ready wins, as in kube-proxy)",
			eps:     []discoveryv1.Endpoint{ep("10.0.0.0", conds(true, false, false)), ep("10.0.0.1", gone)},
			cluster: []string{e0},
		},
		{
			name: "nil conditions: ready nil = ready, serving nil = serving, terminating nil = not",
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0"),
				ep("10.0.0.1", func(e *discoveryv1.Endpoint) {
					e.Conditions = discoveryv1.EndpointConditions{Ready: ptr(false), Terminating: ptr(true)}
				}),
			},
			cluster: []string{e0},
		},
		{
			name: "serving nil means serving: a terminating endpoint is a fallback",
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.1", func(e *discoveryv1.Endpoint) {
					e.Conditions = discoveryv1.EndpointConditions{Ready: ptr(false), Terminating: ptr(true)}
				}),
			},
			cluster: []string{e1},
		},
		{
			name:           "no endpoints at all: reject",
			cluster:        []string{},
			clusterVerdict: Reject, externalVerdict: Reject,
		},

		// internalTrafficPolicy: Local.
		{
			name:           "iTP Local, no endpoints: reject",
			svc:            opts(internalLocal),
			cluster:        []string{},
			clusterVerdict: Reject,
			external:       []string{}, externalVerdict: Reject,
		},
		{
			name:           "iTP Local, all endpoints remote: drop",
			svc:            opts(internalLocal),
			eps:            []discoveryv1.Endpoint{ep("10.0.0.0"), ep("10.0.0.1")},
			cluster:        []string{},
			clusterVerdict: Drop,
			external:       []string{e0, e1},
		},
		{
			name:     "iTP Local, all endpoints local",
			svc:      opts(internalLocal),
			eps:      []discoveryv1.Endpoint{ep("10.0.0.0", local), ep("10.0.0.1", local)},
			cluster:  []string{e0, e1},
			external: []string{e0, e1},
		},
		{
			name:     "iTP Local, some endpoints local",
			svc:      opts(internalLocal),
			eps:      []discoveryv1.Endpoint{ep("10.0.0.0", local), ep("10.0.0.1")},
			cluster:  []string{e0},
			external: []string{e0, e1},
		},
		{
			name:     "iTP Local: local fallback decided apart from the cluster's",
			svc:      opts(internalLocal),
			eps:      []discoveryv1.Endpoint{ep("10.0.0.0", local, terminating), ep("10.0.0.1")},
			cluster:  []string{e0},
			external: []string{e1},
		},
		{
			name:     "iTP Local, eTP Cluster on a NodePort",
			svc:      opts(withType(corev1.ServiceTypeNodePort), internalLocal),
			eps:      []discoveryv1.Endpoint{ep("10.0.0.0", local), ep("10.0.0.1")},
			cluster:  []string{e0},
			external: []string{e0, e1},
		},

		// externalTrafficPolicy: Local.
		{
			name:     "iTP Cluster, eTP Local, some endpoints local",
			svc:      opts(withType(corev1.ServiceTypeNodePort), externalLocal),
			eps:      []discoveryv1.Endpoint{ep("10.0.0.0", local), ep("10.0.0.1")},
			cluster:  []string{e0, e1},
			external: []string{e0},
		},
		{
			name:     "iTP Local, eTP Local, some endpoints local",
			svc:      opts(withType(corev1.ServiceTypeLoadBalancer), internalLocal, externalLocal),
			eps:      []discoveryv1.Endpoint{ep("10.0.0.0", local), ep("10.0.0.1")},
			cluster:  []string{e0},
			external: []string{e0},
		},
		{
			name:           "iTP Local, eTP Local, all endpoints remote: drop both",
			svc:            opts(withType(corev1.ServiceTypeNodePort), internalLocal, externalLocal),
			eps:            []discoveryv1.Endpoint{ep("10.0.0.0"), ep("10.0.0.1")},
			cluster:        []string{},
			clusterVerdict: Drop,
			external:       []string{}, externalVerdict: Drop,
		},
		{
			name:           "iTP Local, eTP Local, all endpoints remote and terminating: drop both",
			svc:            opts(withType(corev1.ServiceTypeNodePort), internalLocal, externalLocal),
			eps:            []discoveryv1.Endpoint{ep("10.0.0.0", terminating), ep("10.0.0.1", terminating)},
			cluster:        []string{},
			clusterVerdict: Drop,
			external:       []string{}, externalVerdict: Drop,
		},
		{
			name:           "eTP Local, endpoints elsewhere: external drop, cluster forward",
			svc:            opts(withType(corev1.ServiceTypeLoadBalancer), externalLocal),
			eps:            []discoveryv1.Endpoint{ep("10.0.0.0"), ep("10.0.0.1")},
			cluster:        []string{e0, e1},
			clusterVerdict: Forward,
			external:       []string{}, externalVerdict: Drop,
		},
		{
			name: "iTP Cluster, eTP Local, with terminating endpoints",
			svc:  opts(withType(corev1.ServiceTypeNodePort), externalLocal),
			eps: []discoveryv1.Endpoint{
				ep("10.0.0.0"), ep("10.0.0.1", notReady, local),
				ep("10.0.0.2", terminating, local), ep("10.0.0.3", terminating),
			},
			cluster:  []string{e0},
			external: []string{e2},
		},
		{
			name:     "eTP Local is ignored on a ClusterIP Service without externalIPs",
			svc:      opts(externalLocal),
			eps:      []discoveryv1.Endpoint{ep("10.0.0.0"), ep("10.0.0.1", local)},
			cluster:  []string{e0, e1},
			external: []string{e0, e1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{Services: []*corev1.Service{service("web", tc.svc...)}}
			if len(tc.eps) > 0 {
				objs.EndpointSlices = append(objs.EndpointSlices, endpointSlice("web", "web-1", nil, tc.eps...))
			}
			node := thisNode
			if tc.node != nil {
				node = *tc.node
			}
			p := mustService(t, Translate(objs, node), "web").Ports[0]
			if tc.external == nil {
				tc.external = tc.cluster
			}
			if len(tc.cluster) == 0 && tc.clusterVerdict == Forward {
				t.Fatal("bad test: empty cluster set must have a Drop or Reject verdict")
			}
			check := func(what string, set EndpointSet, want []string, verdict Verdict) {
				t.Helper()
				if got := addrPorts(set.Endpoints); !reflect.DeepEqual(got, want) {
					t.Errorf("%s endpoints = %v, want %v", what, got, want)
				}
				if set.Verdict != verdict {
					t.Errorf("%s verdict = %v, want %v", what, set.Verdict, verdict)
				}
				if set.IPv4Verdict != verdict || set.IPv6Verdict != Reject {
					t.Errorf("%s family verdicts = %v/%v, want %v/reject", what, set.IPv4Verdict, set.IPv6Verdict, verdict)
				}
			}
			check("cluster", p.Cluster, tc.cluster, tc.clusterVerdict)
			check("external", p.External, tc.external, tc.externalVerdict)
		})
	}
}

func opts(o ...func(*corev1.Service)) []func(*corev1.Service) { return o }

func TestServiceFields(t *testing.T) {
	tests := []struct {
		name  string
		svc   *corev1.Service
		check func(t *testing.T, s *Service)
	}{
		{
			name: "ClusterIP defaults",
			svc:  service("web", func(s *corev1.Service) { s.Spec.Type = "" }),
			check: func(t *testing.T, s *Service) {
				want := &Service{
					Key: ServiceKey{testNS, "web"}, Type: ClusterIP,
					ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
				}
				s2 := *s
				s2.Ports, s2.Policy = nil, nil
				if !reflect.DeepEqual(&s2, want) {
					t.Errorf("got %+v, want %+v", s2, *want)
				}
				if !s.Proxied() {
					t.Error("not proxied")
				}
			},
		},
		{
			// kube-proxy's rule (e2e "should implement service.kubernetes.io/service-proxy-name"):
			// a Service another proxy serves is not programmed, but keeps its ClusterIP for DNS.
			name: "service-proxy-name label",
			svc: service("other", func(s *corev1.Service) {
				s.Labels = map[string]string{LabelServiceProxyName: "foo-bar"}
			}),
			check: func(t *testing.T, s *Service) {
				if !s.ProxiedElsewhere || s.Proxied() || len(s.ClusterIPs) != 1 {
					t.Errorf("proxiedElsewhere=%v proxied=%v clusterIPs=%v", s.ProxiedElsewhere, s.Proxied(), s.ClusterIPs)
				}
			},
		},
		{
			// kube-proxy's rule (e2e "should implement service.kubernetes.io/headless"): a
			// Service labelled headless is not programmed, whatever its ClusterIP.
			name: "headless label",
			svc: service("other", func(s *corev1.Service) {
				s.Labels = map[string]string{LabelHeadless: ""}
			}),
			check: func(t *testing.T, s *Service) {
				if !s.ProxiedElsewhere || s.Proxied() || len(s.ClusterIPs) != 1 {
					t.Errorf("proxiedElsewhere=%v proxied=%v clusterIPs=%v", s.ProxiedElsewhere, s.Proxied(), s.ClusterIPs)
				}
			},
		},
		{
			name: "headless",
			svc:  service("db", withClusterIPs("None")),
			check: func(t *testing.T, s *Service) {
				if !s.Headless || s.Proxied() || len(s.ClusterIPs) != 0 {
					t.Errorf("headless=%v proxied=%v clusterIPs=%v", s.Headless, s.Proxied(), s.ClusterIPs)
				}
			},
		},
		{
			name: "ExternalName",
			svc: service("ext", func(s *corev1.Service) {
				s.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com"}
			}),
			check: func(t *testing.T, s *Service) {
				if s.Type != ExternalName || s.ExternalName != "db.example.com" || s.Proxied() || s.Headless {
					t.Errorf("got type=%s name=%q proxied=%v headless=%v", s.Type, s.ExternalName, s.Proxied(), s.Headless)
				}
			},
		},
		{
			name: "ClusterIP from clusterIP when clusterIPs is unset",
			svc:  service("web", func(s *corev1.Service) { s.Spec.ClusterIPs = nil; s.Spec.ClusterIP = "10.96.0.7" }),
			check: func(t *testing.T, s *Service) {
				if want := []netip.Addr{netip.MustParseAddr("10.96.0.7")}; !reflect.DeepEqual(s.ClusterIPs, want) {
					t.Errorf("ClusterIPs = %v, want %v", s.ClusterIPs, want)
				}
			},
		},
		{
			name: "externalIPs of the Service's families, invalid skipped",
			svc: service("web", withClusterIPs("10.96.0.10"), func(s *corev1.Service) {
				s.Spec.ExternalIPs = []string{"192.0.2.1", "2001:db8::1", "bogus", "192.0.2.2", "192.0.2.1"}
			}),
			check: func(t *testing.T, s *Service) {
				want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}
				if !reflect.DeepEqual(s.ExternalIPs, want) {
					t.Errorf("ExternalIPs = %v, want %v", s.ExternalIPs, want)
				}
			},
		},
		{
			name: "LoadBalancer: ingress IPs in VIP mode, source ranges, health check node port",
			svc: service("lb", withType(corev1.ServiceTypeLoadBalancer), externalLocal, func(s *corev1.Service) {
				s.Spec.HealthCheckNodePort = 32000
				s.Spec.LoadBalancerSourceRanges = []string{" 10.0.0.0/8", "192.168.1.7/24 "}
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
					{IP: "198.51.100.1"},
					{IP: "198.51.100.2", IPMode: ptr(corev1.LoadBalancerIPModeVIP)},
					{IP: "198.51.100.3", IPMode: ptr(corev1.LoadBalancerIPModeProxy)},
					{Hostname: "lb.example.com"},
				}
			}),
			check: func(t *testing.T, s *Service) {
				wantIPs := []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")}
				if !reflect.DeepEqual(s.LoadBalancerIPs, wantIPs) {
					t.Errorf("LoadBalancerIPs = %v, want %v", s.LoadBalancerIPs, wantIPs)
				}
				wantRanges := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.0/24")}
				if !reflect.DeepEqual(s.LoadBalancerSourceRanges, wantRanges) {
					t.Errorf("LoadBalancerSourceRanges = %v, want %v", s.LoadBalancerSourceRanges, wantRanges)
				}
				if !s.ExternalTrafficLocal || s.HealthCheckNodePort != 32000 {
					t.Errorf("ExternalTrafficLocal=%v HealthCheckNodePort=%d", s.ExternalTrafficLocal, s.HealthCheckNodePort)
				}
				if s.Ports[0].NodePort != 30000 {
					t.Errorf("NodePort = %d", s.Ports[0].NodePort)
				}
			},
		},
		{
			name: "source ranges from the annotation when the field is empty",
			svc: service("lb", withType(corev1.ServiceTypeLoadBalancer),
				annotate(corev1.AnnotationLoadBalancerSourceRangesKey, "203.0.113.0/24, 2001:db8::/32 ,junk")),
			check: func(t *testing.T, s *Service) {
				want := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")}
				if !reflect.DeepEqual(s.LoadBalancerSourceRanges, want) {
					t.Errorf("LoadBalancerSourceRanges = %v, want %v", s.LoadBalancerSourceRanges, want)
				}
			},
		},
		{
			name: "the field wins over the annotation",
			svc: service("lb", withType(corev1.ServiceTypeLoadBalancer),
				annotate(corev1.AnnotationLoadBalancerSourceRangesKey, "203.0.113.0/24"),
				func(s *corev1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"10.1.0.0/16"} }),
			check: func(t *testing.T, s *Service) {
				if want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}; !reflect.DeepEqual(s.LoadBalancerSourceRanges, want) {
					t.Errorf("LoadBalancerSourceRanges = %v, want %v", s.LoadBalancerSourceRanges, want)
				}
			},
		},
		{
			name: "no health check node port without eTP Local, no node ports on ClusterIP",
			svc: service("web", externalLocal, func(s *corev1.Service) {
				s.Spec.HealthCheckNodePort = 32000
				s.Spec.Ports[0].NodePort = 30080
			}),
			check: func(t *testing.T, s *Service) {
				if s.HealthCheckNodePort != 0 || s.ExternalTrafficLocal || s.Ports[0].NodePort != 0 {
					t.Errorf("HealthCheckNodePort=%d ExternalTrafficLocal=%v NodePort=%d", s.HealthCheckNodePort, s.ExternalTrafficLocal, s.Ports[0].NodePort)
				}
			},
		},
		{
			name: "ClientIP affinity default timeout",
			svc:  service("web", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }),
			check: func(t *testing.T, s *Service) {
				if s.AffinityTimeout != 10800*time.Second {
					t.Errorf("AffinityTimeout = %v", s.AffinityTimeout)
				}
			},
		},
		{
			name: "ClientIP affinity explicit timeout",
			svc: service("web", func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(60))}}
			}),
			check: func(t *testing.T, s *Service) {
				if s.AffinityTimeout != time.Minute {
					t.Errorf("AffinityTimeout = %v", s.AffinityTimeout)
				}
			},
		},
		{
			name: "no affinity",
			svc:  service("web", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityNone }),
			check: func(t *testing.T, s *Service) {
				if s.AffinityTimeout != 0 {
					t.Errorf("AffinityTimeout = %v", s.AffinityTimeout)
				}
			},
		},
		{
			name: "traffic policies and publishNotReadyAddresses",
			svc: service("np", withType(corev1.ServiceTypeNodePort), internalLocal, externalLocal,
				func(s *corev1.Service) { s.Spec.PublishNotReadyAddresses = true }),
			check: func(t *testing.T, s *Service) {
				if !s.InternalTrafficLocal || !s.ExternalTrafficLocal || !s.PublishNotReadyAddresses || s.HealthCheckNodePort != 0 {
					t.Errorf("got %+v", s)
				}
			},
		},
		{
			name: "ports: name, protocol default TCP, port, appProtocol",
			svc: service("web", withType(corev1.ServiceTypeNodePort), withPorts(
				corev1.ServicePort{Name: "http", Port: 80, AppProtocol: ptr("kubernetes.io/h2c")},
				corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
				corev1.ServicePort{Name: "sctp", Protocol: corev1.ProtocolSCTP, Port: 9},
			), func(s *corev1.Service) {
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.Ports[1].NodePort = 30053
			}),
			check: func(t *testing.T, s *Service) {
				type port struct {
					name  string
					proto Protocol
					port  int32
					node  int32
					app   string
				}
				var got []port
				for _, p := range s.Ports {
					got = append(got, port{p.Name, p.Protocol, p.Port, p.NodePort, p.AppProtocol})
				}
				want := []port{{"http", TCP, 80, 30080, "kubernetes.io/h2c"}, {"dns", UDP, 53, 30053, ""}, {"sctp", SCTP, 9, 0, ""}}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("ports = %+v, want %+v", got, want)
				}
				if id := s.Ports[1].ID(s.Key); id != "ns/web:dns" {
					t.Errorf("ID = %q", id)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			snap := Translate(&Objects{Services: []*corev1.Service{tc.svc}}, thisNode)
			if len(snap.Services) != 1 {
				t.Fatalf("got %d services", len(snap.Services))
			}
			tc.check(t, snap.Services[0])
		})
	}
}

// TestPortMatching: slice ports match Service ports by name and protocol, never by
// number; the endpoint port is the slice port's number (targetPort already resolved).
func TestPortMatching(t *testing.T) {
	svc := service("web", withPorts(
		corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80},
		corev1.ServicePort{Name: "metrics", Protocol: corev1.ProtocolTCP, Port: 9090},
		corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
		corev1.ServicePort{Name: "none", Protocol: corev1.ProtocolTCP, Port: 81},
	))
	dnsTCP := slicePort("dns", 5353) // same name, other protocol: not the UDP port
	dnsUDP := slicePort("dns", 1053)
	dnsUDP.Protocol = ptr(corev1.ProtocolUDP)
	objs := &Objects{
		Services: []*corev1.Service{svc},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			// Ports listed in another order than the Service's.
			endpointSlice("web", "web-a", []discoveryv1.EndpointPort{slicePort("metrics", 9100), slicePort("http", 8080), dnsTCP},
				ep("10.0.0.1"), ep("10.0.0.2")),
			// A second slice with only some of the ports.
			endpointSlice("web", "web-b", []discoveryv1.EndpointPort{slicePort("http", 8081), dnsUDP},
				ep("10.0.0.3")),
			// Port 81 is named "none" in the Service; a slice port numbered 81 with another
			// name does not match it.
			endpointSlice("web", "web-c", []discoveryv1.EndpointPort{slicePort("other", 81)}, ep("10.0.0.4")),
		},
	}
	s := mustService(t, Translate(objs, thisNode), "web")
	want := map[string][]string{
		"http":    {"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8081"},
		"metrics": {"10.0.0.1:9100", "10.0.0.2:9100"},
		"dns":     {"10.0.0.3:1053"},
		"none":    {},
	}
	for _, p := range s.Ports {
		if got := addrPorts(p.Cluster.Endpoints); !reflect.DeepEqual(got, want[p.Name]) {
			t.Errorf("port %s: cluster = %v, want %v", p.Name, got, want[p.Name])
		}
	}
	if v := s.Ports[3].Cluster.Verdict; v != Reject {
		t.Errorf("port without endpoints: verdict %v, want reject", v)
	}
}

func TestUnnamedPort(t *testing.T) {
	tests := []struct {
		name string
		port discoveryv1.EndpointPort
		want []string
	}{
		{"empty name", slicePort("", 8080), []string{"10.0.0.1:8080"}},
		{"nil name (hand-written slice)", discoveryv1.EndpointPort{Port: ptr(int32(8080))}, []string{"10.0.0.1:8080"}},
		{"named slice port does not match", slicePort("http", 8080), []string{}},
		{"nil port number is skipped", discoveryv1.EndpointPort{Name: ptr("")}, []string{}},
		{"zero port number is skipped", slicePort("", 0), []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{
				Services:       []*corev1.Service{service("web", withPorts(corev1.ServicePort{Port: 80}))},
				EndpointSlices: []*discoveryv1.EndpointSlice{endpointSlice("web", "web-1", []discoveryv1.EndpointPort{tc.port}, ep("10.0.0.1"))},
			}
			p := mustService(t, Translate(objs, thisNode), "web").Ports[0]
			if got := addrPorts(p.Cluster.Endpoints); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("cluster = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSliceSelection(t *testing.T) {
	unlabelled := endpointSlice("web", "web-x", nil, ep("10.0.0.9"))
	unlabelled.Labels = nil
	otherNS := endpointSlice("web", "web-y", nil, ep("10.0.0.8"))
	otherNS.Namespace = "elsewhere"
	fqdn := endpointSlice("web", "web-z", nil, ep("backend.example.com"))
	fqdn.AddressType = discoveryv1.AddressTypeFQDN
	mislabelled := endpointSlice("web", "web-w", nil, ep("2001:db8::1"))
	mislabelled.AddressType = discoveryv1.AddressTypeIPv4 // an IPv6 address in an IPv4 slice
	objs := &Objects{
		Services: []*corev1.Service{service("web"), service("api")},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			endpointSlice("web", "web-1", nil, ep("10.0.0.1"), ep("not-an-ip"), discoveryv1.Endpoint{}),
			endpointSlice("api", "api-1", nil, ep("10.0.1.1")),
			endpointSlice("gone", "gone-1", nil, ep("10.0.2.1")),
			unlabelled, otherNS, fqdn, mislabelled,
		},
	}
	snap := Translate(objs, thisNode)
	if got := addrPorts(mustService(t, snap, "web").Ports[0].Endpoints); !reflect.DeepEqual(got, []string{"10.0.0.1:8080"}) {
		t.Errorf("web endpoints = %v", got)
	}
	if got := addrPorts(mustService(t, snap, "api").Ports[0].Endpoints); !reflect.DeepEqual(got, []string{"10.0.1.1:8080"}) {
		t.Errorf("api endpoints = %v", got)
	}
}

func TestDedupe(t *testing.T) {
	tests := []struct {
		name   string
		slices []*discoveryv1.EndpointSlice
		want   Endpoint // the one endpoint kept
	}{
		{
			name: "ready wins over not ready",
			slices: []*discoveryv1.EndpointSlice{
				withWeight(endpointSlice("web", "a", nil, ep("10.0.0.1", notReady)), "2"),
				withWeight(endpointSlice("web", "b", nil, ep("10.0.0.1")), "5"),
			},
			want: Endpoint{Ready: true, Serving: true, NodeName: "node-b", Weight: 5},
		},
		{
			name: "not terminating wins over terminating (a reused pod IP)",
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("web", "a", nil, ep("10.0.0.1", terminating, hostname("old"))),
				endpointSlice("web", "b", nil, ep("10.0.0.1", notReady, hostname("new"))),
			},
			want: Endpoint{Hostname: "new", NodeName: "node-b", Weight: 1},
		},
		{
			name: "local wins among equals",
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("web", "a", nil, ep("10.0.0.1")),
				endpointSlice("web", "b", nil, ep("10.0.0.1", local)),
			},
			want: Endpoint{Ready: true, Serving: true, NodeName: "node-a", Local: true, Weight: 1},
		},
		{
			name: "first slice by name among equals",
			slices: []*discoveryv1.EndpointSlice{
				withWeight(endpointSlice("web", "b", nil, ep("10.0.0.1")), "7"),
				withWeight(endpointSlice("web", "a", nil, ep("10.0.0.1")), "3"),
			},
			want: Endpoint{Ready: true, Serving: true, NodeName: "node-b", Weight: 3},
		},
		{
			name: "duplicate inside one slice",
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("web", "a", nil, ep("10.0.0.1", notReady), ep("10.0.0.1")),
			},
			want: Endpoint{Ready: true, Serving: true, NodeName: "node-b", Weight: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{Services: []*corev1.Service{service("web")}, EndpointSlices: tc.slices}
			p := mustService(t, Translate(objs, thisNode), "web").Ports[0]
			tc.want.Addr, tc.want.Port = netip.MustParseAddr("10.0.0.1"), 8080
			if len(p.Endpoints) != 1 || !reflect.DeepEqual(p.Endpoints[0], tc.want) {
				t.Errorf("endpoints = %+v, want [%+v]", p.Endpoints, tc.want)
			}
		})
	}
}

func TestWeights(t *testing.T) {
	tests := []struct {
		annotation string
		want       uint32
	}{
		{"", 1}, {"1", 1}, {"99", 99}, {" 3 ", 3}, {"0", 1}, {"-2", 1}, {"1.5", 1}, {"x", 1}, {"4294967296", 1},
	}
	for _, tc := range tests {
		s := endpointSlice("web", "web-1", nil, ep("10.0.0.1"))
		if tc.annotation != "" {
			withWeight(s, tc.annotation)
		}
		objs := &Objects{Services: []*corev1.Service{service("web")}, EndpointSlices: []*discoveryv1.EndpointSlice{s}}
		p := mustService(t, Translate(objs, thisNode), "web").Ports[0]
		if got := p.Cluster.Endpoints[0].Weight; got != tc.want {
			t.Errorf("weight annotation %q: weight %d, want %d", tc.annotation, got, tc.want)
		}
	}

	// A canary slice beside a stable one: each endpoint carries its slice's weight.
	objs := &Objects{
		Services: []*corev1.Service{service("web")},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			withWeight(endpointSlice("web", "web-stable", nil, ep("10.0.0.1"), ep("10.0.0.2")), "99"),
			withWeight(endpointSlice("web", "web-canary", nil, ep("10.0.0.3")), "1"),
		},
	}
	var got []uint32
	for _, e := range mustService(t, Translate(objs, thisNode), "web").Ports[0].Cluster.Endpoints {
		got = append(got, e.Weight)
	}
	if want := []uint32{99, 99, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("weights = %v, want %v", got, want)
	}
}

func TestEndpointAttributes(t *testing.T) {
	objs := &Objects{
		Services: []*corev1.Service{service("web")},
		EndpointSlices: []*discoveryv1.EndpointSlice{endpointSlice("web", "web-1", nil,
			ep("10.0.0.1", local, hostname("web-0"), func(e *discoveryv1.Endpoint) { e.Zone = ptr("zone-a") }),
			ep("010.000.000.002", func(e *discoveryv1.Endpoint) { e.NodeName = nil }), // leading zeros, as ParseIPSloppy allows
		)},
	}
	got := mustService(t, Translate(objs, thisNode), "web").Ports[0].Endpoints
	want := []Endpoint{
		{Addr: netip.MustParseAddr("10.0.0.1"), Port: 8080, Ready: true, Serving: true, Hostname: "web-0", NodeName: "node-a", Zone: "zone-a", Local: true, Weight: 1},
		{Addr: netip.MustParseAddr("10.0.0.2"), Port: 8080, Ready: true, Serving: true, Weight: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints =\n%+v\nwant\n%+v", got, want)
	}
	// With no node name, nothing is local.
	got = mustService(t, Translate(objs, Node{}), "web").Ports[0].Endpoints
	if got[0].Local {
		t.Error("endpoint local to a node without a name")
	}
}

func TestIPFamilies(t *testing.T) {
	tests := []struct {
		name    string
		svc     *corev1.Service
		slices  []*discoveryv1.EndpointSlice
		cluster []string
		verdict [3]Verdict // combined, IPv4, IPv6
		v4, v6  []string   // ForFamily
	}{
		{
			name:    "IPv6 single stack",
			svc:     service("web", withClusterIPs("fd00::10")),
			slices:  []*discoveryv1.EndpointSlice{endpointSlice("web", "web-1", nil, ep("fd00:1::2"), ep("fd00:1::1"))},
			cluster: []string{"[fd00:1::1]:8080", "[fd00:1::2]:8080"},
			verdict: [3]Verdict{Forward, Reject, Forward},
			v4:      []string{}, v6: []string{"[fd00:1::1]:8080", "[fd00:1::2]:8080"},
		},
		{
			name: "dual stack: IPv4 first, then IPv6",
			svc:  service("web", withClusterIPs("10.96.0.10", "fd00::10")),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("web", "web-v6", nil, ep("fd00:1::1")),
				endpointSlice("web", "web-v4", nil, ep("10.0.0.1")),
			},
			cluster: []string{"10.0.0.1:8080", "[fd00:1::1]:8080"},
			verdict: [3]Verdict{Forward, Forward, Forward},
			v4:      []string{"10.0.0.1:8080"}, v6: []string{"[fd00:1::1]:8080"},
		},
		{
			name: "dual stack: terminating fallback decided per family",
			svc:  service("web", withClusterIPs("10.96.0.10", "fd00::10")),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("web", "web-v4", nil, ep("10.0.0.1"), ep("10.0.0.2", terminating)),
				endpointSlice("web", "web-v6", nil, ep("fd00:1::1", notReady), ep("fd00:1::2", terminating)),
			},
			cluster: []string{"10.0.0.1:8080", "[fd00:1::2]:8080"},
			verdict: [3]Verdict{Forward, Forward, Forward},
			v4:      []string{"10.0.0.1:8080"}, v6: []string{"[fd00:1::2]:8080"},
		},
		{
			name:    "dual stack: IPv6 without endpoints rejects while IPv4 forwards",
			svc:     service("web", withClusterIPs("10.96.0.10", "fd00::10")),
			slices:  []*discoveryv1.EndpointSlice{endpointSlice("web", "web-v4", nil, ep("10.0.0.1"))},
			cluster: []string{"10.0.0.1:8080"},
			verdict: [3]Verdict{Forward, Forward, Reject},
			v4:      []string{"10.0.0.1:8080"}, v6: []string{},
		},
		{
			name: "dual stack, iTP Local: IPv4 drops, IPv6 forwards",
			svc:  service("web", withClusterIPs("10.96.0.10", "fd00::10"), internalLocal),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("web", "web-v4", nil, ep("10.0.0.1")),
				endpointSlice("web", "web-v6", nil, ep("fd00:1::1", local)),
			},
			cluster: []string{"[fd00:1::1]:8080"},
			verdict: [3]Verdict{Forward, Drop, Forward},
			v4:      []string{}, v6: []string{"[fd00:1::1]:8080"},
		},
		{
			name: "dual stack, iTP Local, nothing local: drop",
			svc:  service("web", withClusterIPs("10.96.0.10", "fd00::10"), internalLocal),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("web", "web-v4", nil, ep("10.0.0.1")),
			},
			cluster: []string{},
			verdict: [3]Verdict{Drop, Drop, Reject},
			v4:      []string{}, v6: []string{},
		},
		{
			name: "IPv4 single stack ignores IPv6 endpoints",
			svc:  service("web"),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("web", "web-v4", nil, ep("10.0.0.1")),
				endpointSlice("web", "web-v6", nil, ep("fd00:1::1")),
			},
			cluster: []string{"10.0.0.1:8080"},
			verdict: [3]Verdict{Forward, Forward, Reject},
			v4:      []string{"10.0.0.1:8080"}, v6: []string{},
		},
		{
			name: "no ClusterIP: families from spec.ipFamilies",
			svc: service("web", func(s *corev1.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil
				s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
			}),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("web", "web-v4", nil, ep("10.0.0.1")),
				endpointSlice("web", "web-v6", nil, ep("fd00:1::1")),
			},
			cluster: []string{"[fd00:1::1]:8080"},
			verdict: [3]Verdict{Forward, Reject, Forward},
			v4:      []string{}, v6: []string{"[fd00:1::1]:8080"},
		},
		{
			name: "no ClusterIP and no ipFamilies: both",
			svc:  service("web", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil }),
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("web", "web-v4", nil, ep("10.0.0.1")),
				endpointSlice("web", "web-v6", nil, ep("fd00:1::1")),
			},
			cluster: []string{"10.0.0.1:8080", "[fd00:1::1]:8080"},
			verdict: [3]Verdict{Forward, Forward, Forward},
			v4:      []string{"10.0.0.1:8080"}, v6: []string{"[fd00:1::1]:8080"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{Services: []*corev1.Service{tc.svc}, EndpointSlices: tc.slices}
			c := mustService(t, Translate(objs, thisNode), "web").Ports[0].Cluster
			if got := addrPorts(c.Endpoints); !reflect.DeepEqual(got, tc.cluster) {
				t.Errorf("cluster = %v, want %v", got, tc.cluster)
			}
			if got := [3]Verdict{c.Verdict, c.IPv4Verdict, c.IPv6Verdict}; got != tc.verdict {
				t.Errorf("verdicts = %v, want %v", got, tc.verdict)
			}
			v4, v6 := c.ForFamily(false), c.ForFamily(true)
			if got := addrPorts(v4.Endpoints); !reflect.DeepEqual(got, tc.v4) {
				t.Errorf("ForFamily(IPv4) = %v, want %v", got, tc.v4)
			}
			if got := addrPorts(v6.Endpoints); !reflect.DeepEqual(got, tc.v6) {
				t.Errorf("ForFamily(IPv6) = %v, want %v", got, tc.v6)
			}
			if v4.Verdict != tc.verdict[1] || v6.Verdict != tc.verdict[2] {
				t.Errorf("ForFamily verdicts = %v/%v, want %v/%v", v4.Verdict, v6.Verdict, tc.verdict[1], tc.verdict[2])
			}
		})
	}
}

func TestLocalEndpointsCount(t *testing.T) {
	svc := service("lb", withType(corev1.ServiceTypeLoadBalancer), externalLocal, withPorts(
		corev1.ServicePort{Name: "http", Port: 80}, corev1.ServicePort{Name: "https", Port: 443},
	))
	objs := &Objects{
		Services: []*corev1.Service{svc},
		EndpointSlices: []*discoveryv1.EndpointSlice{endpointSlice("lb", "lb-1",
			[]discoveryv1.EndpointPort{slicePort("http", 8080), slicePort("https", 8443)},
			ep("10.0.0.1", local), ep("10.0.0.2", local), ep("10.0.0.3", local, terminating), ep("10.0.0.4"),
		)},
	}
	// Two local ready addresses, each serving two ports: 2, as kube-proxy counts.
	if got := mustService(t, Translate(objs, thisNode), "lb").LocalEndpoints; got != 2 {
		t.Errorf("LocalEndpoints = %d, want 2", got)
	}
}

func TestDNSEndpoints(t *testing.T) {
	slices := []*discoveryv1.EndpointSlice{
		endpointSlice("db", "db-1", nil,
			ep("10.0.0.3", hostname("db-2"), notReady),
			ep("10.0.0.1", hostname("db-0")),
			ep("10.0.0.2", hostname("db-1")),
			ep("10.0.0.4", func(e *discoveryv1.Endpoint) { e.Addresses = []string{"10.0.0.4", "10.0.0.5"} }),
		),
		// The same address again, without a hostname: the entry with one is kept.
		endpointSlice("db", "db-2", nil, ep("10.0.0.1")),
	}
	dns := func(addr, host string, ready bool) DNSEndpoint {
		return DNSEndpoint{Addr: netip.MustParseAddr(addr), Hostname: host, Ready: ready}
	}
	tests := []struct {
		name string
		svc  *corev1.Service
		want []DNSEndpoint
	}{
		{
			name: "ready endpoints, one per address, hostnames kept",
			svc:  service("db", withClusterIPs("None")),
			want: []DNSEndpoint{dns("10.0.0.1", "db-0", true), dns("10.0.0.2", "db-1", true), dns("10.0.0.4", "", true), dns("10.0.0.5", "", true)},
		},
		{
			name: "publishNotReadyAddresses: all",
			svc:  service("db", withClusterIPs("None"), func(s *corev1.Service) { s.Spec.PublishNotReadyAddresses = true }),
			want: []DNSEndpoint{dns("10.0.0.1", "db-0", true), dns("10.0.0.2", "db-1", true), dns("10.0.0.3", "db-2", false), dns("10.0.0.4", "", true), dns("10.0.0.5", "", true)},
		},
		{
			name: "not headless: none",
			svc:  service("db"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{Services: []*corev1.Service{tc.svc}, EndpointSlices: slices}
			s := mustService(t, Translate(objs, thisNode), "db")
			if !reflect.DeepEqual(s.DNSEndpoints, tc.want) {
				t.Errorf("DNSEndpoints =\n%v\nwant\n%v", s.DNSEndpoints, tc.want)
			}
			if s.Headless && len(s.Ports[0].Endpoints) != 4 {
				// A headless Service keeps its per-port endpoints for DNS SRV records.
				t.Errorf("headless port endpoints = %v", addrPorts(s.Ports[0].Endpoints))
			}
		})
	}
}

func TestExternalNameHasNoEndpoints(t *testing.T) {
	svc := service("ext", func(s *corev1.Service) {
		s.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com",
			Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}
	})
	objs := &Objects{Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{endpointSlice("ext", "ext-1", nil, ep("10.0.0.1"))}}
	s := mustService(t, Translate(objs, thisNode), "ext")
	if len(s.Ports) != 1 || len(s.Ports[0].Endpoints) != 0 || s.Ports[0].Cluster.Verdict != Reject {
		t.Errorf("ExternalName ports = %+v", s.Ports)
	}
}

// TestLabelledSlicesIgnored: an EndpointSlice labelled service-proxy-name or headless
// gives its Service no endpoints, as kube-proxy's EndpointSlice informer selects neither
// label (e2e "should implement service.kubernetes.io/headless" labels the slice of a
// reachable Service and waits for it to go down); the incremental Translator agrees when
// the label comes and goes on the same slice.
func TestLabelledSlicesIgnored(t *testing.T) {
	for _, label := range ServiceLabels {
		svc := service("web")
		plain := endpointSlice("web", "web-1", nil, ep("10.1.0.1"))
		labelled := endpointSlice("web", "web-1", nil, ep("10.1.0.1"))
		labelled.Labels[label] = ""
		tr := NewTranslator()
		for i, es := range []*discoveryv1.EndpointSlice{plain, labelled, plain} {
			objs := &Objects{Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{es}}
			for name, snap := range map[string]*Snapshot{"Translate": Translate(objs, thisNode), "Translator": tr.Translate(objs, thisNode)} {
				n := len(snap.Services[0].Ports[0].Endpoints)
				if want := map[bool]int{true: 0, false: 1}[es == labelled]; n != want {
					t.Errorf("%s, step %d, %s: %d endpoints, want %d", label, i, name, n, want)
				}
			}
		}
	}
	// DNS still reads them: the EndpointSlice controller labels every slice of a
	// headless Service headless.
	headless := service("db", withClusterIPs("None"))
	es := endpointSlice("db", "db-1", nil, ep("10.1.0.1"))
	es.Labels[LabelHeadless] = ""
	snap := Translate(&Objects{Services: []*corev1.Service{headless}, EndpointSlices: []*discoveryv1.EndpointSlice{es}}, thisNode)
	if len(snap.Services[0].DNSEndpoints) != 1 {
		t.Errorf("headless Service with a headless-labelled slice: DNS endpoints %+v", snap.Services[0].DNSEndpoints)
	}
}
