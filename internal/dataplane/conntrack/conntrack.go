// Package conntrack deletes stale UDP conntrack entries through netlink. Without it a
// UDP client keeps sending to a deleted endpoint for as long as its conntrack entry
// lives (the "DNS stuck after a pod restart" bug, kubernetes #125467). Both kernel data
// planes use it.
package conntrack

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/model"
)

// Flow selects UDP conntrack entries. Unset fields match anything.
type Flow struct {
	// OrigDst is the address the client sent to (a Service IP); invalid matches any.
	OrigDst netip.Addr
	// OrigDstPort is the port the client sent to (Service port or node port).
	OrigDstPort uint16
	// ReplySrc is the endpoint that answered; invalid matches any.
	ReplySrc netip.Addr
}

func (f Flow) String() string {
	return fmt.Sprintf("udp orig-dst=%v:%d reply-src=%v", f.OrigDst, f.OrigDstPort, f.ReplySrc)
}

// Cleaner deletes conntrack entries.
type Cleaner interface {
	DeleteUDP(flows []Flow) (deleted uint, err error)
}

// Netlink deletes entries in the network namespace of the calling thread.
type Netlink struct{}

// DeleteUDP deletes every UDP entry matching one of flows.
func (Netlink) DeleteUDP(flows []Flow) (uint, error) {
	var v4, v6 []netlink.CustomConntrackFilter
	for _, fl := range flows {
		f := &netlink.ConntrackFilter{}
		if err := f.AddProtocol(unix.IPPROTO_UDP); err != nil {
			return 0, fmt.Errorf("conntrack filter %v: %w", fl, err)
		}
		is6 := false
		if fl.OrigDst.IsValid() {
			is6 = fl.OrigDst.Is6()
			if err := f.AddIP(netlink.ConntrackOrigDstIP, net.IP(fl.OrigDst.AsSlice())); err != nil {
				return 0, fmt.Errorf("conntrack filter %v: %w", fl, err)
			}
		}
		if fl.OrigDstPort != 0 {
			if err := f.AddPort(netlink.ConntrackOrigDstPort, fl.OrigDstPort); err != nil {
				return 0, fmt.Errorf("conntrack filter %v: %w", fl, err)
			}
		}
		if fl.ReplySrc.IsValid() {
			is6 = fl.ReplySrc.Is6()
			if err := f.AddIP(netlink.ConntrackReplySrcIP, net.IP(fl.ReplySrc.AsSlice())); err != nil {
				return 0, fmt.Errorf("conntrack filter %v: %w", fl, err)
			}
		}
		if is6 {
			v6 = append(v6, f)
		} else {
			v4 = append(v4, f)
		}
	}
	var total uint
	for _, batch := range []struct {
		family  netlink.InetFamily
		filters []netlink.CustomConntrackFilter
	}{{unix.AF_INET, v4}, {unix.AF_INET6, v6}} {
		if len(batch.filters) == 0 {
			continue
		}
		n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, batch.family, batch.filters...)
		total += n
		if err != nil {
			return total, fmt.Errorf("delete conntrack entries: %w", err)
		}
	}
	return total, nil
}

// StaleUDPFlows lists the conntrack entries to delete when a UDP Service changes: flows
// answered by an endpoint that is gone, and flows to a frontend that had no endpoint
// (they were rejected and would otherwise stay black-holed).
func StaleUDPFlows(oldSvc, newSvc *model.Service) []Flow {
	if oldSvc == nil {
		oldSvc = &model.Service{}
	}
	var flows []Flow
	newPorts := map[string]*model.ServicePort{}
	if newSvc != nil {
		for _, sp := range newSvc.Ports {
			if sp.Protocol == model.UDP {
				newPorts[fmt.Sprint(sp.Port)] = sp
			}
		}
	}
	frontends := func(svc *model.Service) []netip.Addr {
		var out []netip.Addr
		out = append(out, svc.ClusterIPs...)
		out = append(out, svc.ExternalIPs...)
		return append(out, svc.LoadBalancerIPs...)
	}
	for _, sp := range oldSvc.Ports {
		if sp.Protocol != model.UDP {
			continue
		}
		still := map[netip.Addr]bool{}
		if nsp := newPorts[fmt.Sprint(sp.Port)]; nsp != nil {
			for _, ep := range append(append([]model.Endpoint(nil), nsp.Cluster.Endpoints...), nsp.External.Endpoints...) {
				still[ep.Addr] = true
			}
		}
		gone := map[netip.Addr]bool{}
		for _, ep := range append(append([]model.Endpoint(nil), sp.Cluster.Endpoints...), sp.External.Endpoints...) {
			if !still[ep.Addr] && !gone[ep.Addr] {
				gone[ep.Addr] = true
				flows = append(flows, Flow{OrigDstPort: uint16(sp.Port), ReplySrc: ep.Addr})
				if sp.NodePort != 0 {
					flows = append(flows, Flow{OrigDstPort: uint16(sp.NodePort), ReplySrc: ep.Addr})
				}
			}
		}
	}
	if newSvc == nil {
		return flows
	}
	oldPorts := map[string]*model.ServicePort{}
	for _, sp := range oldSvc.Ports {
		oldPorts[fmt.Sprint(sp.Port)] = sp
	}
	for _, sp := range newSvc.Ports {
		if sp.Protocol != model.UDP || len(sp.Cluster.Endpoints)+len(sp.External.Endpoints) == 0 {
			continue
		}
		if osp := oldPorts[fmt.Sprint(sp.Port)]; osp != nil && len(osp.Cluster.Endpoints)+len(osp.External.Endpoints) > 0 {
			continue
		}
		for _, ip := range frontends(newSvc) {
			flows = append(flows, Flow{OrigDst: ip, OrigDstPort: uint16(sp.Port)})
		}
	}
	return flows
}
