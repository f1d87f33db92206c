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
