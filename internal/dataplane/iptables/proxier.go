// Package iptables is weir's iptables data plane, kube-proxy's classic layout:
// WEIR-SERVICES dispatches to one WEIR-SVC chain per Service port, which picks a
// WEIR-SEP endpoint chain with the statistic match; WEIR-EXT chains handle external
// traffic, WEIR-NODEPORTS node ports, WEIR-MARK-MASQ and WEIR-POSTROUTING masquerade.
// Rules are applied with iptables-restore --noflush; syncs are partial as in KEP-3453:
// the dispatch chains are rewritten every time, the per-Service chains only when their
// Service changed. It is the linear baseline nftables is measured against.
package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/fingerprint"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

// dropMark marks packets that a firewall chain refused; the filter table drops them.
const dropMark = 0x8000

// Options configure a Proxier.
type Options struct {
	kernel.Options
	// Runners inject the iptables tools per family (tests use a fake); default the
	// real iptables/ip6tables binaries.
	Runners map[kernel.Family]Runner
	// DisableLocalhostNodePorts stops serving node ports on 127.0.0.0/8, which
	// iptables mode does by default as kube-proxy's (--iptables-localhost-nodeports,
	// default true). Serving them sets net.ipv4.conf.all.route_localnet=1 and drops
	// packets to 127.0.0.0/8 from other sources, as kube-proxy and kubelet do.
	DisableLocalhostNodePorts bool
	// SetRouteLocalnet sets net.ipv4.conf.all.route_localnet to 1 in weir's network
	// namespace; default writes /proc/sys. Tests inject their own.
	SetRouteLocalnet func() error
}

// routeLocalnet is the sysctl that lets packets to 127.0.0.0/8 be routed elsewhere,
// which DNAT of localhost node ports needs.
const routeLocalnet = "/proc/sys/net/ipv4/conf/all/route_localnet"

func setRouteLocalnet() error {
	if b, err := os.ReadFile(routeLocalnet); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(routeLocalnet, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("iptables: localhost node ports need net.ipv4.conf.all.route_localnet=1 (or --iptables-localhost-nodeports=false): %w", err)
	}
	return nil
}

// Proxier is the iptables data plane.
type Proxier struct {
	log      *slog.Logger
	opts     Options // with defaults
	syncs    *kernel.Syncs
	fams     []*famState
	mu       sync.Mutex
	services map[model.ServiceKey]*serviceState
	synced   bool
}

type famState struct {
	f  ipFamily
	rn Runner
}

type serviceState struct {
	svc   *model.Service
	spec  []byte
	rules []*serviceRules // per family
}

var _ dataplane.Dataplane = (*Proxier)(nil)

// New checks the iptables tools and kernel extensions and returns a Proxier. It writes
// nothing until the first Sync.
func New(opts Options) (*Proxier, error) {
	var err error
	if opts.Options, err = opts.Options.WithDefaults(); err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	p := &Proxier{opts: opts, services: map[model.ServiceKey]*serviceState{}}
	for _, fam := range opts.IPFamilies {
		f := familyV4
		if fam == kernel.IPv6 {
			f = familyV6
		}
		f.proxy, f.pods = opts.Proxy, opts.Proxy.DetectLocal.Pods(f.is6)
		// kube-proxy serves localhost node ports in IPv4 only, and only when the
		// node port addresses include loopback.
		f.localhost = !f.is6 && !opts.DisableLocalhostNodePorts && opts.Proxy.NodePorts(false).Loopback
		if f.localhost {
			set := opts.SetRouteLocalnet
			if set == nil {
				set = setRouteLocalnet
			}
			if err := set(); err != nil {
				return nil, err
			}
		}
		rn := opts.Runners[fam]
		if rn == nil {
			if err := checkSupport(context.Background(), f); err != nil {
				return nil, err
			}
			if rn, err = newExecRunner(f); err != nil {
				return nil, err
			}
		}
		p.fams = append(p.fams, &famState{f: f, rn: rn})
	}
	if p.syncs, err = kernel.NewSyncs("iptables", opts.Options, prometheus.ExponentialBuckets(0.001, 2, 16)); err != nil {
		return nil, err
	}
	p.log = p.syncs.Log
	return p, nil
}

