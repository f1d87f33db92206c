// Package netpol enforces Kubernetes NetworkPolicy for the pods on this node in
// nftables, in its own table (inet weir_netpol), whatever the service proxy mode. It
// reads the policies model.Translate resolved (Snapshot.NetworkPolicy) and writes:
//
//   - two base chains on the forward hook, egress then ingress, each accepting
//     established and related packets (replies of allowed connections) and
//     dispatching new ones by the local pod's address through a verdict map;
//   - per isolated pod and direction, a chain that tries each policy selecting the pod
//     and drops what none allows, counting the drop in each of those policies' named
//     counters;
//   - per policy and direction, a chain with one rule per port match of each policy
//     rule, the peers in an interval set per rule (pod IPs of the selectors, ipBlocks
//     minus their excepts) and the named ports in a set of destination address,
//     protocol and port.
//
// Traffic from and to the node itself (the input and output hooks) is never filtered:
// the NetworkPolicy API always allows it (kubelet probes, host-network peers).
package netpol

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/model"
)

// TableName is the nftables table (family inet) the enforcer owns.
const TableName = "weir_netpol"

// Options configure an Enforcer.
type Options struct {
	// NFTables injects the table interface (tests use knftables.NewFake); default
	// knftables.New(inet, TableName).
	NFTables   knftables.Interface
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Enforcer is the network-policy data plane.
type Enforcer struct {
	nft knftables.Interface
	log *slog.Logger
	// stream writes a whole table as nft text (nil with an injected NFTables: tests
	// write through knftables.Fake).
	stream func(ctx context.Context, text string) error

	mu       sync.Mutex
	applied  *ruleset // nil: the table must be written from scratch
	polIDs   ids
	groupIDs ids
	// counters maps a named drop counter to its policy, for /metrics.
	counters map[string]counterOwner

	syncSeconds prometheus.Histogram
	syncErrors  prometheus.Counter
	pods        prometheus.Gauge
}

// New returns an Enforcer; nothing is written before the first Sync.
func New(opts Options) (*Enforcer, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	nft := opts.NFTables
	var stream func(context.Context, string) error
	if nft == nil {
		var err error
		if nft, err = knftables.New(knftables.InetFamily, TableName); err != nil {
			return nil, fmt.Errorf("network policy: nftables: %w", err)
		}
		stream = streamNFT
	}
	e := &Enforcer{
		nft: nft, log: opts.Logger, stream: stream,
		polIDs: ids{of: map[string]int{}}, groupIDs: ids{of: map[string]int{}},
		counters: map[string]counterOwner{},
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weir_networkpolicy_sync_duration_seconds", Help: "Time to apply the network policies of one Snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weir_networkpolicy_sync_errors_total", Help: "Network policy syncs that failed.",
		}),
		pods: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_networkpolicy_pods", Help: "Pods on this node isolated by at least one NetworkPolicy.",
		}),
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{e.syncSeconds, e.syncErrors, e.pods, dropCollector{e}} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("network policy metrics: %w", err)
			}
		}
	}
	return e, nil
}

// Name is the data plane's name.
func (e *Enforcer) Name() string { return "networkpolicy" }

// Sync makes the table enforce snap's network policies, changing only what differs
// from the last sync. A failed sync leaves the table as it was and the next one writes
// it whole.
func (e *Enforcer) Sync(ctx context.Context, snap *model.Snapshot) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	start := time.Now()
	var set *model.NetworkPolicySet
	if snap != nil {
		set = snap.NetworkPolicy
	}
	want := build(set, &e.polIDs, &e.groupIDs)
	tx := e.nft.NewTransaction()
	var err error
	switch {
	case e.applied == nil && e.stream != nil:
		// A full write goes to nft as text with many elements per statement: nft
		// parses that about twice as fast as knftables' one statement per element.
		writeAll(tx, want, false)
		var b strings.Builder
		b.WriteString(tx.String())
		writeElements(&b, want)
		err = e.stream(ctx, b.String())
	case e.applied == nil:
		writeAll(tx, want, true)
		err = e.nft.Run(ctx, tx)
	default:
		writeDiff(tx, e.applied, want)
		if tx.NumOperations() > 0 {
			err = e.nft.Run(ctx, tx)
		}
	}
	if err != nil {
		e.applied = nil
		e.syncErrors.Inc()
		return fmt.Errorf("network policy: nftables: %w", err)
	}
	e.applied = want
	e.counters = want.counters
	n := 0
	if set != nil {
		n = len(set.Pods)
	}
	e.pods.Set(float64(n))
	e.syncSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// Cleanup deletes the table.
