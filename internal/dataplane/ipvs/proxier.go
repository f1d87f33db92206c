// Package ipvs is weir's IPVS data plane, kube-proxy's IPVS mode: the Service addresses
// sit on a dummy interface (weir-ipvs0, kube-proxy's kube-ipvs0) so that the node
// accepts them, IPVS holds one virtual server per address, port and protocol with the
// endpoints as real servers (masquerading forwarding, weights, the scheduler from the
// TrafficPolicy, ClientIP affinity as persistence), and nftables does what IPVS cannot
// (masquerade, rejecting Services without endpoints, loadBalancerSourceRanges, and
// externalTrafficPolicy Local's short-circuit) in a table of its own instead of
// kube-proxy's iptables and ipsets. Node ports and the short-circuit are firewall-mark
// virtual servers: nftables marks the packet, IPVS matches the mark.
//
// IPVS is programmed over generic netlink with github.com/cloudflare/ipvs.
package ipvs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"

	cipvs "github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/fingerprint"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

// DefaultInterface is the dummy interface that holds the Service addresses.
const DefaultInterface = "weir-ipvs0"

// Options configure a Proxier.
type Options struct {
	kernel.Options
	// Interface is the dummy interface's name; default DefaultInterface.
	Interface string
	// IPVS injects the IPVS client (tests); default netlink in the namespace of New.
	IPVS cipvs.Client
	// NFTables injects the table interfaces (tests); default knftables.New.
	NFTables map[kernel.Family]knftables.Interface
	// Links injects the dummy interface's addresses (tests); default netlink.
	Links Links
}

// Links manages the dummy interface's addresses.
type Links interface {
	// Ensure creates the interface if needed, brings it up and makes its addresses
	// exactly addrs.
	Ensure(name string, addrs []netip.Addr) error
	// Delete removes the interface; it is not an error if it does not exist.
	Delete(name string) error
	// Exists reports whether the interface exists.
	Exists(name string) (bool, error)
	// Addrs lists the interface's addresses; none when it does not exist.
	Addrs(name string) ([]netip.Addr, error)
}

// Proxier is the IPVS data plane.
type Proxier struct {
	log   *slog.Logger
	opts  Options
	syncs *kernel.Syncs
	ipvs  cipvs.Client
	links Links
	fams  []family
	nft   []knftables.Interface

	mu       sync.Mutex
	services map[model.ServiceKey]*serviceState
	// vs is what weir programmed: virtual servers and their real servers.
	vs map[vsKey]virtualServer
	// draining are real servers at weight 0 that go once they have no connections.
	draining map[vsKey]map[netip.AddrPort]bool
	marks    *markTable
	synced   bool
	applied  uint64
	specBuf  []byte // reused for fingerprints
	// sysctls: set IPVS's sysctls before the first sync (not with an injected client).
	sysctls bool
	ops     prometheus.Counter
}

type serviceState struct {
	svc   *model.Service
	plans []servicePlan // per family
	// spec is the Service's fingerprint (and whether it is proxied): equal bytes, the
	// same plans.
	spec []byte
}

var _ dataplane.Dataplane = (*Proxier)(nil)