// Name is "iptables".
func (p *Proxier) Name() string { return "iptables" }

// Close stops the health-check servers it started. Rules stay; Cleanup removes them.
func (p *Proxier) Close() { p.syncs.Close() }

// jump is a rule weir keeps in a built-in chain.
type jump struct {
	table, chain string
	args         []string
}

var jumps = []jump{
	{"nat", "PREROUTING", []string{"-m", "comment", "--comment", "weir service portals", "-j", chainServices}},
	{"nat", "OUTPUT", []string{"-m", "comment", "--comment", "weir service portals", "-j", chainServices}},
	{"nat", "POSTROUTING", []string{"-m", "comment", "--comment", "weir postrouting", "-j", chainPostrouting}},
	{"filter", "INPUT", []string{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "weir external services", "-j", chainExternalServices}},
	{"filter", "INPUT", []string{"-m", "comment", "--comment", "weir firewall", "-j", chainFirewall}},
	{"filter", "FORWARD", []string{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "weir services", "-j", chainServices}},
	{"filter", "FORWARD", []string{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "weir external services", "-j", chainExternalServices}},
	{"filter", "FORWARD", []string{"-m", "comment", "--comment", "weir firewall", "-j", chainFirewall}},
	{"filter", "OUTPUT", []string{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "weir services", "-j", chainServices}},
	{"filter", "OUTPUT", []string{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "weir external services", "-j", chainExternalServices}},
	{"filter", "OUTPUT", []string{"-m", "comment", "--comment", "weir firewall", "-j", chainFirewall}},
}

func ensureJumps(ctx context.Context, rn Runner) error {
	for i := len(jumps) - 1; i >= 0; i-- {
		j := jumps[i]
		if rn.Run(ctx, append([]string{"-t", j.table, "-C", j.chain}, j.args...)...) == nil {
			continue
		}
		if err := rn.Run(ctx, append([]string{"-t", j.table, "-I", j.chain}, j.args...)...); err != nil {
			return fmt.Errorf("add jump to %s from %s %s: %w", j.args[len(j.args)-1], j.table, j.chain, err)
		}
	}
	return nil
}

// existingChains lists weir's chains in a table (read only at start-up and cleanup).
func existingChains(ctx context.Context, rn Runner, table string) ([]string, error) {
	out, err := rn.Save(ctx, table)
	if err != nil {
		return nil, err
	}
	var chains []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, ":"+chainPrefix) {
			chains = append(chains, strings.Fields(line[1:])[0])
		}
	}
	return chains, nil
}

// Leftovers reports whether weir's chains exist (an earlier run in iptables mode left
// them), for removing them when weir runs in another mode.
func (p *Proxier) Leftovers(ctx context.Context) (bool, error) {
	for _, fs := range p.fams {
		for _, table := range []string{"filter", "nat"} {
			chains, err := existingChains(ctx, fs.rn, table)
			if err != nil {
				return false, err
			}
			if len(chains) > 0 {
				return true, nil
			}
		}
	}
	return false, nil
}

// Cleanup removes every rule and chain weir made.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, fs := range p.fams {
		for _, j := range jumps {
			for fs.rn.Run(ctx, append([]string{"-t", j.table, "-D", j.chain}, j.args...)...) == nil {
			}
		}
		var buf bytes.Buffer
		for _, table := range []string{"filter", "nat"} {
			chains, err := existingChains(ctx, fs.rn, table)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if len(chains) == 0 {
				continue
			}
			fmt.Fprintf(&buf, "*%s\n", table)
			for _, c := range chains {
				fmt.Fprintf(&buf, ":%s - [0:0]\n", c)
			}
			for _, c := range chains {
				fmt.Fprintf(&buf, "-X %s\n", c)
			}
			buf.WriteString("COMMIT\n")
		}
		if buf.Len() > 0 {
			if err := fs.rn.Restore(ctx, buf.Bytes()); err != nil {
				errs = append(errs, fmt.Errorf("delete weir's chains (%s): %w", fs.f.name, err))
			}
		}
	}
	p.synced = false
	p.services = map[model.ServiceKey]*serviceState{}
	return errors.Join(errs...)
}

