// Package nftables is weir's nftables data plane: kube-proxy's nftables mode, built on
// sigs.k8s.io/knftables. Each IP family gets one table (ip weir, ip6 weir) with a
// single verdict map dispatching ClusterIPs, external IPs and LoadBalancer IPs, a
// second one for node ports, and one chain per Service port that picks an endpoint and
// DNATs to it. Syncs are partial: only the chains and map elements of Services that
// changed are written, in one transaction per table.
package nftables

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/fingerprint"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

// Options configure a Proxier.
type Options struct {
	kernel.Options
	// NFTables injects the table interfaces (tests use knftables.NewFake); default
	// knftables.New for each family, with the table "weir".
	NFTables map[kernel.Family]knftables.Interface
}

// Proxier is the nftables data plane.
type Proxier struct {
	log        *slog.Logger
	opts       Options // with defaults
	syncs      *kernel.Syncs
	operations prometheus.Counter
	tables     []*table
	mu         sync.Mutex
	services   map[model.ServiceKey]*serviceState
	synced     bool
	// gen counts syncs; a Service state not stamped with the current one is gone.
	gen uint64
	// applied is the Version of the last Snapshot written without error, 0 for none: a
	// Snapshot with a Delta against it needs only the Services the Delta names.
	applied uint64
}

type table struct {
	f   ipFamily
	nft knftables.Interface
	// owner of each map or set element, so that two Services never fight over a key.
	owners owners
	// refs counts the Services using each shared object: hairpin elements ("h|key")
	// and shared pick chains ("c|name").
	refs map[string]int
	// bulk, when set, applies full syncs with many elements per statement (bulk.go);
	// nil when the knftables.Interface was injected (tests), so that it sees everything.
	bulk bulkRunner
}

// serviceState is what was written for one Service: its model (immutable, shared with
// the Snapshot), whose objects buildService derives again when the Service changes,
// and a hash of its fingerprint. The objects themselves (element and rule texts) are
// not kept: at 10,000 Services × 10 endpoints they took ~35 MB.
type serviceState struct {
	gen  uint64
	svc  *model.Service
	spec uint64 // maphash of fingerprint.Append(svc)
	// owner stands for the Service in the tables' owners, the same from state to state.
	owner *owner
	// unsupported lists the ports whose scheduler the kernel cannot do.
	unsupported []dataplane.UnsupportedScheduler
}

// objects are the objects st's Service has in the table of family f; nil for none.
func (st *serviceState) objects(f ipFamily) *serviceObjects {
	if st == nil {
		return nil
	}
	return buildService(f, st.svc)
}

var _ dataplane.Dataplane = (*Proxier)(nil)

// specSeed hashes Services' fingerprints: an unchanged hash means unchanged rules (two
// different fingerprints collide with odds of 2^-64 per change).
var specSeed = maphash.MakeSeed()

// New checks that the kernel and nft can do what weir needs and returns a Proxier. It
// writes nothing until the first Sync.
func New(opts Options) (*Proxier, error) {
	var err error
	if opts.Options, err = opts.Options.WithDefaults(); err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	p := &Proxier{opts: opts, services: map[model.ServiceKey]*serviceState{}}
	for _, fam := range opts.IPFamilies {
		f := familyV4
		if fam == kernel.IPv6 {
			f = familyV6
		}
		f.proxy, f.pods = opts.Proxy, opts.Proxy.DetectLocal.Pods(f.is6)
		nft := opts.NFTables[fam]
		var bulk bulkRunner
		if nft == nil {
			if nft, err = knftables.New(f.nft, tableName); err != nil {
				return nil, fmt.Errorf("nftables mode unavailable (%s): %w", fam, err)
			}
			if err := checkKernel(context.Background(), nft, f); err != nil {
				return nil, err
			}
			if bulk, err = newNFTBinary(); err != nil {
				return nil, fmt.Errorf("nftables mode unavailable (%s): %w", fam, err)
			}
		}
		p.tables = append(p.tables, &table{f: f, nft: nft, bulk: bulk, owners: owners{}, refs: map[string]int{}})
	}
	p.operations = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "weir_nftables_operations_total", Help: "nftables operations written (chains, rules, elements).",
	})
	if p.syncs, err = kernel.NewSyncs("nftables", opts.Options, prometheus.ExponentialBuckets(0.001, 2, 14), p.operations); err != nil {
		return nil, err
	}
	p.log = p.syncs.Log
	return p, nil
}

