package fingerprint

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/model"
)

func base() *model.Service {
	ep := model.Endpoint{Addr: netip.MustParseAddr("10.1.0.1"), Port: 8080, Weight: 1, NodeName: "a"}
	set := model.EndpointSet{Verdict: model.Forward, IPv4Verdict: model.Forward, IPv6Verdict: model.Reject, Endpoints: []model.Endpoint{ep}}
	return &model.Service{
		Key:        model.ServiceKey{Namespace: "ns", Name: "svc"},
		Type:       model.ClusterIP,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("172.30.0.1")},
		Policy:     &model.Policy{Algorithm: balance.Random},
		Ports:      []*model.ServicePort{{Name: "http", Protocol: model.TCP, Port: 80, Cluster: set, External: set}},
	}
}

// Every field the rules depend on must change the fingerprint; others must not.
func TestAppendSeesEveryRuleInput(t *testing.T) {
	ref := Append(nil, base())
	if !bytes.Equal(ref, Append(nil, base())) {
		t.Fatal("not deterministic")
	}
	changes := []struct {
		name   string
		mutate func(*model.Service)
		same   bool
	}{
		{"type", func(s *model.Service) { s.Type = model.NodePort }, false},
		{"cluster IP", func(s *model.Service) { s.ClusterIPs[0] = netip.MustParseAddr("172.30.0.2") }, false},
		{"external IP", func(s *model.Service) { s.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.1")} }, false},
		{"LB IP", func(s *model.Service) { s.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("192.0.2.1")} }, false},
		{"source range", func(s *model.Service) {
			s.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		}, false},
		{"affinity", func(s *model.Service) { s.AffinityTimeout = time.Hour }, false},
		{"internal local", func(s *model.Service) { s.InternalTrafficLocal = true }, false},
		{"external local", func(s *model.Service) { s.ExternalTrafficLocal = true }, false},
		{"algorithm", func(s *model.Service) { s.Policy = &model.Policy{Algorithm: balance.RoundRobin} }, false},
		{"port policy", func(s *model.Service) { s.Ports[0].Policy = &model.Policy{Algorithm: balance.Maglev} }, false},
		{"seed", func(s *model.Service) { s.Policy = &model.Policy{Algorithm: balance.Random, MaglevSeed: 3} }, false},
		{"port", func(s *model.Service) { s.Ports[0].Port = 81 }, false},
		{"port name", func(s *model.Service) { s.Ports[0].Name = "web" }, false},
		{"protocol", func(s *model.Service) { s.Ports[0].Protocol = model.UDP }, false},
		{"node port", func(s *model.Service) { s.Ports[0].NodePort = 30000 }, false},
		{"verdict", func(s *model.Service) { s.Ports[0].External.IPv4Verdict = model.Drop }, false},
		{"endpoint address", func(s *model.Service) { s.Ports[0].Cluster.Endpoints[0].Addr = netip.MustParseAddr("10.1.0.2") }, false},
		{"endpoint port", func(s *model.Service) { s.Ports[0].Cluster.Endpoints[0].Port = 9090 }, false},
		{"endpoint weight", func(s *model.Service) { s.Ports[0].Cluster.Endpoints[0].Weight = 3 }, false},
		{"endpoint local", func(s *model.Service) { s.Ports[0].Cluster.Endpoints[0].Local = true }, false},
		{"endpoint zone (not in rules)", func(s *model.Service) { s.Ports[0].Cluster.Endpoints[0].Zone = "z" }, true},
		{"DNS endpoints (not in rules)", func(s *model.Service) { s.DNSEndpoints = []model.DNSEndpoint{{Hostname: "x"}} }, true},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			s := base()
			c.mutate(s)
			if got := bytes.Equal(ref, Append(nil, s)); got != c.same {
				t.Errorf("same fingerprint = %v, want %v", got, c.same)
			}
		})
	}
}