// Sync programs snap.
func (p *Proxier) Sync(ctx context.Context, snap *model.Snapshot) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syncs.Sync(snap, func() error { return p.sync(ctx, snap) })
}

type change struct {
	key      model.ServiceKey
	old, new *serviceState
}

func (p *Proxier) sync(ctx context.Context, snap *model.Snapshot) error {
	full := !p.synced
	var changes []change
	next := make(map[model.ServiceKey]*serviceState, len(snap.Services))
	var buf []byte
	for _, svc := range snap.Services {
		if !svc.Proxied() {
			continue
		}
		buf = fingerprint.Append(buf[:0], svc)
		old := p.services[svc.Key]
		if !full && old != nil && bytes.Equal(old.spec, buf) {
			old.svc = svc
			next[svc.Key] = old
			continue
		}
		st := &serviceState{svc: svc, spec: slices.Clone(buf)}
		for _, fs := range p.fams {
			st.rules = append(st.rules, buildService(fs.f, svc))
		}
		next[svc.Key] = st
		changes = append(changes, change{key: svc.Key, old: old, new: st})
	}
	for key, old := range p.services {
		if next[key] == nil {
			changes = append(changes, change{key: key, old: old})
		}
	}
	if !full && len(changes) == 0 {
		return nil
	}
	keys := make([]model.ServiceKey, 0, len(next))
	for k := range next {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Compare(keys[j]) < 0 })

	for fi, fs := range p.fams {
		var stale []string
		if full {
			want := map[string]bool{}
			for _, st := range next {
				for c := range st.rules[fi].chains {
					want[c] = true
				}
			}
			existing, err := existingChains(ctx, fs.rn, "nat")
			if err != nil {
				p.synced = false
				return err
			}
			for _, c := range existing {
				if !want[c] && !isFixedChain(c) {
					stale = append(stale, c)
				}
			}
		}
		data := p.restoreData(fi, full, keys, next, changes, stale)
		if err := fs.rn.Restore(ctx, data); err != nil {
			p.synced = false
			return fmt.Errorf("iptables sync (%s): %w", fs.f.name, err)
		}
		if full {
			if err := ensureJumps(ctx, fs.rn); err != nil {
				p.synced = false
				return err
			}
		}
	}
	p.synced = true
	p.services = next

	written := make([]kernel.Change, 0, len(changes))
	for _, c := range changes {
		written = append(written, kernel.Change{Old: c.old.service(), New: c.new.service(), OldUnsupported: c.old.unsupported(), NewUnsupported: c.new.unsupported()})
	}
	p.syncs.Written(written)
	return nil
}

func isFixedChain(c string) bool {
	switch c {
	case chainServices, chainNodePorts, chainMarkMasq, chainMarkDrop, chainPostrouting:
		return true
	}
	return false
}