// checkKernel asks nft to check (not apply) everything weir writes, in one transaction;
// if that fails, one transaction per feature names what is missing, so that a missing
// module is reported at start-up rather than failing half-way.
func checkKernel(ctx context.Context, nft knftables.Interface, f ipFamily) error {
	addr, addrPort := "10.0.0.1", "10.0.0.1:80"
	if f.is6 {
		addr, addrPort = "fd00::1", "[fd00::1]:80"
	}
	type chainSpec struct {
		typ  knftables.BaseChainType
		hook knftables.BaseChainHook
		prio knftables.BaseChainPriority
	}
	natPre := chainSpec{knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority}
	natPost := chainSpec{knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority}
	filterIn := chainSpec{knftables.FilterType, knftables.InputHook, knftables.FilterPriority}
	features := []struct {
		name  string
		chain chainSpec
		rules []string
		objs  func(chain string) []knftables.Object
	}{
		{name: "nat chains and DNAT (nft_chain_nat, nf_nat)", chain: natPre, rules: []string{"meta l4proto tcp dnat to " + addrPort}},
		{name: "verdict maps with concatenations (nft_set_hash)", chain: filterIn, rules: []string{f.kw + " daddr . meta l4proto . th dport vmap { " + addr + " . tcp . 80 : drop }"}},
		{name: "numgen (nft_numgen)", chain: filterIn, rules: []string{"numgen random mod 2 < 1 drop", "numgen inc mod 2 < 1 drop"}},
		{name: "jhash (nft_hash)", chain: filterIn, rules: []string{"jhash " + f.kw + " saddr mod 2 seed 0x1 < 1 drop"}},
		{name: "fib (nft_fib)", chain: filterIn, rules: []string{"fib daddr type local drop"}},
		{name: "masquerade (nft_masq)", chain: natPost, rules: []string{"masquerade fully-random"}},
		{name: "conntrack matches (nft_ct)", chain: filterIn, rules: []string{"ct state new drop", "ct status dnat drop"}},
		{name: "reject (nft_reject)", chain: filterIn, rules: []string{"meta l4proto tcp reject with tcp reset", "reject"}},
		{name: "dynamic sets with timeouts (nft_dynset)", chain: filterIn, objs: func(chain string) []knftables.Object {
			return []knftables.Object{
				&knftables.Set{Name: chain, Type: f.addrType, Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: ptr(time.Minute)},
				&knftables.Rule{Chain: chain, Rule: f.kw + " saddr @" + chain + " update @" + chain + " { " + f.kw + " saddr }"},
			}
		}},
		{name: "DNAT through typeof maps keyed by numgen (nft >= 1.0)", chain: natPre, objs: func(chain string) []knftables.Object {
			return []knftables.Object{
				&knftables.Map{Name: chain, TypeOf: f.kw + " daddr . meta l4proto . tcp dport . numgen random mod 1 : " + f.kw + " daddr . tcp dport"},
				&knftables.Rule{Chain: chain, Rule: "meta l4proto tcp dnat to " + f.kw + " daddr . meta l4proto . tcp dport . numgen random mod 2 map @" + chain},
			}
		}},
	}
	add := func(tx *knftables.Transaction, i int) {
		feat := features[i]
		name := fmt.Sprintf("weir-probe-%d", i)
		tx.Add(&knftables.Chain{Name: name, Type: ptr(feat.chain.typ), Hook: ptr(feat.chain.hook), Priority: ptr(feat.chain.prio)})
		for _, r := range feat.rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
		if feat.objs != nil {
			for _, o := range feat.objs(name) {
				tx.Add(o)
			}
		}
	}
	all := nft.NewTransaction()
	all.Add(&knftables.Table{})
	for i := range features {
		add(all, i)
	}
	if nft.Check(ctx, all) == nil {
		return nil
	}
	for i, feat := range features {
		tx := nft.NewTransaction()
		tx.Add(&knftables.Table{})
		add(tx, i)
		if err := nft.Check(ctx, tx); err != nil {
			return fmt.Errorf("nftables mode unavailable: the kernel or nft lacks %s: %w", feat.name, err)
		}
	}
	if err := nft.Check(ctx, all); err != nil {
		return fmt.Errorf("nftables mode unavailable: %w", err)
	}
	return nil
}