// New checks that the kernel has IPVS and nftables can do what weir needs, and returns
// a Proxier for the network namespace of the calling thread. It writes nothing until
// the first Sync.
func New(opts Options) (*Proxier, error) {
	var err error
	if opts.Options, err = opts.Options.WithDefaults(); err != nil {
		return nil, fmt.Errorf("ipvs: %w", err)
	}
	if opts.Interface == "" {
		opts.Interface = DefaultInterface
	}
	p := &Proxier{opts: opts, services: map[model.ServiceKey]*serviceState{}, vs: map[vsKey]virtualServer{},
		draining: map[vsKey]map[netip.AddrPort]bool{}, marks: newMarkTable()}
	p.ipvs = opts.IPVS
	if p.ipvs == nil {
		if p.ipvs, err = cipvs.New(); err != nil {
			return nil, fmt.Errorf("ipvs mode unavailable: the kernel has no IP_VS (modprobe ip_vs): %w", err)
		}
		p.sysctls = true
	}
	p.links = opts.Links
	if p.links == nil {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("ipvs: netlink: %w", err)
		}
		p.links = netlinkLinks{h}
	}
	for _, fam := range opts.IPFamilies {
		f := newFamily(fam == kernel.IPv6, opts.Proxy)
		nft := opts.NFTables[fam]
		if nft == nil {
			if nft, err = knftables.New(f.nft, tableName); err != nil {
				return nil, fmt.Errorf("ipvs mode unavailable (%s): nftables: %w", fam, err)
			}
			if err := nft.Check(context.Background(), fullTable(nft, f, opts.MasqueradeMark, nil)); err != nil {
				return nil, fmt.Errorf("ipvs mode unavailable (%s): the kernel or nft lacks what weir's table needs (nf_tables, nft_fib, nft_ct, nft_masq, nft_reject): %w", fam, err)
			}
		}
		p.fams = append(p.fams, f)
		p.nft = append(p.nft, nft)
	}
	p.ops = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "weir_ipvs_operations_total", Help: "IPVS virtual and real server operations written.",
	})
	if p.syncs, err = kernel.NewSyncs("ipvs", opts.Options, prometheus.ExponentialBuckets(0.001, 2, 14), p.ops); err != nil {
		return nil, err
	}
	p.log = p.syncs.Log
	return p, nil
}

// ipvsSysctls sets what kube-proxy's IPVS mode sets: conntrack for IPVS connections
// (masquerade needs it), and expiry of connections whose real server went away.
func ipvsSysctls() error {
	for _, s := range []string{"conntrack", "expire_nodest_conn", "expire_quiescent_template"} {
		path := filepath.Join("/proc/sys/net/ipv4/vs", s)
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("ipvs: set %s: %w", path, err)
		}
	}
	return nil
}

// Name is "ipvs".
func (p *Proxier) Name() string { return "ipvs" }

// Close stops the health-check server; the kernel state stays.
func (p *Proxier) Close() { p.syncs.Close() }

// Sync makes IPVS, the dummy interface and the nftables tables forward as snap says.
func (p *Proxier) Sync(ctx context.Context, snap *model.Snapshot) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syncs.Sync(snap, func() error {
		err := p.sync(ctx, snap)
		if err != nil {
			p.synced = false
			p.applied = 0
		}
		return err
	})
}

