package ipvs

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	cipvs "github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

// fakeIPVS is an in-memory IPVS that checks what the kernel checks: no duplicate
// virtual or real servers, no operation on a missing one.
type fakeIPVS struct {
	svcs  map[vsKey]cipvs.Service
	dests map[vsKey]map[netip.AddrPort]cipvs.DestinationExtended
	ops   int
}

func newFakeIPVS() *fakeIPVS {
	return &fakeIPVS{svcs: map[vsKey]cipvs.Service{}, dests: map[vsKey]map[netip.AddrPort]cipvs.DestinationExtended{}}
}

func (f *fakeIPVS) key(s cipvs.Service) vsKey {
	k, ok := keyOf(s)
	if !ok {
		panic(fmt.Sprintf("bad service %+v", s))
	}
	return k
}

func (f *fakeIPVS) Info() (cipvs.Info, error)     { return cipvs.Info{}, nil }
func (f *fakeIPVS) Config() (cipvs.Config, error) { return cipvs.Config{}, nil }
func (f *fakeIPVS) SetConfig(cipvs.Config) error  { return nil }
func (f *fakeIPVS) Service(s cipvs.Service) (cipvs.ServiceExtended, error) {
	got, ok := f.svcs[f.key(s)]
	if !ok {
		return cipvs.ServiceExtended{}, os.ErrNotExist
	}
	return cipvs.ServiceExtended{Service: got}, nil
}

func (f *fakeIPVS) Services() ([]cipvs.ServiceExtended, error) {
	var out []cipvs.ServiceExtended
	for _, s := range f.svcs {
		out = append(out, cipvs.ServiceExtended{Service: s})
	}
	if len(out) == 0 {
		return nil, os.ErrNotExist // as cloudflare/ipvs says "none"
	}
	return out, nil
}

func (f *fakeIPVS) CreateService(s cipvs.Service) error {
	k := f.key(s)
	if _, ok := f.svcs[k]; ok {
		return fmt.Errorf("create %s: exists", k)
	}
	if s.Scheduler == "" || !s.Netmask.IsValid() {
		return fmt.Errorf("create %s: bad service %+v", k, s)
	}
	f.ops++
	f.svcs[k], f.dests[k] = s, map[netip.AddrPort]cipvs.DestinationExtended{}
	return nil
}

func (f *fakeIPVS) UpdateService(s cipvs.Service) error {
	k := f.key(s)
	if _, ok := f.svcs[k]; !ok {
		return fmt.Errorf("update %s: %w", k, os.ErrNotExist)
	}
	f.ops++
	f.svcs[k] = s
	return nil
}

func (f *fakeIPVS) RemoveService(s cipvs.Service) error {
	k := f.key(s)
	if _, ok := f.svcs[k]; !ok {
		return fmt.Errorf("remove %s: %w", k, os.ErrNotExist)
	}
	f.ops++
	delete(f.svcs, k)
	delete(f.dests, k)
	return nil
}

func (f *fakeIPVS) Destinations(s cipvs.Service) ([]cipvs.DestinationExtended, error) {
	k := f.key(s)
	if _, ok := f.svcs[k]; !ok {
		return nil, os.ErrNotExist
	}
	var out []cipvs.DestinationExtended
	for _, d := range f.dests[k] {
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, os.ErrNotExist
	}
	return out, nil
}

func (f *fakeIPVS) destOp(s cipvs.Service, d cipvs.Destination, create, remove bool) error {
	k := f.key(s)
	m, ok := f.dests[k]
	if !ok {
		return fmt.Errorf("%s: %w", k, os.ErrNotExist)
	}
	ap := netip.AddrPortFrom(d.Address, d.Port)
	_, exists := m[ap]
	switch {
	case create && exists:
		return fmt.Errorf("real server %s of %s exists", ap, k)
	case !create && !exists:
		return fmt.Errorf("real server %s of %s: %w", ap, k, os.ErrNotExist)
	case d.FwdMethod != cipvs.Masquerade:
		return fmt.Errorf("real server %s: forwarding %v", ap, d.FwdMethod)
	}
	f.ops++
	if remove {
		delete(m, ap)
		return nil
	}
	old := m[ap]
	old.Destination = d
	m[ap] = old
	return nil
}

func (f *fakeIPVS) CreateDestination(s cipvs.Service, d cipvs.Destination) error {
	return f.destOp(s, d, true, false)
}
func (f *fakeIPVS) UpdateDestination(s cipvs.Service, d cipvs.Destination) error {
	return f.destOp(s, d, false, false)
}
func (f *fakeIPVS) RemoveDestination(s cipvs.Service, d cipvs.Destination) error {
	return f.destOp(s, d, false, true)
}

// dump is ipvsadm -Ln's content, sorted: "TCP 172.30.0.10:80 rr" then "  -> addr:port w".
func (f *fakeIPVS) dump() string {
	var lines []string
	for k, s := range f.svcs {
		head := k.String() + " " + s.Scheduler
		if s.Flags&cipvs.ServicePersistent != 0 {
			head += fmt.Sprintf(" persistent %d", s.Timeout)
		}
		var ds []string
		for ap, d := range f.dests[k] {
			ds = append(ds, fmt.Sprintf("  -> %s %d", ap, d.Weight))
		}
		sort.Strings(ds)
		lines = append(lines, head+"\n"+strings.Join(ds, "\n"))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// fakeLinks is the dummy interface in memory.
type fakeLinks struct {
	addrs map[string][]netip.Addr
}

func (l *fakeLinks) Ensure(name string, addrs []netip.Addr) error {
	if l.addrs == nil {
		l.addrs = map[string][]netip.Addr{}
	}
	l.addrs[name] = slices.Clone(addrs)
	return nil
}

func (l *fakeLinks) Delete(name string) error { delete(l.addrs, name); return nil }

func (l *fakeLinks) Addrs(name string) ([]netip.Addr, error) { return l.addrs[name], nil }

func (l *fakeLinks) Exists(name string) (bool, error) { _, ok := l.addrs[name]; return ok, nil }

func cipvsMask4() netmask.Mask { return netmask.MaskFrom(32, 32) }

type fakeWorld struct {
	p     *Proxier
	ipvs  *fakeIPVS
	links *fakeLinks
	nft   map[kernel.Family]*knftables.Fake
	rec   *flowtest.Recorder
}

func newFakeWorld(t *testing.T, cfg model.ProxyConfig) *fakeWorld {
	t.Helper()
	w := &fakeWorld{ipvs: newFakeIPVS(), links: &fakeLinks{}, rec: flowtest.NewRecorder(), nft: map[kernel.Family]*knftables.Fake{
		kernel.IPv4: knftables.NewFake(knftables.IPv4Family, tableName),
		kernel.IPv6: knftables.NewFake(knftables.IPv6Family, tableName),
	}}
	opts := Options{Options: w.rec.Options(kernel.Options{Proxy: cfg}), IPVS: w.ipvs, Links: w.links,
		NFTables: map[kernel.Family]knftables.Interface{kernel.IPv4: w.nft[kernel.IPv4], kernel.IPv6: w.nft[kernel.IPv6]}}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	w.p = p
	return w
}
