// Package dpbench measures the L4 data planes at scale inside throw-away network
// namespaces: full sync time, one-endpoint-change sync time, kernel objects, memory and
// first-packet (TCP connect) latency to the last-added Service, for N Services with E
// endpoints each. It sends traffic only between namespaces it creates.
package dpbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/ebpf"
	"weir.dev/weir/internal/dataplane/iptables"
	"weir.dev/weir/internal/dataplane/ipvs"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/dataplane/nftables"
	"weir.dev/weir/internal/dataplane/userspace"
	"weir.dev/weir/internal/model"
)

// Options configure a run.
type Options struct {
	Modes     []string // nftables, iptables, ipvs, userspace, ebpf
	Ns        []int    // Service counts
	Endpoints int      // per Service
	Connects  int      // connections per latency measurement
	Changes   int      // one-endpoint-change syncs per N (the median is reported)
	// MaxFullSync skips a mode's larger N once its full sync, extrapolated from the
	// last N (predictFullSync), would take longer.
	MaxFullSync time.Duration
	Log         io.Writer
}

// Result is one mode at one N.
type Result struct {
	Mode         string  `json:"mode"`
	N            int     `json:"services"`
	Endpoints    int     `json:"endpointsPerService"`
	FullSyncMS   float64 `json:"fullSyncMs"`
	FullSyncCPU  float64 `json:"fullSyncCpuMs"` // weir plus nft/iptables-restore, user+sys
	ChangeCPU    float64 `json:"oneChangeSyncCpuMs"`
	ChangeSyncMS float64 `json:"oneChangeSyncMs"`
	NoopSyncMS   float64 `json:"noChangeSyncMs"`
	KernelRules  int     `json:"kernelRules"`
	KernelElems  int     `json:"kernelElements"`
	RSSMB        float64 `json:"rssMB"`
	HeapMB       float64 `json:"heapMB"` // Go heap in use after a GC, data plane alive

	ConnectP50us float64 `json:"connectP50us"`
	ConnectP99us float64 `json:"connectP99us"`
	Skipped      string  `json:"skipped,omitempty"`
}

type syncer interface {
	dataplane.Dataplane
}

// Run measures every mode at every N.
func Run(ctx context.Context, opts Options) ([]Result, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Endpoints <= 0 {
		opts.Endpoints = 10
	}
	if opts.Connects <= 0 {
		opts.Connects = 200
	}
	if opts.Changes <= 0 {
		opts.Changes = 5
	}
	var results []Result
	for _, mode := range opts.Modes {
		stop := false
		for i, n := range opts.Ns {
			if i > 0 && opts.MaxFullSync > 0 && !stop {
				stop = predictFullSync(results[len(results)-i:], n) > opts.MaxFullSync
			}
			if stop {
				results = append(results, Result{Mode: mode, N: n, Endpoints: opts.Endpoints, Skipped: fmt.Sprintf("capped: full sync predicted over %v", opts.MaxFullSync)})
				continue
			}
			r, err := runOne(ctx, mode, n, opts)
			if err != nil {
				return results, fmt.Errorf("%s at N=%d: %w", mode, n, err)
			}
			fmt.Fprintf(opts.Log, "%-9s N=%-6d full %9.1f ms (cpu %9.1f)  change %8.1f ms (cpu %7.1f)  noop %6.2f ms  rules %7d  elems %7d  rss %6.1f MB heap %6.1f MB  connect p50 %7.0f µs p99 %7.0f µs\n",
				r.Mode, r.N, r.FullSyncMS, r.FullSyncCPU, r.ChangeSyncMS, r.ChangeCPU, r.NoopSyncMS, r.KernelRules, r.KernelElems, r.RSSMB, r.HeapMB, r.ConnectP50us, r.ConnectP99us)
			results = append(results, r)
		}
	}
	return results, nil
}

// predictFullSync extrapolates a mode's full sync time to n Services from its
// measured results (in increasing N): as N^k from the last one, with k the growth
// between the last two (at least 1: linear; iptables-restore grows faster).
func predictFullSync(measured []Result, n int) time.Duration {
	if len(measured) == 0 {
		return 0
	}
	last := measured[len(measured)-1]
	k := 1.0
	if len(measured) > 1 {
		prev := measured[len(measured)-2]
		if prev.FullSyncMS > 0 && last.FullSyncMS > 0 && last.N > prev.N {
			k = max(1, math.Log(last.FullSyncMS/prev.FullSyncMS)/math.Log(float64(last.N)/float64(prev.N)))
		}
	}
	return time.Duration(last.FullSyncMS * math.Pow(float64(n)/float64(last.N), k) * float64(time.Millisecond))
}

