package manifest

import (
	"fmt"
	"net/netip"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// Options change what LoadWith accepts.
type Options struct {
	// Own describes weir's own listeners (the admin API, DNS, the Ingress listeners):
	// for an address and port weir serves itself it returns what serves there, and ""
	// otherwise. An endpoint it describes is an error, since traffic proxied to it would
	// come back into weir (a route to the admin address would serve the admin API).
	Own func(netip.AddrPort) string
	// MaxFileBytes is the largest manifest file read (DefaultMaxFileBytes when zero):
	// a larger one is an error naming the file and the limit.
	MaxFileBytes int64
}

// ownEndpoints refuses endpoints that are weir's own listeners.
func (l *loader) ownEndpoints(slices []*object) {
	if l.own == nil {
		return
	}
	for _, o := range slices {
		s := o.obj.(*discoveryv1.EndpointSlice)
		for i, ep := range s.Endpoints {
			for j, a := range ep.Addresses {
				addr, err := netip.ParseAddr(a)
				if err != nil {
					continue // validation reported it
				}
				for _, p := range s.Ports {
					if p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
						continue
					}
					ap := netip.AddrPortFrom(addr.Unmap(), uint16(*p.Port))
					if what := l.own(ap); what != "" {
						l.errorf(o, fmt.Sprintf("endpoints[%d].addresses[%d]", i, j),
							"%s is weir's own %s: an endpoint must not point back at weir (its traffic would loop into weir)", ap, what)
					}
				}
			}
		}
	}
}
