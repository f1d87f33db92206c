// Package ebpf is the eBPF data plane's socket load balancer: cgroup/connect4 and
// cgroup/connect6 programs (bpf/socklb.c) rewrite a connect() to a Service's ClusterIP
// and port to one of the endpoints the model chose, at random, before any packet
// exists. The Proxier writes the programs' maps from each Snapshot, changing only the
// frontends whose endpoints changed.
package ebpf

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/model"
)

var _ dataplane.Dataplane = (*Proxier)(nil)

// Options configure a Proxier.
type Options struct {
	// Cgroup is the cgroup v2 directory the programs attach to: every socket of a
	// process in it or below it is balanced. Empty means the cgroup2 mount's root
	// (CgroupMount).
	Cgroup string
	// PinPath, when set, is a directory on a bpffs (mounted there when its parent is
	// not one yet) where the maps and the program links are pinned: the programs stay
	// attached after Close and after weir exits, and the next New with the same PinPath
	// replaces the programs in place and adopts what the maps hold, so a restart keeps
	// balancing connects. Pins{PinPath}.Cleanup removes them. Empty: nothing is pinned
	// and Close detaches the programs.
	PinPath string
	// Registerer, when set, gets the mode's metrics: weir_ebpf_sync_duration_seconds,
	// weir_ebpf_sync_errors_total, weir_ebpf_frontends, weir_ebpf_backend_slots and
	// weir_ebpf_programs_attached.
	Registerer prometheus.Registerer
}

// Proxier programs socket load balancing from Snapshots.
type Proxier struct {
	mu      sync.Mutex
	objs    socklbObjects
	links   []link.Link
	slots   slotAllocator
	applied map[socklbSvcKey]frontend // what the maps hold, by frontend
	orphans map[socklbSvcKey]bool     // adopted from pinned maps, no Service's yet
	cgroup  string
	pinPath string
	owner   map[socklbSvcKey]model.ServiceKey
	bySvc   map[model.ServiceKey][]socklbSvcKey
	version uint64 // the Snapshot applied last without error; 0: none
	writes  int    // map elements written or deleted, for tests
	m       metrics
}

type metrics struct {
	syncDuration prometheus.Histogram
	syncErrors   prometheus.Counter
	frontends    prometheus.Gauge
	slots        prometheus.Gauge
	programs     prometheus.Gauge
}

func newMetrics() metrics {
	return metrics{
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weir_ebpf_sync_duration_seconds", Help: "Time to compute and write one ebpf sync.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 12),
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weir_ebpf_sync_errors_total", Help: "ebpf syncs that failed.",
		}),
		frontends: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_ebpf_frontends", Help: "Service frontends (address, port, protocol) in the services map.",
		}),
		slots: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_ebpf_backend_slots", Help: "Backend slots in use in the backends map.",
		}),
		programs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_ebpf_programs_attached", Help: "Socket load-balancing programs attached to the cgroup.",
		}),
	}
}

func (m metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.syncDuration, m.syncErrors, m.frontends, m.slots, m.programs}
}

// maxFrontendSlots bounds the backend slots of one frontend (the sum of its endpoints'
// weights): a frontend that needs more is not written and the Sync fails.
const maxFrontendSlots = 65536

// frontend is what the maps hold for one frontend.
type frontend struct {
	needed   uint64 // slots its endpoints' weights ask for
	verdict  model.Verdict
	backends []socklbBackend // one per slot (an endpoint of weight w has w slots)
	offset   uint32
}

