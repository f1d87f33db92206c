// Package ebpf is the eBPF data plane's socket load balancer: cgroup programs
// (bpf/socklb.c) rewrite a connect() or sendmsg() to a Service frontend — a ClusterIP,
// external IP, LoadBalancer IP or node port — to one of the endpoints the model chose
// (at random, by Maglev, or by ClientIP affinity) before any packet exists. The
// Proxier writes the programs' maps from each Snapshot, changing only the frontends
// whose endpoints changed.
package ebpf

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/healthcheck"
	"weir.dev/weir/internal/dataplane/kernel"
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
	// Proxy is kube-proxy's settings: --nodeport-addresses chooses the node addresses
	// whose node ports are balanced, --detect-local-mode which sockets of other network
	// namespaces count as pods (ProxyConfig.External) and the pod CIDR checked against
	// loadBalancerSourceRanges.
	Proxy model.ProxyConfig
	// HealthCheck serves the health-check node ports of externalTrafficPolicy: Local
	// Services, as the other kernel modes do; default a new server in the namespace of
	// the Sync's caller. DisableHealthCheck serves none.
	HealthCheck        *healthcheck.Server
	DisableHealthCheck bool
	// Logger gets a warning per Service port whose scheduler the mode cannot do (it
	// uses Random). Default: discard.
	Logger *slog.Logger
	// Registerer, when set, gets the mode's metrics: weir_ebpf_sync_duration_seconds,
	// weir_ebpf_sync_errors_total, weir_ebpf_frontends, weir_ebpf_backend_slots,
	// weir_ebpf_programs_attached and weir_dataplane_unsupported_scheduler.
	Registerer prometheus.Registerer
}

// Proxier programs socket load balancing from Snapshots.
type Proxier struct {
	mu      sync.Mutex
	objs    socklbObjects
	links   []link.Link
	slots   slotAllocator
	maglevs slotAllocator // ranges of the maglev map
	proxy   model.ProxyConfig
	health  *healthcheck.Server // nil: none
	unsup   *dataplane.UnsupportedSchedulers
	unsupBy map[model.ServiceKey][]dataplane.UnsupportedScheduler
	closed  bool
	nodeIPs map[netip.Addr]bool       // written to nodeips
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
	backends []socklbBackend // one per slot (an endpoint of weight w has w slots; Maglev: one per endpoint)
	offset   uint32
	affinity uint32   // ClientIP affinity timeout in seconds; 0: none
	seed     uint64   // Maglev
	table    []uint32 // Maglev: the slot (relative to offset) of each table entry
	tableOff uint32
	err      error // the frontend cannot be written
}

func (f *frontend) same(o *frontend) bool {
	return f.verdict == o.verdict && f.affinity == o.affinity && f.seed == o.seed &&
		slices.Equal(f.backends, o.backends) && slices.Equal(f.table, o.table)
}

func (f *frontend) value() socklbSvcValue {
	v := socklbSvcValue{Count: uint32(len(f.backends)), Offset: f.offset, Verdict: uint32(f.verdict), AffinityTimeout: f.affinity}
	if f.table != nil {
		v.Algorithm, v.MaglevOffset, v.MaglevSize, v.Seed = algMaglev, f.tableOff, uint32(len(f.table)), f.seed
	}
	return v
}

// members are the distinct endpoints of a frontend with affinity.
func (f *frontend) members(key socklbSvcKey) []socklbMemberKey {
	if f.affinity == 0 {
		return nil
	}
	var out []socklbMemberKey
	for _, be := range f.backends {
		mk := socklbMemberKey{Svc: key, Endpoint: be}
		if !slices.Contains(out, mk) {
			out = append(out, mk)
		}
	}
	return out
}

