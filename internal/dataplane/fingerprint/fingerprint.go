// Package fingerprint encodes the parts of a Service that kernel data planes turn into
// rules, so that a sync can skip Services whose bytes did not change.
package fingerprint

import (
	"encoding/binary"
	"net/netip"

	"weir.dev/weir/internal/model"
)

// Append appends everything kernel rules depend on, so that an unchanged Service is
// recognised by comparing bytes, without building its rules.
func Append(b []byte, svc *model.Service) []byte {
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	num := func(n uint64) { b = binary.AppendUvarint(b, n) }
	addrs := func(as []netip.Addr) {
		num(uint64(len(as)))
		for _, a := range as {
			b, _ = a.AppendBinary(b)
			b = append(b, 0xff)
		}
	}
	eps := func(s model.EndpointSet) {
		num(uint64(s.Verdict))
		num(uint64(s.IPv4Verdict))
		num(uint64(s.IPv6Verdict))
		num(uint64(len(s.Endpoints)))
		for _, ep := range s.Endpoints {
			b, _ = ep.Addr.AppendBinary(b)
			num(uint64(ep.Port))
			num(uint64(ep.Weight))
			flags := uint64(0)
			if ep.Local {
				flags |= 1
			}
			if ep.NodeName == "" {
				flags |= 2
			}
			num(flags)
		}
	}
	str(string(svc.Type))
	addrs(svc.ClusterIPs)
	addrs(svc.ExternalIPs)
	addrs(svc.LoadBalancerIPs)
	num(uint64(len(svc.LoadBalancerSourceRanges)))
	for _, p := range svc.LoadBalancerSourceRanges {
		b, _ = p.AppendBinary(b)
	}
	num(uint64(svc.AffinityTimeout))
	flags := uint64(0)
	if svc.InternalTrafficLocal {
		flags |= 1
	}
	if svc.ExternalTrafficLocal {
		flags |= 2
	}
	num(flags)
	num(uint64(len(svc.Ports)))
	for _, sp := range svc.Ports {
		if pol := policy(svc, sp); pol != nil {
			str(string(pol.Algorithm))
			num(pol.MaglevSeed)
		} else {
			str("")
		}
		str(sp.Name)
		str(string(sp.Protocol))
		num(uint64(sp.Port))
		num(uint64(sp.NodePort))
		eps(sp.Cluster)
		eps(sp.External)
		eps(sp.ShortCircuit)
	}
	return b
}

func policy(svc *model.Service, sp *model.ServicePort) *model.Policy {
	if sp.Policy != nil {
		return sp.Policy
	}
	return svc.Policy
}