func (p *Proxier) sync(ctx context.Context, snap *model.Snapshot) error {
	var changes []kernel.Change
	// rules: a change reaches the dummy interface or the nftables tables, not only the
	// virtual servers (an endpoint change usually does not).
	rules := !p.synced
	plan := func(svc *model.Service) {
		spec := append(p.specBuf[:0], 0)
		if svc.Proxied() {
			spec[0] = 1
		}
		spec = fingerprint.Append(spec, svc)
		p.specBuf = spec
		old := p.services[svc.Key]
		if old != nil && p.synced && bytes.Equal(old.spec, spec) {
			p.services[svc.Key] = &serviceState{svc: svc, plans: old.plans, spec: old.spec}
			return
		}
		st := &serviceState{svc: svc, spec: bytes.Clone(spec)}
		for _, f := range p.fams {
			st.plans = append(st.plans, planService(svc, f.ipv6, p.opts.Proxy, p.marks))
		}
		if old != nil && p.synced && reflect.DeepEqual(old.plans, st.plans) {
			p.services[svc.Key] = st // a new Snapshot's copy that asks for nothing new
			return
		}
		if old == nil || !sameRules(old.plans, st.plans) {
			rules = true
		}
		var oldSvc *model.Service
		var oldUnsup []dataplane.UnsupportedScheduler
		if old != nil {
			oldSvc, oldUnsup = old.svc, old.unsupported()
		}
		p.services[svc.Key] = st
		changes = append(changes, kernel.Change{Old: oldSvc, New: svc, OldUnsupported: oldUnsup, NewUnsupported: st.unsupported()})
	}
	remove := func(key model.ServiceKey) {
		if old := p.services[key]; old != nil {
			changes = append(changes, kernel.Change{Old: old.svc, OldUnsupported: old.unsupported()})
			delete(p.services, key)
			rules = true
		}
	}
	if d := snap.DeltaFrom(p.applied); d != nil && p.synced {
		if len(d.Services) == 0 {
			p.applied = snap.Version
			return p.drain()
		}
		for _, key := range d.Services {
			if svc := snap.Service(key); svc != nil {
				plan(svc)
			} else {
				remove(key)
			}
		}
	} else {
		seen := map[model.ServiceKey]bool{}
		for _, svc := range snap.Services {
			seen[svc.Key] = true
			if old := p.services[svc.Key]; p.synced && old != nil && old.svc == svc {
				continue
			}
			plan(svc)
		}
		for key := range p.services {
			if !seen[key] {
				remove(key)
			}
		}
	}
	if len(changes) == 0 && p.synced {
		p.applied = snap.Version
		return p.drain()
	}
	p.marks.release(p.usedMarks())

	// The addresses first (IPVS takes packets only to local addresses), then IPVS,
	// then the filter and masquerade rules.
	keys := slices.SortedFunc(maps.Keys(p.services), model.ServiceKey.Compare)
	var addrs []netip.Addr
	want := map[vsKey]virtualServer{}
	perFam := make([][]servicePlan, len(p.fams))
	for _, k := range keys {
		st := p.services[k]
		for i, pl := range st.plans {
			addrs = append(addrs, pl.Addrs...)
			perFam[i] = append(perFam[i], pl)
			for vk, v := range pl.VS {
				if _, dup := want[vk]; !dup { // two Services on one frontend: the first keeps it
					want[vk] = v
				}
			}
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if rules {
		if err := p.links.Ensure(p.opts.Interface, addrs); err != nil {
			return fmt.Errorf("ipvs: dummy interface %s: %w", p.opts.Interface, err)
		}
	}
	if p.sysctls {
		if err := ipvsSysctls(); err != nil {
			return err
		}
		p.sysctls = false
	}
	if !p.synced {
		if err := p.adopt(); err != nil {
			return err
		}
	}
	if err := p.apply(want); err != nil {
		return err
	}
	for i, f := range p.fams {
		if !rules {
			break
		}
		if err := p.nft[i].Run(ctx, fullTable(p.nft[i], f, p.opts.MasqueradeMark, perFam[i])); err != nil {
			return fmt.Errorf("ipvs: nftables (%s): %w", f.nft, err)
		}
	}
	p.synced = true
	p.applied = snap.Version
	p.syncs.Written(changes)
	return p.drain()
}

// sameRules reports whether two plans ask the same of the dummy interface and the
// nftables tables (they may differ in virtual servers).
func sameRules(a, b []servicePlan) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		x.VS, y.VS, x.Unsupported, y.Unsupported = nil, nil, nil, nil
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

func (st *serviceState) unsupported() []dataplane.UnsupportedScheduler {
	var out []dataplane.UnsupportedScheduler
	for _, pl := range st.plans {
		for _, u := range pl.Unsupported {
			if !slices.Contains(out, u) {
				out = append(out, u)
			}
		}
	}
	return out
}

func (p *Proxier) usedMarks() map[markKey]bool {
	used := map[markKey]bool{}
	for _, st := range p.services {
		for _, pl := range st.plans {
			for _, k := range pl.Marks {
				used[k] = true
			}
		}
	}
	return used
}

// adopt reads the virtual servers in the kernel that are weir's (an earlier run's),
// so that the first sync changes only what differs: connections through servers that
// stay keep going. weir's are those on the dummy interface's addresses and those with
// weir's firewall marks.
func (p *Proxier) adopt() error {
	svcs, err := p.ipvs.Services()
	if errors.Is(err, os.ErrNotExist) { // cloudflare/ipvs: no virtual server at all
		svcs, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("ipvs: list virtual servers: %w", err)
	}
	p.vs = map[vsKey]virtualServer{}
	p.draining = map[vsKey]map[netip.AddrPort]bool{}
	ours, err := p.ownAddrs()
	if err != nil {
		return err
	}
	for _, s := range svcs {
		k, ok := keyOf(s.Service)
		if !ok || (k.Mark == 0 && !ours[k.Addr]) || (k.Mark != 0 && k.Mark&markMask != markBase) {
			continue
		}
		dests, err := p.ipvs.Destinations(s.Service)
		if errors.Is(err, os.ErrNotExist) { // no real server
			dests, err = nil, nil
		}
		if err != nil {
			return fmt.Errorf("ipvs: list real servers of %s: %w", k, err)
		}
		v := virtualServer{Scheduler: s.Scheduler, Reals: map[netip.AddrPort]uint32{}}
		if s.Flags&cipvs.ServicePersistent != 0 {
			v.Timeout = s.Timeout
		}
		for _, d := range dests {
			v.Reals[netip.AddrPortFrom(d.Address, d.Port)] = d.Weight
		}
		p.vs[k] = v
	}
	return nil
}

// ownAddrs are the addresses weir may have put on its interface, from an earlier run
// included: the interface's own, and what this run plans.
func (p *Proxier) ownAddrs() (map[netip.Addr]bool, error) {
	out := map[netip.Addr]bool{}
	addrs, err := p.links.Addrs(p.opts.Interface)
	if err != nil {
		return nil, fmt.Errorf("ipvs: addresses of %s: %w", p.opts.Interface, err)
	}
	for _, a := range addrs {
		out[a] = true
	}
	for _, st := range p.services {
		for _, pl := range st.plans {
			for _, a := range pl.Addrs {
				out[a] = true
			}
		}
	}
	return out, nil
}

func keyOf(s cipvs.Service) (vsKey, bool) {
	k := vsKey{IPv6: s.Family == cipvs.INET6, Mark: s.FWMark}
	if s.FWMark != 0 {
		return k, true
	}
	switch s.Protocol {
	case cipvs.TCP:
		k.Proto = model.TCP
	case cipvs.UDP:
		k.Proto = model.UDP
	case cipvs.SCTP:
		k.Proto = model.SCTP
	default:
		return k, false
	}
	k.Addr, k.Port = s.Address.Unmap(), s.Port
	return k, true
}

func (p *Proxier) service(k vsKey, v virtualServer) cipvs.Service {
	s := cipvs.Service{Family: cipvs.INET, Scheduler: v.Scheduler, FWMark: k.Mark, Netmask: netmask.MaskFrom(32, 32)}
	if k.IPv6 {
		s.Family, s.Netmask = cipvs.INET6, netmask.MaskFrom(128, 128)
	}
	if k.Mark == 0 {
		s.Address, s.Port = k.Addr, k.Port
		s.Protocol = cipvs.Protocol(protoNumber(k.Proto))
	}
	if v.Timeout > 0 {
		s.Flags |= cipvs.ServicePersistent
		s.Timeout = v.Timeout
	}
	return s
}

func dest(ap netip.AddrPort, weight uint32) cipvs.Destination {
	d := cipvs.Destination{Address: ap.Addr(), Port: ap.Port(), Weight: weight, FwdMethod: cipvs.Masquerade, Family: cipvs.INET}
	if ap.Addr().Is6() {
		d.Family = cipvs.INET6
	}
	return d
}

// apply turns the programmed virtual servers into want. A real server that leaves is
// set to weight 0 and removed once it has no connections (drain), as kube-proxy's
// graceful termination; UDP ones go at once.
func (p *Proxier) apply(want map[vsKey]virtualServer) error {
	var errs []error
	for _, k := range slices.SortedFunc(maps.Keys(p.vs), compareVS) {
		if _, ok := want[k]; ok {
			continue
		}
		if err := p.ipvs.RemoveService(p.service(k, p.vs[k])); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove virtual server %s: %w", k, err))
			continue
		}
		p.ops.Inc()
		delete(p.vs, k)
		delete(p.draining, k)
	}
	for _, k := range slices.SortedFunc(maps.Keys(want), compareVS) {
		w := want[k]
		have, exists := p.vs[k]
		svc := p.service(k, w)
		switch {
		case !exists:
			if err := p.ipvs.CreateService(svc); err != nil {
				errs = append(errs, fmt.Errorf("create virtual server %s: %w", k, err))
				continue
			}
			p.ops.Inc()
			have = virtualServer{Scheduler: w.Scheduler, Timeout: w.Timeout, Reals: map[netip.AddrPort]uint32{}}
		case !have.sameService(w):
			if err := p.ipvs.UpdateService(svc); err != nil {
				errs = append(errs, fmt.Errorf("update virtual server %s: %w", k, err))
				continue
			}
			p.ops.Inc()
			have.Scheduler, have.Timeout = w.Scheduler, w.Timeout
		}
		for _, ap := range slices.SortedFunc(maps.Keys(w.Reals), netip.AddrPort.Compare) {
			weight := w.Reals[ap]
			cur, ok := have.Reals[ap]
			var err error
			switch {
			case !ok:
				err = p.ipvs.CreateDestination(svc, dest(ap, weight))
			case cur != weight:
				err = p.ipvs.UpdateDestination(svc, dest(ap, weight))
			default:
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("real server %s of %s: %w", ap, k, err))
				continue
			}
			p.ops.Inc()
			have.Reals[ap] = weight
			delete(p.draining[k], ap)
		}
		for _, ap := range slices.SortedFunc(maps.Keys(have.Reals), netip.AddrPort.Compare) {
			if _, ok := w.Reals[ap]; ok || p.draining[k][ap] {
				continue
			}
			if k.Proto == model.UDP && k.Mark == 0 {
				if err := p.ipvs.RemoveDestination(svc, dest(ap, 0)); err != nil {
					errs = append(errs, fmt.Errorf("remove real server %s of %s: %w", ap, k, err))
					continue
				}
				delete(have.Reals, ap)
				p.ops.Inc()
				continue
			}
			if have.Reals[ap] != 0 {
				if err := p.ipvs.UpdateDestination(svc, dest(ap, 0)); err != nil {
					errs = append(errs, fmt.Errorf("drain real server %s of %s: %w", ap, k, err))
					continue
				}
				p.ops.Inc()
				have.Reals[ap] = 0
			}
			if p.draining[k] == nil {
				p.draining[k] = map[netip.AddrPort]bool{}
			}
			p.draining[k][ap] = true
		}
		p.vs[k] = have
	}
	if len(errs) > 0 {
		return fmt.Errorf("ipvs: %w", errors.Join(errs...))
	}
	return nil
}