const (
	algMaglev = 1 // ALG_MAGLEV
	scopeAll  = 0 // SCOPE_ALL
	scopePod  = 1 // SCOPE_POD
)

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
		proxy:   opts.Proxy,
		health:  opts.HealthCheck,
		unsupBy: map[model.ServiceKey][]dataplane.UnsupportedScheduler{},
		nodeIPs: map[netip.Addr]bool{},
		applied: map[socklbSvcKey]frontend{},
		orphans: map[socklbSvcKey]bool{},
		owner:   map[socklbSvcKey]model.ServiceKey{},
		bySvc:   map[model.ServiceKey][]socklbSvcKey{},
		m:       newMetrics(),
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p.unsup = dataplane.NewUnsupportedSchedulers("ebpf", log)
	if opts.Registerer != nil {
		for _, c := range append(p.m.collectors(), p.unsup.Collector()) {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("ebpf: register metrics: %w", err)
			}
		}
	}
	if err := p.load(); err != nil {
		return nil, err
	}
	p.slots.free = []slotRange{{0, p.objs.Backends.MaxEntries()}}
	p.maglevs.free = []slotRange{{0, p.objs.Maglev.MaxEntries()}}
	if opts.DisableHealthCheck {
		p.health = nil
	} else if p.health == nil {
		p.health = healthcheck.New(healthcheck.Options{})
	}
	if cookie, err := netnsCookie(); err == nil {
		// Without it (kernels before 5.14) every socket counts as the node's.
		if err := p.objs.Settings.Put(uint32(0), socklbConfig{HostNetns: cookie}); err != nil {
			p.objs.Close()
			return nil, fmt.Errorf("ebpf: write settings: %w", err)
		}
	}
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
		fe := frontend{needed: uint64(val.Count), verdict: model.Verdict(val.Verdict), offset: val.Offset, affinity: val.AffinityTimeout}
		r := slotRange{val.Offset, val.Count}
		ok := val.Count <= maxFrontendSlots && p.slots.reserve(r)
		if ok && val.Algorithm == algMaglev {
			fe.seed, fe.tableOff = val.Seed, val.MaglevOffset
			if !p.maglevs.reserve(slotRange{val.MaglevOffset, val.MaglevSize}) {
				p.slots.release(r)
				ok = false
			}
			for i := uint32(0); ok && i < val.MaglevSize; i++ {
				var rel uint32
				if err := p.objs.Maglev.Lookup(val.MaglevOffset+i, &rel); err != nil {
					p.slots.release(r)
					p.maglevs.release(slotRange{val.MaglevOffset, val.MaglevSize})
					ok = false
					break
				}
				fe.table = append(fe.table, rel)
			}
		}
		for i := uint32(0); ok && i < val.Count; i++ {
			var be socklbBackend
			if err := p.objs.Backends.Lookup(val.Offset+i, &be); err != nil {
				p.slots.release(r)
				if fe.table != nil {
					p.maglevs.release(slotRange{fe.tableOff, uint32(len(fe.table))})
				}
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
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	p.m.programs.Set(0)
	errs = append(errs, p.objs.Close())
	if p.health != nil {
		p.health.Close()
	}
	return errors.Join(errs...)
}

// Cleanup closes the Proxier and removes what it pinned, detaching the programs.
func (p *Proxier) Cleanup(ctx context.Context) error {
	err := p.Close()
	if p.pinPath != "" {
		err = errors.Join(err, Pins{p.pinPath}.Cleanup(ctx))
	}
	return err
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
	if p.health != nil {
		err = errors.Join(err, p.health.Sync(healthcheck.FromSnapshot(snap)))
	}
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
	p.reportUnsupported(scope, snap)
	e := &env{proxy: p.proxy}
	var errs []error
	if err := p.syncNodeIPs(e); err != nil {
		errs = append(errs, err)
	}
	want := map[socklbSvcKey]frontend{}
	owner := map[socklbSvcKey]model.ServiceKey{}
	for _, svc := range svcs {
		if svc.Proxied() {
			e.frontends(svc, func(key socklbSvcKey, fe frontend) {
				if _, dup := want[key]; !dup {
					want[key], owner[key] = fe, svc.Key
				}
			})
		}
	}

	var freed []frontend // whose ranges and members are given back after the sync
	if full {
		// Frontends an earlier run left in pinned maps: kept if wanted, else deleted.
		for key := range p.orphans {
			if _, ok := want[key]; ok {
				delete(p.orphans, key)
				continue
			}
			if err := p.remove(key, &freed); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(p.orphans, key)
		}
	}
	for _, k := range scope {
		var kept []socklbSvcKey // frontends that could not be deleted stay k's
		for _, key := range p.bySvc[k] {
			if _, ok := want[key]; ok || p.owner[key] != k {
				continue
			}
			if err := p.remove(key, &freed); err != nil {
				errs = append(errs, err)
				kept = append(kept, key)
				continue
			}
			delete(p.owner, key)
		}
		if kept != nil {
			p.bySvc[k] = kept
		} else {
			delete(p.bySvc, k)
		}
	}
	var stale []socklbMemberKey // members of changed frontends no longer theirs
	var todo []socklbSvcKey     // frontends to write
	for _, key := range sortedKeys(want) {
		fe := want[key]
		p.bySvc[owner[key]] = append(p.bySvc[owner[key]], key)
		p.owner[key] = owner[key]
		if fe.err != nil {
			errs = append(errs, fmt.Errorf("frontend %s: %w; left as it was", keyString(key), fe.err))
			continue
		}
		if fe.needed > maxFrontendSlots {
			errs = append(errs, fmt.Errorf("frontend %s: endpoint weights need %d backend slots, more than %d; left as it was", keyString(key), fe.needed, maxFrontendSlots))
			continue
		}
		if old, had := p.applied[key]; had && old.same(&fe) {
			continue
		}
		todo = append(todo, key)
	}
	// Many frontends (a full sync) go in one batch per map; a failed batch, or a few
	// frontends, one frontend at a time.
	fes := make([]*frontend, len(todo))
	for i, key := range todo {
		fe := want[key]
		fes[i] = &fe
	}
	batched := len(todo) >= batchMin && p.writeBatch(todo, fes) == nil
	for i, key := range todo {
		fe := fes[i]
		if !batched {
			if err := p.write(key, fe); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		old, had := p.applied[key]
		p.applied[key] = *fe
		if had {
			freed = append(freed, frontend{backends: old.backends, offset: old.offset, table: old.table, tableOff: old.tableOff})
			for _, mk := range old.members(key) {
				if !slices.Contains(fe.members(key), mk) {
					stale = append(stale, mk)
				}
			}
		}
	}
	// Slots and members are given back only after every frontend moved off them.
	for _, mk := range stale {
		if err := p.objs.Members.Delete(mk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete affinity member of %s: %w", keyString(mk.Svc), err))
		}
		p.writes++
	}
	for _, fe := range freed {
		p.slots.release(slotRange{fe.offset, uint32(len(fe.backends))})
		if fe.table != nil {
			p.maglevs.release(slotRange{fe.tableOff, uint32(len(fe.table))})
		}
	}
	if len(errs) > 0 {
		p.version = 0 // the next Sync compares everything
		return errors.Join(errs...)
	}
	p.version = snap.Version
	return nil
}

// reportUnsupported warns once and sets weir_dataplane_unsupported_scheduler for the
// ports of the Services in scope whose scheduler is neither Random nor Maglev.
func (p *Proxier) reportUnsupported(scope []model.ServiceKey, snap *model.Snapshot) {
	for _, k := range scope {
		var now []dataplane.UnsupportedScheduler
		if svc := snap.Service(k); svc != nil && svc.Proxied() {
			for _, sp := range svc.Ports {
				if pol := kernel.PortPolicy(svc, sp); pol != nil && pol.Algorithm != balance.Random && pol.Algorithm != balance.Maglev {
					now = append(now, dataplane.UnsupportedScheduler{Port: sp.ID(svc.Key), Algorithm: string(pol.Algorithm)})
				}
			}
		}
		p.unsup.Update(p.unsupBy[k], now)
		if now != nil {
			p.unsupBy[k] = now
		} else {
			delete(p.unsupBy, k)
		}
	}
}

// remove deletes a frontend and its affinity members; its ranges go to *freed.
func (p *Proxier) remove(key socklbSvcKey, freed *[]frontend) error {
	old := p.applied[key]
	if err := p.objs.Services.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete frontend %s: %w", keyString(key), err)
	}
	p.writes++
	for _, mk := range old.members(key) {
		if err := p.objs.Members.Delete(mk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete affinity member of %s: %w", keyString(key), err)
		}
		p.writes++
	}
	delete(p.applied, key)
	*freed = append(*freed, old)
	return nil
}

// batchMin is the number of frontends from which a Sync writes them in batches.
const batchMin = 64

// writeBatch is write for many frontends: their ranges allocated, then one batch for
// the backends, one for the Maglev tables, the affinity members, and one batch for the
// frontends' values, so every frontend points at slots already written. On an error
// nothing stays allocated and the caller writes them one at a time (which overwrites
// the values of a partly applied batch).
func (p *Proxier) writeBatch(keys []socklbSvcKey, fes []*frontend) (err error) {
	var slots, tables []slotRange
	defer func() {
		if err != nil {
			for _, r := range slots {
				p.slots.release(r)
			}
			for _, r := range tables {
				p.maglevs.release(r)
			}
		}
	}()
	var bIdx, mIdx, mVal []uint32
	var bVal []socklbBackend
	for _, fe := range fes {
		if n := uint32(len(fe.backends)); n > 0 {
			off, ok := p.slots.alloc(n)
			if !ok {
				return errors.New("no room")
			}
			slots = append(slots, slotRange{off, n})
			fe.offset = off
			for i, be := range fe.backends {
				bIdx, bVal = append(bIdx, off+uint32(i)), append(bVal, be)
			}
		}
		if m := uint32(len(fe.table)); m > 0 {
			off, ok := p.maglevs.alloc(m)
			if !ok {
				return errors.New("no room")
			}
			tables = append(tables, slotRange{off, m})
			fe.tableOff = off
			for i, v := range fe.table {
				mIdx, mVal = append(mIdx, off+uint32(i)), append(mVal, v)
			}
		}
	}
	if len(bIdx) > 0 {
		if _, err := p.objs.Backends.BatchUpdate(bIdx, bVal, nil); err != nil {
			return err
		}
	}
	if len(mIdx) > 0 {
		if _, err := p.objs.Maglev.BatchUpdate(mIdx, mVal, nil); err != nil {
			return err
		}
	}
	for i, fe := range fes {
		for _, mk := range fe.members(keys[i]) {
			if err := p.objs.Members.Put(mk, uint8(1)); err != nil {
				return err
			}
			p.writes++
		}
	}
	vals := make([]socklbSvcValue, len(fes))
	for i, fe := range fes {
		vals[i] = fe.value()
	}
	if _, err := p.objs.Services.BatchUpdate(keys, vals, nil); err != nil {
		return err
	}
	p.writes += len(bIdx) + len(tables) + len(keys)
	return nil
}

// write fills fresh ranges with fe's backends and Maglev table, adds its affinity
// members, and points the frontend at them.
func (p *Proxier) write(key socklbSvcKey, fe *frontend) error {
	n := uint32(len(fe.backends))
	var undo []func()
	fail := func(err error) error {
		for _, u := range undo {
			u()
		}
		return fmt.Errorf("frontend %s: %w", keyString(key), err)
	}
	if n > 0 {
		off, ok := p.slots.alloc(n)
		if !ok {
			return fail(fmt.Errorf("no room for %d backend slots (capacity %d)", n, p.capacity()))
		}
		undo = append(undo, func() { p.slots.release(slotRange{off, n}) })
		idx := make([]uint32, n)
		for i := range idx {
			idx[i] = off + uint32(i)
		}
		if _, err := p.objs.Backends.BatchUpdate(idx, fe.backends, nil); err != nil {
			return fail(fmt.Errorf("write backends: %w", err))
		}
		p.writes += int(n)
		fe.offset = off
	}
	if m := uint32(len(fe.table)); m > 0 {
		off, ok := p.maglevs.alloc(m)
		if !ok {
			return fail(fmt.Errorf("no room for a Maglev table of %d entries (capacity %d)", m, p.objs.Maglev.MaxEntries()))
		}
		undo = append(undo, func() { p.maglevs.release(slotRange{off, m}) })
		idx := make([]uint32, m)
		for i := range idx {
			idx[i] = off + uint32(i)
		}
		if _, err := p.objs.Maglev.BatchUpdate(idx, fe.table, nil); err != nil {
			return fail(fmt.Errorf("write Maglev table: %w", err))
		}
		p.writes++ // one batch
		fe.tableOff = off
	}
	for _, mk := range fe.members(key) {
		if err := p.objs.Members.Put(mk, uint8(1)); err != nil {
			return fail(fmt.Errorf("write affinity member: %w", err))
		}
		p.writes++
	}
	if err := p.objs.Services.Put(key, fe.value()); err != nil {
		return fail(fmt.Errorf("write: %w", err))
	}
	p.writes++
	return nil
}

// env is what a Sync builds frontends from besides the Snapshot.
type env struct {
	proxy model.ProxyConfig
	local []netip.Addr // every address of the node
}

// syncNodeIPs reads the node's addresses and writes those that serve node ports
// (--nodeport-addresses per family; loopback never) to nodeips, changes only.
func (p *Proxier) syncNodeIPs(e *env) error {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("ebpf: read the node's addresses: %w", err)
	}
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := pfx.Addr().Unmap()
		e.local = append(e.local, ip)
		if ip.IsLoopback() {
			continue
		}
		np := p.proxy.NodePorts(ip.Is6())
		ok := np.All
		for _, pf := range np.Prefixes {
			ok = ok || pf.Contains(ip)
		}
		if ok {
			want[ip] = true
		}
	}
	var errs []error
	for ip := range p.nodeIPs {
		if !want[ip] {
			if err := p.objs.Nodeips.Delete(socklbBackend{Addr: ip.As16()}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("ebpf: delete node address %s: %w", ip, err))
				continue
			}
			delete(p.nodeIPs, ip)
		}
	}
	for ip := range want {
		if !p.nodeIPs[ip] {
			if err := p.objs.Nodeips.Put(socklbBackend{Addr: ip.As16()}, uint8(1)); err != nil {
				errs = append(errs, fmt.Errorf("ebpf: write node address %s: %w", ip, err))
				continue
			}
			p.nodeIPs[ip] = true
		}
	}
	return errors.Join(errs...)
}