// New loads the programs and attaches them to opts.Cgroup. Close detaches them.
func New(opts Options) (*Proxier, error) {
	cg := opts.Cgroup
	if cg == "" {
		m, err := CgroupMount()
		if err != nil {
			return nil, err
		}
		cg = m
	}
	p := &Proxier{
		cgroup:  cg,
		pinPath: opts.PinPath,
		applied: map[socklbSvcKey]frontend{},
		orphans: map[socklbSvcKey]bool{},
		owner:   map[socklbSvcKey]model.ServiceKey{},
		bySvc:   map[model.ServiceKey][]socklbSvcKey{},
		m:       newMetrics(),
	}
	if opts.Registerer != nil {
		for _, c := range p.m.collectors() {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("ebpf: register metrics: %w", err)
			}
		}
	}
	if err := p.load(); err != nil {
		return nil, err
	}
	p.slots.free = []slotRange{{0, p.objs.Backends.MaxEntries()}}
	if p.pinPath != "" {
		if err := p.adopt(); err != nil {
			p.objs.Close()
			return nil, err
		}
	}
	for _, a := range []struct {
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{
		{p.objs.WeirConnect4, ebpf.AttachCGroupInet4Connect},
		{p.objs.WeirConnect6, ebpf.AttachCGroupInet6Connect},
		{p.objs.WeirGetpeername4, ebpf.AttachCgroupInet4GetPeername},
		{p.objs.WeirGetpeername6, ebpf.AttachCgroupInet6GetPeername},
		{p.objs.WeirSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
		{p.objs.WeirSendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
		{p.objs.WeirRecvmsg4, ebpf.AttachCGroupUDP4Recvmsg},
		{p.objs.WeirRecvmsg6, ebpf.AttachCGroupUDP6Recvmsg},
	} {
		var l link.Link
		var err error
		if p.pinPath != "" {
			l, err = attachPinned(filepath.Join(p.pinPath, pinLinks, a.prog.String()), cg, a.typ, a.prog)
		} else {
			l, err = link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: a.typ, Program: a.prog})
		}
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("ebpf mode unavailable: attach %s to cgroup %s: %w", a.prog, cg, err)
		}
		p.links = append(p.links, l)
		p.m.programs.Inc()
	}
	return p, nil
}

// load loads the programs and maps; with a PinPath, maps pinned there by an earlier
// run are reused (a map whose layout changed is replaced).
func (p *Proxier) load() error {
	spec, err := loadSocklb()
	if err != nil {
		return fmt.Errorf("ebpf: %w", err)
	}
	var opts ebpf.CollectionOptions
	if p.pinPath != "" {
		if err := ensureBPFFS(filepath.Dir(p.pinPath)); err != nil {
			return fmt.Errorf("ebpf mode unavailable: %w", err)
		}
		for _, sub := range []string{pinMaps, pinLinks} {
			if err := os.MkdirAll(filepath.Join(p.pinPath, sub), 0o700); err != nil {
				return fmt.Errorf("ebpf mode unavailable: %w", err)
			}
		}
		pinnedSpec(spec)
		opts.Maps.PinPath = filepath.Join(p.pinPath, pinMaps)
	}
	err = spec.LoadAndAssign(&p.objs, &opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// An earlier version's maps: start with fresh ones (the old programs keep
		// theirs until the links are updated below).
		if rerr := os.RemoveAll(opts.Maps.PinPath); rerr != nil {
			return fmt.Errorf("ebpf: replace incompatible pinned maps: %w", rerr)
		}
		if err = os.MkdirAll(opts.Maps.PinPath, 0o700); err == nil {
			err = spec.LoadAndAssign(&p.objs, &opts)
		}
	}
	if err != nil {
		return fmt.Errorf("ebpf mode unavailable: load socket load-balancing programs: %w", err)
	}
	return nil
}

// adopt reads the frontends pinned maps hold into p.applied, their slot ranges taken
// from the allocator, as orphans: the first full Sync keeps those it still wants and
// deletes the rest. A frontend whose slots make no sense is deleted at once.
func (p *Proxier) adopt() error {
	var key socklbSvcKey
	var val socklbSvcValue
	var bad []socklbSvcKey
	it := p.objs.Services.Iterate()
	for it.Next(&key, &val) {
		fe := frontend{needed: uint64(val.Count), verdict: model.Verdict(val.Verdict), offset: val.Offset}
		r := slotRange{val.Offset, val.Count}
		ok := val.Count <= maxFrontendSlots && p.slots.reserve(r)
		for i := uint32(0); ok && i < val.Count; i++ {
			var be socklbBackend
			if err := p.objs.Backends.Lookup(val.Offset+i, &be); err != nil {
				p.slots.release(r)
				ok = false
				break
			}
			fe.backends = append(fe.backends, be)
		}
		if !ok {
			bad = append(bad, key)
			continue
		}
		p.applied[key] = fe
		p.orphans[key] = true
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("ebpf: read pinned services map: %w", err)
	}
	for _, k := range bad {
		if err := p.objs.Services.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("ebpf: delete pinned frontend %s: %w", keyString(k), err)
		}
	}
	return nil
}

func (p *Proxier) capacity() uint32 {
	if p.objs.Backends == nil {
		return 0
	}
	return p.objs.Backends.MaxEntries()
}