func (e *Enforcer) Cleanup(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	tx := e.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	e.applied = nil
	if err := e.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("delete table inet %s: %w", TableName, err)
	}
	return nil
}

// Leftovers reports whether the table exists.
func (e *Enforcer) Leftovers(ctx context.Context) (bool, error) {
	if _, err := e.nft.List(ctx, "chains"); err == nil {
		return true, nil
	} else if !knftables.IsNotFound(err) {
		return false, fmt.Errorf("list table inet %s: %w", TableName, err)
	}
	return false, nil
}

// baseChains are the hooked chains: egress is checked before ingress, and an accept in
// one does not skip the other (each base chain gives its own verdict).
func baseChains(tx *knftables.Transaction) {
	for _, c := range []struct {
		name, prio string
		d          direction
	}{{chainEgress, "filter - 1", egress}, {chainIngress, "filter", ingress}} {
		tx.Add(&knftables.Chain{Name: c.name, Type: knftables.PtrTo(knftables.FilterType),
			Hook: knftables.PtrTo(knftables.ForwardHook), Priority: knftables.PtrTo(knftables.BaseChainPriority(c.prio))})
		tx.Add(&knftables.Rule{Chain: c.name, Rule: "ct state established,related accept"})
		for _, f := range families {
			field := "saddr"
			if c.d == ingress {
				field = "daddr"
			}
			tx.Add(&knftables.Rule{Chain: c.name, Rule: fmt.Sprintf("%s %s vmap @%s", f.ip, field, podMap(c.d, f))})
		}
	}
}