// drain removes the draining real servers that have no connections left.
func (p *Proxier) drain() error {
	var errs []error
	for _, k := range slices.SortedFunc(maps.Keys(p.draining), compareVS) {
		v, ok := p.vs[k]
		if !ok {
			delete(p.draining, k)
			continue
		}
		svc := p.service(k, v)
		dests, err := p.ipvs.Destinations(svc)
		if errors.Is(err, os.ErrNotExist) { // no real server
			dests, err = nil, nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("list real servers of %s: %w", k, err))
			continue
		}
		for _, d := range dests {
			ap := netip.AddrPortFrom(d.Address.Unmap(), d.Port)
			if !p.draining[k][ap] || d.ActiveConnections+d.InactiveConnections > 0 {
				continue
			}
			if err := p.ipvs.RemoveDestination(svc, d.Destination); err != nil {
				errs = append(errs, fmt.Errorf("remove drained real server %s of %s: %w", ap, k, err))
				continue
			}
			p.ops.Inc()
			delete(v.Reals, ap)
			delete(p.draining[k], ap)
		}
		if len(p.draining[k]) == 0 {
			delete(p.draining, k)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("ipvs: %w", errors.Join(errs...))
	}
	return nil
}

// Draining reports the real servers kept at weight 0 until their connections end.
func (p *Proxier) Draining() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for k, m := range p.draining {
		for ap := range m {
			out = append(out, k.String()+" -> "+ap.String())
		}
	}
	slices.Sort(out)
	return out
}