// Addresses: client 10.100.0.2 → node 10.100.0.1; node 10.200.0.1 → backend
// 10.200.0.2, which answers on every address of 10.128.0.0/9 (a local route).
// ClusterIPs are in 10.96.0.0/12.
func clusterIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(96 + i/65536), byte(i / 256 % 256), byte(i % 256)})
}

func endpointIP(k int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(128 + k/65536), byte(k / 256 % 256), byte(k % 256)})
}

func services(n, e int, gen int) []*model.Service {
	svcs := make([]*model.Service, n)
	for i := range svcs {
		eps := make([]model.Endpoint, e)
		for j := range eps {
			k := i*e + j
			if i == n/2 && j == 0 {
				k = n*e + gen // the endpoint the change syncs move
			}
			eps[j] = model.Endpoint{Addr: endpointIP(k), Port: 8080, Ready: true, Serving: true, NodeName: "other", Weight: 1}
		}
		slices.SortFunc(eps, func(a, b model.Endpoint) int { return a.Addr.Compare(b.Addr) })
		set := model.EndpointSet{Verdict: model.Forward, IPv4Verdict: model.Forward, IPv6Verdict: model.Reject, Endpoints: eps}
		svcs[i] = &model.Service{
			Key:        model.ServiceKey{Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i)},
			Type:       model.ClusterIP,
			ClusterIPs: []netip.Addr{clusterIP(i)},
			Policy:     &model.Policy{},
			Ports:      []*model.ServicePort{{Protocol: model.TCP, Port: 80, Endpoints: eps, Cluster: set, External: set}},
		}
	}
	return svcs
}

type namespaces struct {
	prefix string
	names  []string
}

func (ns *namespaces) add(role string) (string, error) {
	name := ns.prefix + "-" + role
	if err := sh("ip", "netns", "add", name); err != nil {
		return "", err
	}
	ns.names = append(ns.names, name)
	return name, sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
}

func (ns *namespaces) close() {
	for _, n := range ns.names {
		_ = sh("ip", "netns", "del", n)
	}
}