// frontends calls f with every frontend of svc: its ClusterIPs (the Cluster set), the
// other ports of its ClusterIPs (rejected), and its external IPs, LoadBalancer IPs and
// node ports, where the node's own sockets and the pods' may get different sets
// (ProxyConfig.External: the short-circuit of externalTrafficPolicy Local).
func (e *env) frontends(svc *model.Service, f func(socklbSvcKey, frontend)) {
	families := map[bool]bool{}
	for _, ip := range svc.ClusterIPs {
		families[ip.Is6()] = true
		for _, proto := range []uint8{6, 17} {
			f(socklbSvcKey{Addr: ip.As16(), Proto: proto}, frontend{verdict: model.Reject})
		}
	}
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
		pol := kernel.PortPolicy(svc, sp)
		build := func(set model.EndpointSet) frontend { return build(svc, pol, set) }
		key := func(ip netip.Addr, port int32, scope uint8) socklbSvcKey {
			return socklbSvcKey{Addr: ip.As16(), Port: htons(uint16(port)), Proto: proto, Scope: scope}
		}
		for _, ip := range svc.ClusterIPs {
			f(key(ip, sp.Port, scopeAll), build(sp.Cluster.ForFamily(ip.Is6())))
		}
		external := func(ip netip.Addr, port int32, lb bool) {
			v6 := ip.Is6()
			pods := e.proxy.DetectLocal.Pods(v6)
			node := build(sp.Set(e.proxy.External(svc, model.FromNode, pods).Set).ForFamily(v6))
			pod := build(sp.Set(e.proxy.External(svc, model.FromPod, pods).Set).ForFamily(v6))
			if ranges := svc.SourceRanges(v6); lb && len(ranges) > 0 {
				// The source address is not known at connect(): the node's sockets are
				// admitted when the ranges hold one of its addresses, the pods' when
				// they hold the whole pod CIDR.
				if !slices.ContainsFunc(e.local, func(a netip.Addr) bool { return a.Is6() == v6 && inRanges(ranges, a) }) {
					node = frontend{verdict: model.Drop}
				}
				if !pods.CIDR.IsValid() || !slices.ContainsFunc(ranges, func(r netip.Prefix) bool { return r.Bits() <= pods.CIDR.Bits() && r.Contains(pods.CIDR.Addr()) }) {
					pod = frontend{verdict: model.Drop}
				}
			}
			f(key(ip, port, scopeAll), node)
			if !pod.same(&node) {
				f(key(ip, port, scopePod), pod)
			}
		}
		for _, ip := range svc.ExternalIPs {
			external(ip, sp.Port, false)
		}
		for _, ip := range svc.LoadBalancerIPs {
			external(ip, sp.Port, true)
		}
		if sp.NodePort != 0 {
			for _, v6 := range []bool{false, true} {
				if families[v6] {
					any := netip.IPv4Unspecified()
					if v6 {
						any = netip.IPv6Unspecified()
					}
					external(any, sp.NodePort, false)
				}
			}
		}
	}
}