func compareVS(a, b vsKey) int {
	switch {
	case a.IPv6 != b.IPv6:
		if a.IPv6 {
			return 1
		}
		return -1
	case a.Mark != b.Mark:
		if a.Mark < b.Mark {
			return -1
		}
		return 1
	}
	return compareFrontends(frontend{a.Addr, a.Proto, a.Port}, frontend{b.Addr, b.Proto, b.Port})
}

// Leftovers reports whether weir's dummy interface or tables exist.
func (p *Proxier) Leftovers(ctx context.Context) (bool, error) {
	if ok, err := p.links.Exists(p.opts.Interface); err != nil || ok {
		return ok, err
	}
	for _, nft := range p.nft {
		if _, err := nft.List(ctx, "chains"); err == nil {
			return true, nil
		} else if !knftables.IsNotFound(err) {
			return false, err
		}
	}
	return false, nil
}

// Cleanup removes what weir made: the virtual servers on the dummy interface's
// addresses and with weir's marks, the interface, and the tables.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	if err := p.adopt(); err != nil {
		errs = append(errs, err)
	} else {
		for _, k := range slices.SortedFunc(maps.Keys(p.vs), compareVS) {
			if err := p.ipvs.RemoveService(p.service(k, p.vs[k])); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("ipvs: remove virtual server %s: %w", k, err))
			}
		}
	}
	if err := p.links.Delete(p.opts.Interface); err != nil {
		errs = append(errs, fmt.Errorf("ipvs: delete %s: %w", p.opts.Interface, err))
	}
	for i, nft := range p.nft {
		tx := nft.NewTransaction()
		tx.Delete(&knftables.Table{})
		if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("ipvs: delete table %s %s: %w", p.fams[i].nft, tableName, err))
		}
	}
	p.vs = map[vsKey]virtualServer{}
	p.draining = map[vsKey]map[netip.AddrPort]bool{}
	p.services = map[model.ServiceKey]*serviceState{}
	p.synced, p.applied = false, 0
	return errors.Join(errs...)
}

