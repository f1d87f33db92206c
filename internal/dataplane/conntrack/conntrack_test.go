package conntrack

import (
	"net/netip"
	"slices"
	"testing"

	"weir.dev/weir/internal/model"
)

func udpService(nodePort int32, eps ...string) *model.Service {
	var list []model.Endpoint
	for _, e := range eps {
		ap := netip.MustParseAddrPort(e)
		list = append(list, model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port())})
	}
	set := model.EndpointSet{Endpoints: list}
	return &model.Service{
		ClusterIPs: []netip.Addr{netip.MustParseAddr("172.30.0.53")},
		Ports:      []*model.ServicePort{{Protocol: model.UDP, Port: 53, NodePort: nodePort, Cluster: set, External: set}},
	}
}

func TestStaleUDPFlows(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	vip := netip.MustParseAddr("172.30.0.53")
	tcp := udpService(0, "10.0.0.1:53")
	tcp.Ports[0].Protocol = model.TCP
	tests := []struct {
		name     string
		old, new *model.Service
		want     []Flow
	}{
		{"unchanged", udpService(0, "10.0.0.1:53"), udpService(0, "10.0.0.1:53"), nil},
		{"endpoint replaced", udpService(0, "10.0.0.1:53"), udpService(0, "10.0.0.2:53"), []Flow{{OrigDstPort: 53, ReplySrc: a}}},
		{"endpoint removed, node port too", udpService(30053, "10.0.0.1:53", "10.0.0.2:53"), udpService(30053, "10.0.0.2:53"),
			[]Flow{{OrigDstPort: 53, ReplySrc: a}, {OrigDstPort: 30053, ReplySrc: a}}},
		{"first endpoint: rejected flows go", udpService(0), udpService(0, "10.0.0.2:53"), []Flow{{OrigDst: vip, OrigDstPort: 53}}},
		{"new Service", nil, udpService(0, "10.0.0.2:53"), []Flow{{OrigDst: vip, OrigDstPort: 53}}},
		{"Service removed", udpService(0, "10.0.0.2:53"), nil, []Flow{{OrigDstPort: 53, ReplySrc: b}}},
		{"TCP is left alone", tcp, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := StaleUDPFlows(tt.old, tt.new); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