// Name is "nftables".
func (p *Proxier) Name() string { return "nftables" }

// Close stops the health-check servers. The rules stay in place; Cleanup removes them.
func (p *Proxier) Close() { p.syncs.Close() }

// Leftovers reports whether weir's tables exist (an earlier run in nftables mode left
// them), for removing them when weir runs in another mode.
func (p *Proxier) Leftovers(ctx context.Context) (bool, error) {
	for _, t := range p.tables {
		if _, err := t.nft.List(ctx, "chains"); err == nil {
			return true, nil
		} else if !knftables.IsNotFound(err) {
			return false, fmt.Errorf("list table %s %s: %w", t.f.nft, tableName, err)
		}
	}
	return false, nil
}

// Cleanup deletes weir's tables. It works without a prior Sync, so that `weir cleanup`
// can remove what an earlier run left.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, t := range p.tables {
		tx := t.nft.NewTransaction()
		tx.Add(&knftables.Table{})
		tx.Delete(&knftables.Table{})
		if err := t.nft.Run(ctx, tx); err != nil {
			errs = append(errs, fmt.Errorf("delete table %s %s: %w", t.f.nft, tableName, err))
		}
	}
	p.synced = false
	p.services = map[model.ServiceKey]*serviceState{}
	for _, t := range p.tables {
		t.owners = owners{}
		t.refs = map[string]int{}
	}
	return errors.Join(errs...)
}

// Sync programs snap. The first Sync replaces whatever an earlier run left in weir's
// tables; later ones write only what changed.
func (p *Proxier) Sync(ctx context.Context, snap *model.Snapshot) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.syncs.Sync(snap, func() error { return p.sync(ctx, snap) })
	p.applied = 0
	if err == nil && snap != nil {
		p.applied = snap.Version
	}
	return err
}

type change struct {
	key  model.ServiceKey
	old  *serviceState
	new  *serviceState // nil: removed
	objs []*serviceObjects
}

func (p *Proxier) sync(ctx context.Context, snap *model.Snapshot) error {
	if !p.synced {
		return p.syncFull(ctx, snap)
	}
	var changes []change
	if d := snap.DeltaFrom(p.applied); d != nil {
		changes = p.deltaChanges(snap, d)
	} else {
		changes = p.allChanges(snap)
	}
	if len(changes) == 0 {
		return nil
	}
	sort.Slice(changes, func(i, j int) bool {
		return changes[i].key.String() < changes[j].key.String()
	})

	// The element owners are updated in place: if a transaction fails, the next sync
	// is a full one that rebuilds them from scratch.
	for ti, t := range p.tables {
		tx := t.nft.NewTransaction()
		w := newWriter()
		for _, c := range changes {
			var newObjs *serviceObjects
			if c.new != nil {
				newObjs = c.objs[ti]
			}
			who := c.old.ownerRecord()
			if c.new != nil {
				who = c.new.owner
			}
			w.diff(p.log, who, c.old.objects(t.f), newObjs, t.owners, t.refs)
		}
		w.write(tx, t.f, t.refs)
		if tx.NumOperations() == 0 {
			continue
		}
		if err := t.nft.Run(ctx, tx); err != nil {
			p.synced = false
			return fmt.Errorf("nftables sync (%s, %d operations): %w", t.f.nft, tx.NumOperations(), err)
		}
		p.operations.Add(float64(tx.NumOperations()))
	}
	p.finish(changes)
	return nil
}