func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func shOut(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// inNS runs f on a thread inside the named namespace.
func inNS(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(name)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		ferr := f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

func runOne(ctx context.Context, mode string, n int, opts Options) (res Result, err error) {
	res = Result{Mode: mode, N: n, Endpoints: opts.Endpoints}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	ns := &namespaces{prefix: "wb" + hex.EncodeToString(b)}
	defer ns.close()
	client, err := ns.add("client")
	if err != nil {
		return res, err
	}
	node, err := ns.add("node")
	if err != nil {
		return res, err
	}
	backend, err := ns.add("backend")
	if err != nil {
		return res, err
	}
	setup := [][]string{
		{"ip", "link", "add", ns.prefix + "c", "type", "veth", "peer", "name", ns.prefix + "n"},
		{"ip", "link", "set", ns.prefix + "c", "netns", client},
		{"ip", "link", "set", ns.prefix + "n", "netns", node},
		{"ip", "link", "add", ns.prefix + "b", "type", "veth", "peer", "name", ns.prefix + "m"},
		{"ip", "link", "set", ns.prefix + "b", "netns", backend},
		{"ip", "link", "set", ns.prefix + "m", "netns", node},
		{"ip", "netns", "exec", client, "ip", "addr", "add", "10.100.0.2/24", "dev", ns.prefix + "c"},
		{"ip", "netns", "exec", client, "ip", "link", "set", ns.prefix + "c", "up"},
		{"ip", "netns", "exec", client, "ip", "route", "add", "default", "via", "10.100.0.1"},
		{"ip", "netns", "exec", node, "ip", "addr", "add", "10.100.0.1/24", "dev", ns.prefix + "n"},
		{"ip", "netns", "exec", node, "ip", "link", "set", ns.prefix + "n", "up"},
		{"ip", "netns", "exec", node, "ip", "addr", "add", "10.200.0.1/24", "dev", ns.prefix + "m"},
		{"ip", "netns", "exec", node, "ip", "link", "set", ns.prefix + "m", "up"},
		{"ip", "netns", "exec", node, "ip", "route", "add", "10.128.0.0/9", "via", "10.200.0.2"},
		{"ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "netns", "exec", backend, "ip", "addr", "add", "10.200.0.2/24", "dev", ns.prefix + "b"},
		{"ip", "netns", "exec", backend, "ip", "link", "set", ns.prefix + "b", "up"},
		{"ip", "netns", "exec", backend, "ip", "route", "add", "default", "via", "10.200.0.1"},
		{"ip", "netns", "exec", backend, "ip", "route", "add", "local", "10.128.0.0/9", "dev", "lo"},
	}
	if mode == "userspace" {
		setup = append(setup, []string{"ip", "netns", "exec", node, "ip", "route", "add", "local", "10.96.0.0/12", "dev", "lo"})
	} else {
		setup = append(setup, []string{"ip", "netns", "exec", node, "ip", "route", "add", "10.96.0.0/12", "via", "10.200.0.2"})
	}
	for _, c := range setup {
		if err := sh(c...); err != nil {
			return res, err
		}
	}

	// Backend: accept and close on every address.
	var ln net.Listener
	if err := inNS(backend, func() error {
		var err error
		ln, err = net.Listen("tcp", "0.0.0.0:8080")
		return err
	}); err != nil {
		return res, err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	var dp syncer
	var closeDP func()
	var status func() ebpf.Status
	if err := inNS(node, func() error {
		switch mode {
		case "nftables":
			p, err := nftables.New(nftables.Options{Options: kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}, DisableHealthCheck: true}})
			if err != nil {
				return err
			}
			dp, closeDP = p, func() { _ = inNS(node, func() error { return p.Cleanup(context.Background()) }); p.Close() }
		case "iptables":
			p, err := iptables.New(iptables.Options{Options: kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}, DisableHealthCheck: true}})
			if err != nil {
				return err
			}
			dp, closeDP = p, func() { _ = inNS(node, func() error { return p.Cleanup(context.Background()) }); p.Close() }
		case "ipvs":
			p, err := ipvs.New(ipvs.Options{Options: kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}, DisableHealthCheck: true}})
			if err != nil {
				return err
			}
			dp, closeDP = p, func() { _ = inNS(node, func() error { return p.Cleanup(context.Background()) }); p.Close() }
		case "ebpf":
			// The programs go on a cgroup of the run's own, and this process (whose
			// goroutines are the client) joins it until the run ends.
			cg, leave, err := joinCgroup(ns.prefix)
			if err != nil {
				return err
			}
			p, err := ebpf.New(ebpf.Options{Cgroup: cg, DisableHealthCheck: true})
			if err != nil {
				leave()
				return err
			}
			dp, closeDP = p, func() { _ = p.Close(); leave() }
			status = p.Status
		case "userspace":
			p, err := userspace.New(userspace.Options{DrainTimeout: time.Second})
			if err != nil {
				return err
			}
			dp, closeDP = p, func() { _ = p.Close() }
		default:
			return fmt.Errorf("unknown mode %q", mode)
		}
		return nil
	}); err != nil {
		return res, err
	}
	defer closeDP()

	runtime.GC()
	var lastCPU float64
	syncIn := func(snap *model.Snapshot) (time.Duration, error) {
		var d time.Duration
		err := inNS(node, func() error {
			cpu0 := cpuMS()
			start := time.Now()
			err := dp.Sync(ctx, snap)
			d = time.Since(start)
			lastCPU = cpuMS() - cpu0
			return err
		})
		return d, err
	}
	// Snapshots as model.Translator hands them over: versioned, each with a Delta
	// naming the Services that changed, the others the same pointers.
	svcs := services(n, opts.Endpoints, 0)
	d, err := syncIn(&model.Snapshot{Version: 1, Services: svcs})
	if err != nil {
		return res, fmt.Errorf("full sync: %w", err)
	}
	res.FullSyncMS, res.FullSyncCPU = ms(d), lastCPU
	d, err = syncIn(&model.Snapshot{Version: 2, Services: svcs, Delta: &model.Delta{Base: 1}})
	if err != nil {
		return res, err
	}
	res.NoopSyncMS = ms(d)
	var changes, changeCPU []float64
	for g := 1; g <= opts.Changes; g++ {
		next := slices.Clone(svcs)
		next[n/2] = services(n, opts.Endpoints, g)[n/2]
		svcs = next
		d, err := syncIn(&model.Snapshot{Version: uint64(g) + 2, Services: svcs, Delta: &model.Delta{Base: uint64(g) + 1, Services: []model.ServiceKey{svcs[n/2].Key}}})
		if err != nil {
			return res, fmt.Errorf("change sync: %w", err)
		}
		changes = append(changes, ms(d))
		changeCPU = append(changeCPU, lastCPU)
	}
	res.ChangeSyncMS = percentile(changes, 50)
	res.ChangeCPU = percentile(changeCPU, 50)
	res.RSSMB = rssMB()
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	res.HeapMB = float64(mem.HeapInuse) / (1 << 20)
	res.KernelRules, res.KernelElems = kernelObjects(mode, node)
	if status != nil { // ebpf: programs, and map elements (frontends and slots)
		st := status()
		res.KernelRules, res.KernelElems = st.Programs, st.Frontends+int(st.BackendSlots)
	}

	// First-packet latency: new connections to the last-added Service.
	target := netip.AddrPortFrom(clusterIP(n-1), 80).String()
	var lat []float64
	if err := inNS(client, func() error {
		for i := 0; i < opts.Connects; i++ {
			start := time.Now()
			c, err := net.DialTimeout("tcp", target, 2*time.Second)
			if err != nil {
				return fmt.Errorf("connect %s: %w", target, err)
			}
			lat = append(lat, float64(time.Since(start).Microseconds()))
			c.Close()
		}
		return nil
	}); err != nil {
		return res, err
	}
	res.ConnectP50us = percentile(lat, 50)
	res.ConnectP99us = percentile(lat, 99)
	return res, nil
}