func inRanges(ranges []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ranges, func(r netip.Prefix) bool { return r.Contains(a) })
}

// build is a frontend for an endpoint set: its slots (an endpoint of weight w has w;
// Maglev: one each, the weights in the table), ClientIP affinity, the Maglev table.
func build(svc *model.Service, pol *model.Policy, set model.EndpointSet) frontend {
	fe := frontend{verdict: set.Verdict}
	if set.Verdict != model.Forward || len(set.Endpoints) == 0 {
		if fe.verdict == model.Forward {
			fe.verdict = model.Reject
		}
		return fe
	}
	if t := svc.AffinityTimeout; t > 0 {
		fe.affinity = uint32(min((t+time.Second-1)/time.Second, 1<<31))
	}
	if pol != nil && pol.Algorithm == balance.Maglev {
		bs := make([]balance.Backend, len(set.Endpoints))
		for i, ep := range set.Endpoints {
			bs[i] = balance.Backend{ID: balance.KeyOf(netip.AddrPortFrom(ep.Addr, uint16(ep.Port))), Weight: ep.EffectiveWeight()}
			fe.backends = append(fe.backends, socklbBackend{Addr: ep.Addr.As16(), Port: htons(uint16(ep.Port))})
		}
		fe.needed = uint64(len(bs))
		t, err := balance.MaglevTable(bs, balance.Options{MaglevTableSize: pol.MaglevTableSize, Seed: pol.MaglevSeed})
		if err != nil {
			fe.err = err
			return fe
		}
		fe.table = make([]uint32, len(t))
		for i, v := range t {
			fe.table[i] = uint32(v)
		}
		fe.seed = pol.MaglevSeed
		return fe
	}
	for _, ep := range set.Endpoints {
		fe.needed += uint64(ep.EffectiveWeight())
	}
	if fe.needed <= maxFrontendSlots {
		for _, ep := range set.Endpoints {
			be := socklbBackend{Addr: ep.Addr.As16(), Port: htons(uint16(ep.Port))}
			for range ep.EffectiveWeight() {
				fe.backends = append(fe.backends, be)
			}
		}
	}
	return fe
}

// netnsCookie is the cookie of the calling thread's network namespace.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
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
		return cmp.Or(cmp.Compare(htons(a.Port), htons(b.Port)), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Scope, b.Scope))
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
	s := fmt.Sprintf("%s/%s", netip.AddrPortFrom(netip.AddrFrom16(k.Addr).Unmap(), htons(k.Port)), proto)
	if k.Scope == scopePod {
		s += " (pods)"
	}
	return s
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