// allChanges compares every Service of snap with what was written, by fingerprint.
func (p *Proxier) allChanges(snap *model.Snapshot) []change {
	var changes []change
	p.gen++
	var buf []byte
	for _, svc := range snap.Services {
		if !svc.Proxied() {
			continue
		}
		if c, ok := p.compare(svc, &buf); ok {
			changes = append(changes, c)
		}
	}
	for key, old := range p.services {
		if old.gen != p.gen {
			changes = append(changes, change{key: key, old: old})
		}
	}
	return changes
}

// deltaChanges compares only the Services the Delta names: the others are the same
// as in the Snapshot written last.
func (p *Proxier) deltaChanges(snap *model.Snapshot, d *model.Delta) []change {
	var changes []change
	p.gen++ // stamps the states compared here only
	var buf []byte
	for _, key := range d.Services {
		svc := snap.Service(key)
		if svc == nil || !svc.Proxied() {
			if old := p.services[key]; old != nil {
				changes = append(changes, change{key: key, old: old})
			}
			continue
		}
		if c, ok := p.compare(svc, &buf); ok {
			changes = append(changes, c)
		}
	}
	return changes
}

// compare stamps svc's state with the current generation and returns the change that
// writes svc, if its rules differ from what was written.
func (p *Proxier) compare(svc *model.Service, buf *[]byte) (change, bool) {
	*buf = fingerprint.Append((*buf)[:0], svc)
	old := p.services[svc.Key]
	if old != nil {
		if old.gen == p.gen {
			return change{}, false // a duplicate key; the first one wins
		}
		old.gen = p.gen
		if old.spec == maphash.Bytes(specSeed, *buf) {
			old.svc = svc
			return change{}, false
		}
	}
	c := change{key: svc.Key, old: old, new: &serviceState{gen: p.gen, svc: svc, spec: maphash.Bytes(specSeed, *buf), owner: old.ownerRecord()}}
	if c.new.owner == nil {
		c.new.owner = &owner{key: svc.Key}
	}
	for _, t := range p.tables {
		c.objs = append(c.objs, buildService(t.f, svc))
	}
	c.new.unsupported = c.objs[0].unsupported
	return c, true
}