// Status is what /api/snapshot shows of the mode.
type Status struct {
	Cgroup       string `json:"cgroup"`
	PinPath      string `json:"pinPath,omitempty"`
	Programs     int    `json:"programsAttached"`
	Frontends    int    `json:"frontends"`
	BackendSlots uint32 `json:"backendSlots"`
}

// Status reports where the programs are attached and what the maps hold.
func (p *Proxier) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Status{Cgroup: p.cgroup, PinPath: p.pinPath, Programs: len(p.links), Frontends: len(p.applied), BackendSlots: p.slots.used}
}

// Name is "ebpf".
func (p *Proxier) Name() string { return "ebpf" }

// Close releases the programs and maps: without a PinPath it detaches the programs;
// with one they stay attached and keep balancing with the maps as they are.
func (p *Proxier) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	p.m.programs.Set(0)
	errs = append(errs, p.objs.Close())
	return errors.Join(errs...)
}

// Sync writes the frontends of snap: every ClusterIP, port and protocol (TCP, UDP)
// with the Cluster endpoints of the address's family. Frontends whose endpoints and
// verdict did not change are not written; with a Delta against the Snapshot applied
// last, only the Services it names are looked at. A changed frontend gets a fresh range
// of backend slots, filled before the frontend points at it, so a concurrent connect
// sees the old endpoints or the new ones, never a mix.
func (p *Proxier) Sync(ctx context.Context, snap *model.Snapshot) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if snap == nil {
		snap = &model.Snapshot{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	start := time.Now()
	err := p.sync(snap)
	p.m.syncDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		p.m.syncErrors.Inc()
	}
	p.m.frontends.Set(float64(len(p.applied)))
	p.m.slots.Set(float64(p.slots.used))
	return err
}

func (p *Proxier) sync(snap *model.Snapshot) error {
	// The Services to compare: those the Delta names, else all of snap's and all
	// written before.
	var scope []model.ServiceKey
	var svcs []*model.Service
	full := true
	if d := snap.DeltaFrom(p.version); d != nil {
		full = false
		scope = d.Services
		for _, k := range scope {
			if svc := snap.Service(k); svc != nil {
				svcs = append(svcs, svc)
			}
		}
	} else {
		svcs = snap.Services
		seen := make(map[model.ServiceKey]bool, len(svcs))
		for _, svc := range svcs {
			scope = append(scope, svc.Key)
			seen[svc.Key] = true
		}
		for k := range p.bySvc {
			if !seen[k] {
				scope = append(scope, k)
			}
		}
	}
	want := map[socklbSvcKey]frontend{}
	owner := map[socklbSvcKey]model.ServiceKey{}
	for _, svc := range svcs {
		if svc.Proxied() {
			frontends(svc, func(key socklbSvcKey, fe frontend) {
				want[key], owner[key] = fe, svc.Key
			})
		}
	}

	var errs []error
	var freed []slotRange
	if full {
		// Frontends an earlier run left in pinned maps: kept if wanted, else deleted.
		for key := range p.orphans {
			if _, ok := want[key]; ok {
				delete(p.orphans, key)
				continue
			}
			old := p.applied[key]
			if err := p.objs.Services.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("delete frontend %s: %w", keyString(key), err))
				continue
			}
			p.writes++
			delete(p.applied, key)
			delete(p.orphans, key)
			freed = append(freed, slotRange{old.offset, uint32(len(old.backends))})
		}
	}
	for _, k := range scope {
		var kept []socklbSvcKey // frontends that could not be deleted stay k's
		for _, key := range p.bySvc[k] {
			if _, ok := want[key]; ok || p.owner[key] != k {
				continue
			}
			old := p.applied[key]
			if err := p.objs.Services.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("delete frontend %s: %w", keyString(key), err))
				kept = append(kept, key)
				continue
			}
			p.writes++
			delete(p.applied, key)
			delete(p.owner, key)
			freed = append(freed, slotRange{old.offset, uint32(len(old.backends))})
		}
		if kept != nil {
			p.bySvc[k] = kept
		} else {
			delete(p.bySvc, k)
		}
	}
	for _, key := range sortedKeys(want) {
		fe := want[key]
		p.bySvc[owner[key]] = append(p.bySvc[owner[key]], key)
		p.owner[key] = owner[key]
		if fe.needed > maxFrontendSlots {
			errs = append(errs, fmt.Errorf("frontend %s: endpoint weights need %d backend slots, more than %d; left as it was", keyString(key), fe.needed, maxFrontendSlots))
			continue
		}
		old, had := p.applied[key]
		if had && old.verdict == fe.verdict && slices.Equal(old.backends, fe.backends) {
			continue
		}
		if err := p.write(key, &fe); err != nil {
			errs = append(errs, err)
			continue
		}
		p.applied[key] = fe
		if had {
			freed = append(freed, slotRange{old.offset, uint32(len(old.backends))})
		}
	}
	// Slots are given back only after every frontend moved off them.
	for _, r := range freed {
		p.slots.release(r)
	}
	if len(errs) > 0 {
		p.version = 0 // the next Sync compares everything
		return errors.Join(errs...)
	}
	p.version = snap.Version
	return nil
}