// restoreData builds the iptables-restore input for family fi.
func (p *Proxier) restoreData(fi int, full bool, keys []model.ServiceKey, next map[model.ServiceKey]*serviceState, changes []change, stale []string) []byte {
	var b bytes.Buffer
	mark := fmt.Sprintf("%#x", p.opts.MasqueradeMark)
	f := p.fams[fi].f

	b.WriteString("*filter\n")
	for _, c := range []string{chainServices, chainExternalServices, chainFirewall} {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, k := range keys {
		for _, r := range next[k].rules[fi].filterServices {
			fmt.Fprintf(&b, "-A %s %s\n", chainServices, r)
		}
	}
	for _, k := range keys {
		for _, r := range next[k].rules[fi].clusterIPs {
			fmt.Fprintf(&b, "-A %s %s\n", chainServices, r)
		}
	}
	for _, k := range keys {
		for _, r := range next[k].rules[fi].filterExternal {
			fmt.Fprintf(&b, "-A %s %s\n", chainExternalServices, r)
		}
	}
	fmt.Fprintf(&b, "-A %s -m mark --mark %#x/%#x -j DROP\n", chainFirewall, dropMark, dropMark)
	if f.localhost {
		// route_localnet lets packets to 127.0.0.0/8 in from the network; only
		// DNATed ones (localhost node ports) and replies may pass (kube-proxy's and
		// kubelet's "block incoming localnet connections").
		fmt.Fprintf(&b, "-A %s -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n", chainFirewall)
	}
	b.WriteString("COMMIT\n*nat\n")
	for _, c := range []string{chainServices, chainNodePorts, chainMarkMasq, chainMarkDrop, chainPostrouting} {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	// Per-Service chains: all of them on a full sync, else those that changed.
	type chainRules struct {
		name  string
		rules []string
	}
	var write []chainRules
	var deletes []string
	for _, c := range changes {
		var oldChains, newChains map[string][]string
		if c.old != nil && !full {
			oldChains = c.old.rules[fi].chains
		}
		if c.new != nil {
			newChains = c.new.rules[fi].chains
		}
		for _, name := range slices.Sorted(maps.Keys(newChains)) {
			if old, ok := oldChains[name]; ok && slices.Equal(old, newChains[name]) {
				continue
			}
			write = append(write, chainRules{name, newChains[name]})
		}
		for _, name := range slices.Sorted(maps.Keys(oldChains)) {
			if _, ok := newChains[name]; !ok {
				deletes = append(deletes, name)
			}
		}
	}
	// On a full sync every Service is a change; stale holds chains of earlier runs.
	deletes = append(deletes, stale...)
	for _, c := range write {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c.name)
	}
	for _, c := range deletes {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, k := range keys {
		for _, r := range next[k].rules[fi].natServices {
			fmt.Fprintf(&b, "-A %s %s\n", chainServices, r)
		}
	}
	for _, dst := range nodePortDests(f) {
		fmt.Fprintf(&b, "-A %s %s-m addrtype --dst-type LOCAL -j %s\n", chainServices, dst, chainNodePorts)
	}
	for _, k := range keys {
		for _, r := range next[k].rules[fi].natNodePorts {
			fmt.Fprintf(&b, "-A %s %s\n", chainNodePorts, r)
		}
	}
	fmt.Fprintf(&b, "-A %s -j MARK --or-mark %s\n", chainMarkMasq, mark)
	fmt.Fprintf(&b, "-A %s -j MARK --or-mark %#x\n", chainMarkDrop, dropMark)
	fmt.Fprintf(&b, "-A %s -m mark ! --mark %s/%s -j RETURN\n", chainPostrouting, mark, mark)
	fmt.Fprintf(&b, "-A %s -j MARK --xor-mark %s\n", chainPostrouting, mark)
	fmt.Fprintf(&b, "-A %s -j MASQUERADE --random-fully\n", chainPostrouting)
	for _, c := range write {
		for _, r := range c.rules {
			fmt.Fprintf(&b, "-A %s %s\n", c.name, r)
		}
	}
	for _, c := range deletes {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// service is the Service of a state, nil for none.
func (st *serviceState) service() *model.Service {
	if st == nil {
		return nil
	}
	return st.svc
}

// unsupported are the schedulers of st's Service that iptables cannot do.
func (st *serviceState) unsupported() []dataplane.UnsupportedScheduler {
	if st == nil || len(st.rules) == 0 {
		return nil
	}
	return st.rules[0].unsupported
}