// syncFull writes every Service into new tables that replace the old ones, one
// transaction per table. Tables weir created itself get a streamed bulk script
// (bulk.go): each Service is written as soon as it is built, so that nft parses while
// weir builds. Injected tables (tests) get the same transaction through knftables.
func (p *Proxier) syncFull(ctx context.Context, snap *model.Snapshot) (err error) {
	p.synced = false
	p.gen++
	type output struct {
		script *tableScript // bulk
		tx     *knftables.Transaction
		w      *writer
	}
	outs := make([]output, len(p.tables))
	defer func() {
		if err != nil {
			for _, o := range outs {
				if o.script != nil {
					_ = o.script.out.abort()
				}
			}
		}
	}()
	// nft starts first: it loads while the Services are listed.
	for ti, t := range p.tables {
		tx := t.nft.NewTransaction()
		tx.Add(&knftables.Table{Comment: ptr("weir service proxy")})
		tx.Delete(&knftables.Table{})
		tx.Add(&knftables.Table{Comment: ptr("weir service proxy")})
		for _, obj := range baseObjects(t.f, p.opts.MasqueradeMark) {
			tx.Add(obj)
		}
		if t.bulk == nil {
			outs[ti].tx, outs[ti].w = tx, newWriter()
			continue
		}
		script := newTableScript(t.f)
		if err := script.start(ctx, t.bulk, tx); err != nil {
			return fmt.Errorf("nftables full sync (%s): %w", t.f.nft, err)
		}
		outs[ti].script = script
	}
	// Services in key order (the first of two claiming a frontend keeps it); the first
	// of duplicate keys wins.
	type entry struct {
		name string
		svc  *model.Service
	}
	entries := make([]entry, 0, len(snap.Services))
	seen := make(map[model.ServiceKey]bool, len(snap.Services))
	elements := 0
	for _, svc := range snap.Services {
		if !svc.Proxied() || seen[svc.Key] {
			continue
		}
		seen[svc.Key] = true
		entries = append(entries, entry{name: svc.Key.String(), svc: svc})
		elements++
		for _, sp := range svc.Ports {
			elements += 1 + max(len(sp.Cluster.Endpoints), len(sp.External.Endpoints))
		}
	}
	for ti, t := range p.tables {
		// Only the first table is sized ahead: most clusters have one family, and a
		// map sized for 100,000 elements that stays empty still holds ~12 MB.
		size := 0
		if ti == 0 {
			size = elements
		}
		t.owners, t.refs = make(owners, size), map[string]int{}
		if script := outs[ti].script; script != nil {
			shared := map[string]bool{}
			for _, e := range entries {
				sharedChains(t.f, e.svc, func(name string) { shared[name] = true })
			}
			script.sharedChains(slices.Sorted(maps.Keys(shared)))
		}
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })

	states := make(map[model.ServiceKey]*serviceState, len(entries))
	var spec []byte
	var b builder
	for _, e := range entries {
		spec = fingerprint.Append(spec[:0], e.svc)
		st := &serviceState{gen: p.gen, svc: e.svc, spec: maphash.Bytes(specSeed, spec), owner: &owner{key: e.svc.Key}}
		for ti, t := range p.tables {
			o := b.build(t.f, e.svc)
			if ti == 0 {
				st.unsupported = o.unsupported
			}
			if s := outs[ti].script; s != nil {
				s.service(p.log, st.owner, o, t.owners, t.refs)
			} else {
				outs[ti].w.diff(p.log, st.owner, nil, o, t.owners, t.refs)
			}
		}
		states[e.svc.Key] = st
	}
	for ti, t := range p.tables {
		if s := outs[ti].script; s != nil {
			outs[ti].script = nil // end commits or aborts
			if err := s.end(t.refs); err != nil {
				return fmt.Errorf("nftables full sync (%s, %d operations): %w", t.f.nft, s.ops, err)
			}
			p.operations.Add(float64(s.ops))
			continue
		}
		tx := outs[ti].tx
		outs[ti].w.write(tx, t.f, t.refs)
		if err := t.nft.Run(ctx, tx); err != nil {
			return fmt.Errorf("nftables sync (%s, %d operations): %w", t.f.nft, tx.NumOperations(), err)
		}
		p.operations.Add(float64(tx.NumOperations()))
	}

	changes := make([]change, 0, len(entries))
	for _, e := range entries {
		changes = append(changes, change{key: e.svc.Key, old: p.services[e.svc.Key], new: states[e.svc.Key]})
	}
	for key, old := range p.services {
		if states[key] == nil {
			changes = append(changes, change{key: key, old: old})
		}
	}
	p.services = states
	p.finish(changes)
	return nil
}

// finish records a written sync: the new Service states, stale UDP flows and
// unsupported schedulers.
func (p *Proxier) finish(changes []change) {
	p.synced = true
	written := make([]kernel.Change, 0, len(changes))
	for _, c := range changes {
		if c.new != nil {
			p.services[c.key] = c.new
		} else {
			delete(p.services, c.key)
		}
		written = append(written, kernel.Change{Old: c.old.service(), New: c.new.service(), OldUnsupported: c.old.unsupportedSchedulers(), NewUnsupported: c.new.unsupportedSchedulers()})
	}
	p.syncs.Written(written)
}

// service is the Service of a state, nil for none.
func (st *serviceState) service() *model.Service {
	if st == nil {
		return nil
	}
	return st.svc
}

// ownerRecord is st's owner record, nil for none.
func (st *serviceState) ownerRecord() *owner {
	if st == nil {
		return nil
	}
	return st.owner
}

// unsupportedSchedulers are the schedulers of st's Service that nftables cannot do.
func (st *serviceState) unsupportedSchedulers() []dataplane.UnsupportedScheduler {
	if st == nil {
		return nil
	}
	return st.unsupported
}