// writeAll replaces the table in one transaction: the table is created (in case it is
// missing), deleted and written again, so nothing is ever half there.
// Elements are written too when elements is set; otherwise the caller writes them
// (writeElements) after the transaction's text.
func writeAll(tx *knftables.Transaction, rs *ruleset, elements bool) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weir: NetworkPolicy")})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weir: NetworkPolicy")})
	for _, name := range sortedKeys(rs.sets) {
		addSet(tx, name, rs.sets[name])
	}
	for _, name := range sortedKeys(rs.counters) {
		tx.Add(&knftables.Counter{Name: name})
	}
	for _, name := range sortedKeys(rs.chains) {
		tx.Add(&knftables.Chain{Name: name})
	}
	for _, name := range sortedKeys(rs.chains) {
		for _, r := range rs.chains[name] {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	if elements {
		for _, name := range sortedKeys(rs.sets) {
			addElements(tx, name, rs.sets[name], rs.sets[name].elems)
		}
	}
	baseChains(tx)
}

// elementsPerStatement bounds one add element statement of a streamed full write.
const elementsPerStatement = 1000

// writeElements writes every set's elements as nft statements, many per statement.
func writeElements(b *strings.Builder, rs *ruleset) {
	for _, name := range sortedKeys(rs.sets) {
		s := rs.sets[name]
		keys := sortedKeys(s.elems)
		for len(keys) > 0 {
			n := min(len(keys), elementsPerStatement)
			fmt.Fprintf(b, "add element inet %s %s { ", TableName, name)
			for i, k := range keys[:n] {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(k)
				if s.isMap {
					b.WriteString(" : ")
					b.WriteString(s.elems[k])
				}
			}
			b.WriteString(" }\n")
			keys = keys[n:]
		}
	}
}

// streamNFT runs nft -f - on text: the first write of the table.
func streamNFT(ctx context.Context, text string) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// writeDiff writes the changes from old to want. The order keeps every reference
// valid inside the transaction: new sets, counters and chains first; changed chains
// flushed; elements deleted, then added; rules written; then what is gone deleted.
func writeDiff(tx *knftables.Transaction, old, want *ruleset) {
	for _, name := range sortedKeys(want.sets) {
		if _, ok := old.sets[name]; !ok {
			addSet(tx, name, want.sets[name])
		}
	}
	for _, name := range sortedKeys(want.counters) {
		if _, ok := old.counters[name]; !ok {
			tx.Add(&knftables.Counter{Name: name})
		}
	}
	var rewrite []string
	for _, name := range sortedKeys(want.chains) {
		prev, had := old.chains[name]
		switch {
		case !had:
			tx.Add(&knftables.Chain{Name: name})
		case !slices.Equal(prev, want.chains[name]):
			tx.Flush(&knftables.Chain{Name: name})
		default:
			continue
		}
		rewrite = append(rewrite, name)
	}
	var gone []string
	for _, name := range sortedKeys(old.chains) {
		if _, ok := want.chains[name]; !ok {
			tx.Flush(&knftables.Chain{Name: name})
			gone = append(gone, name)
		}
	}
	for _, name := range sortedKeys(want.sets) {
		prev, had := old.sets[name]
		if !had {
			addElements(tx, name, want.sets[name], want.sets[name].elems)
			continue
		}
		removed := map[string]string{}
		added := map[string]string{}
		for k, v := range prev.elems {
			if nv, ok := want.sets[name].elems[k]; !ok || nv != v {
				removed[k] = v
			}
		}
		for k, v := range want.sets[name].elems {
			if ov, ok := prev.elems[k]; !ok || ov != v {
				added[k] = v
			}
		}
		deleteElements(tx, name, prev, removed)
		addElements(tx, name, want.sets[name], added)
	}
	for _, name := range rewrite {
		for _, r := range want.chains[name] {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	for _, name := range gone {
		tx.Delete(&knftables.Chain{Name: name})
	}
	for _, name := range sortedKeys(old.counters) {
		if _, ok := want.counters[name]; !ok {
			tx.Delete(&knftables.Counter{Name: name})
		}
	}
	for _, name := range sortedKeys(old.sets) {
		if _, ok := want.sets[name]; !ok {
			tx.Delete(&knftables.Set{Name: name})
		}
	}
}

func addSet(tx *knftables.Transaction, name string, s *setDef) {
	if s.isMap {
		tx.Add(&knftables.Map{Name: name, Type: s.typ, Flags: s.flags})
	} else {
		tx.Add(&knftables.Set{Name: name, Type: s.typ, Flags: s.flags})
	}
}

func addElements(tx *knftables.Transaction, name string, s *setDef, elems map[string]string) {
	for _, k := range sortedKeys(elems) {
		tx.Add(element(name, s, k, elems[k]))
	}
}

func deleteElements(tx *knftables.Transaction, name string, s *setDef, elems map[string]string) {
	for _, k := range sortedKeys(elems) {
		tx.Delete(element(name, s, k, elems[k]))
	}
}

func element(name string, s *setDef, key, value string) *knftables.Element {
	if s.isMap {
		return &knftables.Element{Map: name, Key: []string{key}, Value: []string{value}}
	}
	return &knftables.Element{Set: name, Key: []string{key}}
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// dropCollector exports the per-policy drop counters, read from the kernel at scrape.
type dropCollector struct{ e *Enforcer }

var (
	dropPackets = prometheus.NewDesc("weir_networkpolicy_dropped_packets_total",
		"Packets dropped at pods a NetworkPolicy isolates, by policy and direction (a drop at a pod several policies isolate counts in each).",
		[]string{"namespace", "policy", "direction"}, nil)
	dropBytes = prometheus.NewDesc("weir_networkpolicy_dropped_bytes_total",
		"Bytes of the packets in weir_networkpolicy_dropped_packets_total.",
		[]string{"namespace", "policy", "direction"}, nil)
)

func (c dropCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dropPackets; ch <- dropBytes }

func (c dropCollector) Collect(ch chan<- prometheus.Metric) {
	c.e.mu.Lock()
	owners := c.e.counters
	c.e.mu.Unlock()
	if len(owners) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counters, err := c.e.nft.ListCounters(ctx)
	if err != nil {
		c.e.log.Debug("network policy: list counters", "err", err)
		return
	}
	for _, ctr := range counters {
		o, ok := owners[ctr.Name]
		if !ok {
			continue
		}
		var packets, bytes uint64
		if ctr.Packets != nil {
			packets = *ctr.Packets
		}
		if ctr.Bytes != nil {
			bytes = *ctr.Bytes
		}
		ch <- prometheus.MustNewConstMetric(dropPackets, prometheus.CounterValue, float64(packets), o.namespace, o.name, o.direction)
		ch <- prometheus.MustNewConstMetric(dropBytes, prometheus.CounterValue, float64(bytes), o.namespace, o.name, o.direction)
	}
}