// write fills a fresh slot range with fe's backends and points the frontend at it.
func (p *Proxier) write(key socklbSvcKey, fe *frontend) error {
	n := uint32(len(fe.backends))
	if n > 0 {
		off, ok := p.slots.alloc(n)
		if !ok {
			return fmt.Errorf("frontend %s: no room for %d backend slots (capacity %d)", keyString(key), n, p.capacity())
		}
		idx := make([]uint32, n)
		for i := range idx {
			idx[i] = off + uint32(i)
		}
		if _, err := p.objs.Backends.BatchUpdate(idx, fe.backends, nil); err != nil {
			p.slots.release(slotRange{off, n})
			return fmt.Errorf("frontend %s: write backends: %w", keyString(key), err)
		}
		p.writes += int(n)
		fe.offset = off
	}
	val := socklbSvcValue{Count: n, Offset: fe.offset, Verdict: uint32(fe.verdict)}
	if err := p.objs.Services.Put(key, val); err != nil {
		if n > 0 {
			p.slots.release(slotRange{fe.offset, n})
		}
		return fmt.Errorf("frontend %s: write: %w", keyString(key), err)
	}
	p.writes++
	return nil
}

// frontends calls f with every frontend of svc and its verdict and backend slots.
func frontends(svc *model.Service, f func(socklbSvcKey, frontend)) {
	for _, sp := range svc.Ports {
		var proto uint8
		switch sp.Protocol {
		case model.TCP:
			proto = 6
		case model.UDP:
			proto = 17
		default:
			continue // SCTP is not balanced at the socket level
		}
		for _, ip := range svc.ClusterIPs {
			set := sp.Cluster.ForFamily(ip.Is6())
			key := socklbSvcKey{Addr: ip.As16(), Port: htons(uint16(sp.Port)), Proto: proto}
			fe := frontend{verdict: set.Verdict}
			for _, ep := range set.Endpoints {
				fe.needed += uint64(ep.EffectiveWeight())
			}
			if set.Verdict == model.Forward && fe.needed <= maxFrontendSlots {
				for _, ep := range set.Endpoints {
					be := socklbBackend{Addr: ep.Addr.As16(), Port: htons(uint16(ep.Port))}
					for range ep.EffectiveWeight() {
						fe.backends = append(fe.backends, be)
					}
				}
			}
			f(key, fe)
		}
	}
}

func sortedKeys(m map[socklbSvcKey]frontend) []socklbSvcKey {
	keys := make([]socklbSvcKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b socklbSvcKey) int {
		if c := bytes.Compare(a.Addr[:], b.Addr[:]); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(htons(a.Port), htons(b.Port)), cmp.Compare(a.Proto, b.Proto))
	})
	return keys
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func keyString(k socklbSvcKey) string {
	proto := "tcp"
	if k.Proto == 17 {
		proto = "udp"
	}
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(netip.AddrFrom16(k.Addr).Unmap(), htons(k.Port)), proto)
}

// CgroupMount returns the mount point of the cgroup v2 hierarchy, read from
// /proc/self/mountinfo: /sys/fs/cgroup on a unified layout, /sys/fs/cgroup/unified on a
// hybrid one.
func CgroupMount() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find the cgroup2 mount: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// "id parent major:minor root mountpoint options... - fstype source superoptions"
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fields, fs := strings.Fields(pre), strings.Fields(post)
		if len(fields) >= 5 && len(fs) >= 1 && fs[0] == "cgroup2" {
			return filepath.Clean(fields[4]), nil
		}
	}
	return "", errors.New("find the cgroup2 mount: no cgroup2 file system in /proc/self/mountinfo")
}