// markTable hands out firewall marks, markBase | n, and keeps them while in use.
type markTable struct {
	byKey map[markKey]uint32
	used  map[uint32]bool
	next  uint32
}

func newMarkTable() *markTable {
	return &markTable{byKey: map[markKey]uint32{}, used: map[uint32]bool{}, next: 1}
}

func (t *markTable) mark(k markKey) uint32 {
	if m, ok := t.byKey[k]; ok {
		return m
	}
	for t.used[markBase|t.next] {
		t.next = t.next%0xffffff + 1
	}
	m := markBase | t.next
	t.next = t.next%0xffffff + 1
	t.byKey[k], t.used[m] = m, true
	return m
}

// release forgets the marks of keys not in keep.
func (t *markTable) release(keep map[markKey]bool) {
	for k, m := range t.byKey {
		if !keep[k] {
			delete(t.byKey, k)
			delete(t.used, m)
		}
	}
}

// netlinkLinks is Links over netlink in the namespace the handle was made in.
type netlinkLinks struct{ h *netlink.Handle }

func (n netlinkLinks) Ensure(name string, addrs []netip.Addr) error {
	link, err := n.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return err
		}
		if err := n.h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return fmt.Errorf("create: %w", err)
		}
		if link, err = n.h.LinkByName(name); err != nil {
			return err
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := n.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set up: %w", err)
		}
	}
	have, err := n.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	wantSet := map[netip.Addr]bool{}
	for _, a := range addrs {
		wantSet[a] = true
	}
	for _, a := range have {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.IsLinkLocalUnicast() {
			continue
		}
		ip = ip.Unmap()
		if wantSet[ip] {
			delete(wantSet, ip)
			continue
		}
		if err := n.h.AddrDel(link, &a); err != nil {
			return fmt.Errorf("delete address %s: %w", ip, err)
		}
	}
	for _, a := range addrs {
		if !wantSet[a] {
			continue
		}
		bits := 32
		if a.Is6() {
			bits = 128
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
		if a.Is6() {
			addr.Flags = 0x02 // IFA_F_NODAD
		}
		if err := n.h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add address %s: %w", a, err)
		}
	}
	return nil
}

func (n netlinkLinks) Addrs(name string) ([]netip.Addr, error) {
	link, err := n.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, err
	}
	have, err := n.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range have {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

func (n netlinkLinks) Delete(name string) error {
	link, err := n.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return n.h.LinkDel(link)
}

func (n netlinkLinks) Exists(name string) (bool, error) {
	_, err := n.h.LinkByName(name)
	if err == nil {
		return true, nil
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return false, nil
	}
	return false, err
}