// joinCgroup makes a cgroup named name under the cgroup2 mount and moves this process
// into it; leave moves it back and removes the cgroup.
func joinCgroup(name string) (string, func(), error) {
	mount, err := ebpf.CgroupMount()
	if err != nil {
		return "", nil, err
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", nil, err
	}
	var orig string
	for _, line := range strings.Split(string(self), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			orig = mount + rest
		}
	}
	if orig == "" {
		return "", nil, fmt.Errorf("no cgroup v2 line in /proc/self/cgroup")
	}
	cg := mount + "/" + name
	if err := os.Mkdir(cg, 0o755); err != nil {
		return "", nil, err
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(cg+"/cgroup.procs", pid, 0); err != nil {
		_ = os.Remove(cg)
		return "", nil, err
	}
	return cg, func() {
		_ = os.WriteFile(orig+"/cgroup.procs", pid, 0)
		_ = os.Remove(cg)
	}, nil
}

// cpuMS is the user+sys CPU time of this process and its waited-for children.
func cpuMS() float64 {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec)*1000 + float64(t.Usec)/1000 }
	return tv(self.Utime) + tv(self.Stime) + tv(children.Utime) + tv(children.Stime)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func rssMB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// kernelObjects counts rules and set/map elements in the node namespace.
func kernelObjects(mode, node string) (rules, elems int) {
	switch mode {
	case "nftables":
		out, err := shOut("ip", "netns", "exec", node, "nft", "-j", "list", "table", "ip", "weir")
		if err != nil {
			return 0, 0
		}
		var doc struct {
			Nftables []map[string]json.RawMessage `json:"nftables"`
		}
		if json.Unmarshal([]byte(out), &doc) != nil {
			return 0, 0
		}
		for _, obj := range doc.Nftables {
			if _, ok := obj["rule"]; ok {
				rules++
			}
			for _, kind := range []string{"map", "set"} {
				if raw, ok := obj[kind]; ok {
					var m struct {
						Elem []json.RawMessage `json:"elem"`
					}
					_ = json.Unmarshal(raw, &m)
					elems += len(m.Elem)
				}
			}
		}
	case "ipvs":
		// Virtual servers count as rules, real servers as elements.
		out, err := shOut("ip", "netns", "exec", node, "ipvsadm", "-Ln")
		if err != nil {
			return 0, 0
		}
		for _, line := range strings.Split(out, "\n") {
			switch {
			case strings.HasPrefix(line, "TCP ") || strings.HasPrefix(line, "UDP ") || strings.HasPrefix(line, "FWM "):
				rules++
			case strings.HasPrefix(strings.TrimSpace(line), "-> ") && !strings.Contains(line, "RemoteAddress"):
				elems++
			}
		}
	case "iptables":
		out, err := shOut("ip", "netns", "exec", node, "iptables-save")
		if err != nil {
			return 0, 0
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "-A ") {
				rules++
			}
		}
	}
	return rules, elems
}
