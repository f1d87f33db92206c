// Command kubescale measures a proxy end to end against a real kube-apiserver: N
// Services × 10 endpoints created through the API, then `weir run --kubeconfig … --mode
// nftables` (and kube-proxy in nftables mode, when its binary is there; -mode iptables
// runs both in iptables mode) started, timed and measured in turns:
//
//   - start → synced: from the process start until weir's /readyz answers 200
//     (kube-proxy: until kubeproxy_sync_proxy_rules_last_timestamp_seconds is set);
//   - full sync: the proxy's own figure for its first sync
//     (weir_nftables_sync_duration_seconds, kubeproxy_sync_full_proxy_rules_duration_seconds);
//   - one change: one EndpointSlice update (an endpoint's address replaced), from the
//     start of the API write until the kernel's nf_tables notification (what `nft
//     monitor` prints) carries the new address;
//   - RSS (VmRSS, and VmHWM, the peak) of the proxy process after the changes;
//   - lines of `nft list table` for the proxy's tables (ip and ip6); in iptables mode,
//     of iptables-save and ip6tables-save.
//
// It must run as root inside a network namespace of its own, which bench/scale.sh
// makes: etcd, kube-apiserver and the proxies all run there, so their rules never
// touch the host. It refuses to run unless WEIR_SCALE_NETNS names that namespace.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"weir.dev/weir/internal/controlplane"
)

const (
	namespace    = "scale"
	endpointsPer = 10
	nodes        = 4
	thisNode     = "node-0"
)

type config struct {
	sizes     []int
	rounds    int
	changes   int
	weir      string
	kubeProxy string
	dns       bool
	work      string
	jsonOut   string
	seed      uint64
	timeout   time.Duration
	proxies   string
	mode      string
}

func main() {
	var c config
	var sizes string
	flag.StringVar(&sizes, "n", "1000,10000", "Service counts, ascending, comma-separated")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds per size (the proxies take turns)")
	flag.IntVar(&c.changes, "changes", 5, "EndpointSlice changes timed per round")
	flag.StringVar(&c.weir, "weir", "", "weir binary (required)")
	flag.StringVar(&c.kubeProxy, "kube-proxy", filepath.Join(controlplane.BinDir(), "kube-proxy"), "kube-proxy binary; skipped when absent")
	flag.BoolVar(&c.dns, "dns", true, "run weir with cluster DNS (--dns-addr) as the DaemonSet does; the gateway always runs")
	flag.StringVar(&c.work, "work", "", "working directory, kept: etcd's data (the objects, reused by the next run), logs (default: a new temporary one, removed at the end)")
	flag.StringVar(&c.jsonOut, "json", "", "write every sample to this JSON file")
	flag.Uint64Var(&c.seed, "seed", 1, "seed of the changed Services")
	flag.DurationVar(&c.timeout, "sync-timeout", 5*time.Minute, "give up on a proxy that is not synced after this long")
	flag.StringVar(&c.proxies, "proxies", "weir,kube-proxy", "proxies to measure, in turns (kube-proxy only when its binary is there)")
	flag.StringVar(&c.mode, "mode", "nftables", "proxy mode of both proxies: nftables or iptables (iptables-nft: its rules reach the kernel through nf_tables too)")
	flag.Parse()
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			log.Fatalf("-n %q: want positive integers", sizes)
		}
		c.sizes = append(c.sizes, n)
	}
	if c.mode != "nftables" && c.mode != "iptables" {
		log.Fatalf("-mode %q: want nftables or iptables", c.mode)
	}
	if !slices.IsSorted(c.sizes) {
		log.Fatalf("-n %q: want ascending sizes", sizes)
	}
	if err := run(c); err != nil {
		log.Fatal(err)
	}
}

// sample is one proxy's figures in one round.
type sample struct {
	Proxy        string    `json:"proxy"`
	Services     int       `json:"services"`
	Round        int       `json:"round"`
	StartSynced  float64   `json:"start_to_synced_s"`
	FullSync     float64   `json:"full_sync_s"`
	Changes      []float64 `json:"change_to_kernel_ms"`
	RSSMiB       float64   `json:"rss_mib"`
	PeakRSSMiB   float64   `json:"peak_rss_mib"`
	RulesetLines int       `json:"ruleset_lines"`
	Err          string    `json:"error,omitempty"`
}

func run(c config) error {
	if os.Getenv("WEIR_SCALE_NETNS") == "" {
		return errors.New("run me through bench/scale.sh: I must run inside a network namespace of my own (WEIR_SCALE_NETNS)")
	}
	if c.weir == "" {
		return errors.New("-weir: the weir binary is required")
	}
	bin := controlplane.BinDir()
	if !controlplane.HaveBinaries(bin) {
		return controlplane.ErrNoBinaries
	}
	if c.work == "" {
		dir, err := os.MkdirTemp("", "weir-kubescale-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		c.work = dir
	}
	var proxies []string
	for _, p := range strings.Split(c.proxies, ",") {
		switch p = strings.TrimSpace(p); p {
		case "weir":
			proxies = append(proxies, p)
		case "kube-proxy":
			if st, err := os.Stat(c.kubeProxy); err == nil && st.Mode()&0o111 != 0 {
				proxies = append(proxies, p)
			} else {
				log.Printf("no kube-proxy at %s: not measured", c.kubeProxy)
			}
		default:
			return fmt.Errorf("-proxies: unknown proxy %q (weir, kube-proxy)", p)
		}
	}

	cl, err := controlplane.Start(c.work, bin, "10.0.0.0/16")
	if err != nil {
		return err
	}
	defer cl.Stop()
	kubeconfig := filepath.Join(c.work, "kubeconfig")
	if err := cl.WriteKubeconfig(kubeconfig, cl.AdminToken()); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cl.AdminConfig())
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := setup(ctx, cs); err != nil {
		return err
	}

	rng := rand.New(rand.NewPCG(c.seed, 0))
	var samples []sample
	created := 0
	// New endpoint addresses come from 10.64.0.0/16, from a place of their own per run:
	// a kept etcd (-work) holds the addresses of earlier runs, and an update that writes
	// what is there already is no change at all.
	changeSeq := int(time.Now().UnixNano() % 60000)
	for _, n := range c.sizes {
		start := time.Now()
		if err := createServices(ctx, cs, created, n); err != nil {
			return err
		}
		log.Printf("created Services %d..%d (%d endpoints each) in %v", created, n-1, endpointsPer, time.Since(start).Round(time.Second))
		created = n
		for r := range c.rounds {
			order := slices.Clone(proxies)
			if r%2 == 1 {
				slices.Reverse(order)
			}
			for _, p := range order {
				s := measure(ctx, c, cs, kubeconfig, p, n, r, rng, &changeSeq)
				if s.Err != "" {
					log.Printf("%s N=%d round %d: %s", p, n, r+1, s.Err)
				}
				log.Printf("%s N=%d round %d: start→synced %.2fs, full sync %.3fs, changes %v ms, RSS %.0f MiB (peak %.0f), %d lines",
					p, n, r+1, s.StartSynced, s.FullSync, s.Changes, s.RSSMiB, s.PeakRSSMiB, s.RulesetLines)
				samples = append(samples, s)
			}
		}
	}
	if c.jsonOut != "" {
		data, err := json.MarshalIndent(samples, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(c.jsonOut, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	fmt.Print(table(samples, c.sizes, proxies))
	return nil
}

// setup creates the namespace and the Nodes (kube-proxy reads its own Node's addresses).
func setup(ctx context.Context, cs kubernetes.Interface) error {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace: %w", err)
	}
	for i := range nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i),
			Labels: map[string]string{"kubernetes.io/hostname": fmt.Sprintf("node-%d", i)}}}
		n, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create node: %w", err)
		}
		if err == nil {
			n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.250.0.%d", i+1)}}
			if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("node status: %w", err)
			}
		}
	}
	return nil
}

// endpointAddr is the address of the n-th endpoint overall: 10.128.0.0/9, never
// loopback (the API server refuses loopback endpoint addresses).
func endpointAddr(n int) string {
	return fmt.Sprintf("10.%d.%d.%d", 128+n>>16, (n>>8)&255, n&255)
}

func benchObjects(i int) (*corev1.Service, *discoveryv1.EndpointSlice) {
	name := fmt.Sprintf("svc-%05d", i)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: namespace, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for j := range endpointsPer {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{endpointAddr(i*endpointsPer + j)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To(fmt.Sprintf("node-%d", j%nodes)),
		})
	}
	return svc, es
}

// createServices creates Services [from, to) with their slices, 32 requests at a time.
func createServices(ctx context.Context, cs kubernetes.Interface, from, to int) error {
	// A kept working directory (-work) has the objects of an earlier run in its etcd.
	have := map[string]bool{}
	list, err := cs.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return fmt.Errorf("list Services: %w", err)
	}
	for _, svc := range list.Items {
		have[svc.Name] = true
	}
	work := make(chan int)
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	for range 32 {
		wg.Go(func() {
			for i := range work {
				svc, es := benchObjects(i)
				if _, err := cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
					fail(fmt.Errorf("create Service %s: %w", svc.Name, err))
					continue
				}
				if _, err := cs.DiscoveryV1().EndpointSlices(namespace).Create(ctx, es, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
					fail(fmt.Errorf("create EndpointSlice %s: %w", es.Name, err))
				}
			}
		})
	}
	for i := from; i < to; i++ {
		if !have[fmt.Sprintf("svc-%05d", i)] {
			work <- i
		}
	}
	close(work)
	wg.Wait()
	return first
}

// proc is a running proxy.
type proc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
	tables  []string // "ip weir", …
	synced  func() (bool, error)
	full    func() (float64, error)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startProxy(c config, kubeconfig, name string, n, round int) (*proc, error) {
	p := &proc{done: make(chan struct{}), logPath: filepath.Join(c.work, fmt.Sprintf("%s-%d-%d.log", name, n, round))}
	metricsPort := freePort()
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	switch name {
	case "weir":
		args := []string{"run", "--kubeconfig", kubeconfig, "--mode", c.mode, "--node-name", thisNode,
			"--admin-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort)}
		if c.dns {
			args = append(args, "--dns-addr", fmt.Sprintf("127.0.0.1:%d", freePort()))
		}
		p.cmd = exec.Command(c.weir, args...)
		p.tables = []string{"ip weir", "ip6 weir"}
		ready := fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort)
		p.synced = func() (bool, error) {
			resp, err := http.Get(ready)
			if err != nil {
				return false, nil
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, nil
		}
		p.full = func() (float64, error) {
			return firstObservation(metricsURL, "weir_"+c.mode+"_sync_duration_seconds")
		}
	case "kube-proxy":
		p.cmd = exec.Command(c.kubeProxy, "--kubeconfig", kubeconfig, "--proxy-mode", c.mode,
			"--hostname-override", thisNode, "--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort),
			"--healthz-bind-address", fmt.Sprintf("127.0.0.1:%d", freePort()),
			"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0s", "--conntrack-tcp-timeout-close-wait=0s",
			"--v=1")
		p.tables = []string{"ip kube-proxy", "ip6 kube-proxy"}
		// kube-proxy runs one proxier per IP family, each with its own sync loop and
		// metrics labelled ip_family: synced when both have synced once.
		p.synced = func() (bool, error) {
			v, err := metricSamples(metricsURL, "kubeproxy_sync_proxy_rules_last_timestamp_seconds")
			if err != nil || len(v) < 2 {
				return false, nil
			}
			for _, x := range v {
				if x <= 0 {
					return false, nil
				}
			}
			return true, nil
		}
		p.full = func() (float64, error) {
			return firstObservation(metricsURL, "kubeproxy_sync_full_proxy_rules_duration_seconds")
		}
	}
	logf, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	clearRules()
}

// clearRules removes every rule of the namespace the bench runs in (its own): the
// proxies' nftables tables, and iptables-nft's, which are nf_tables tables too.
func clearRules() {
	_ = exec.Command("nft", "flush", "ruleset").Run()
}

func measure(ctx context.Context, c config, cs kubernetes.Interface, kubeconfig, name string, n, round int, rng *rand.Rand, seq *int) sample {
	s := sample{Proxy: name, Services: n, Round: round + 1}
	clearRules()
	start := time.Now()
	p, err := startProxy(c, kubeconfig, name, n, round)
	if err != nil {
		s.Err = err.Error()
		return s
	}
	defer p.stop()
	for {
		ok, _ := p.synced()
		if ok {
			break
		}
		select {
		case <-p.done:
			s.Err = fmt.Sprintf("exited before it synced (log %s)", p.logPath)
			return s
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(start) > c.timeout {
			s.Err = fmt.Sprintf("not synced after %v (log %s)", c.timeout, p.logPath)
			return s
		}
	}
	s.StartSynced = time.Since(start).Seconds()
	if s.FullSync, err = p.full(); err != nil {
		s.Err = err.Error()
	}
	// Let the start-up settle (informers' memory, a second sync) before changes.
	time.Sleep(2 * time.Second)

	mon, err := startMonitor()
	if err != nil {
		s.Err = err.Error()
		return s
	}
	defer mon.stop()
	for range c.changes {
		*seq = (*seq + 1) % 65000
		addr := fmt.Sprintf("10.64.%d.%d", *seq>>8&255, 1+(*seq&255)%254)
		d, err := change(ctx, cs, mon, rng.IntN(n), addr)
		if err != nil {
			s.Err = err.Error()
			if name == "weir" {
				_ = p.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines, into its log
			}
			break
		}
		s.Changes = append(s.Changes, float64(d.Microseconds())/1000)
		time.Sleep(1500 * time.Millisecond) // past both proxies' minimum sync interval
	}
	s.RSSMiB, s.PeakRSSMiB = rss(p.cmd.Process.Pid)
	if c.mode == "iptables" {
		s.RulesetLines = iptablesLines(strings.TrimSuffix(p.logPath, ".log") + ".iptables")
	} else {
		s.RulesetLines = rulesetLines(p.tables, strings.TrimSuffix(p.logPath, ".log")+".nft")
	}
	return s
}

// monitor listens to the kernel's nf_tables notifications (the netlink multicast group
// that `nft monitor` reads, without nft's cost of loading the whole ruleset first) and
// keeps every message with the time it arrived. The kernel sends them when a
// transaction commits, so a message holding an address means the rule is in force.
type monitor struct {
	fd      int
	stopped atomic.Bool
	mu      sync.Mutex
	msgs    []monMsg
	seen    chan struct{} // pulsed on each message
	done    chan struct{}
}

type monMsg struct {
	at   time.Time
	data []byte
}

const nfnlgrpNFTables = 7 // NFNLGRP_NFTABLES

func startMonitor() (*monitor, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv) // stop is noticed
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (nfnlgrpNFTables - 1)}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	m := &monitor{fd: fd, seen: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		buf := make([]byte, 1<<20)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if m.stopped.Load() {
				return
			}
			if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue // messages were dropped; later ones still count
			}
			if err != nil {
				return
			}
			msg := monMsg{at: time.Now(), data: slices.Clone(buf[:n])}
			m.mu.Lock()
			m.msgs = append(m.msgs, msg)
			m.mu.Unlock()
			select {
			case m.seen <- struct{}{}:
			default:
			}
		}
	}()
	return m, nil
}

func (m *monitor) stop() {
	m.stopped.Store(true)
	<-m.done
	_ = unix.Close(m.fd)
}

func (m *monitor) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.msgs)
}

// waitFor returns the arrival of the first message after index from that holds the
// bytes want.
func (m *monitor) waitFor(want []byte, from int, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		m.mu.Lock()
		for i := from; i < len(m.msgs); i++ {
			if bytes.Contains(m.msgs[i].data, want) {
				at := m.msgs[i].at
				m.mu.Unlock()
				return at, nil
			}
		}
		from = len(m.msgs)
		m.mu.Unlock()
		select {
		case <-m.seen:
		case <-deadline:
			return time.Time{}, fmt.Errorf("no nf_tables notification holding %v within %v", net.IP(want), timeout)
		}
	}
}

// change replaces the first endpoint of Service i's slice with addr and times the API
// write until the kernel notifies a change holding addr.
func change(ctx context.Context, cs kubernetes.Interface, mon *monitor, i int, addr string) (time.Duration, error) {
	name := fmt.Sprintf("svc-%05d-1", i)
	es, err := cs.DiscoveryV1().EndpointSlices(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0, err
	}
	es.Endpoints[0].Addresses = []string{addr}
	want := net.ParseIP(addr).To4() // as the kernel holds it: 4 bytes in network order
	// A plain watch of the slice: when the API server delivered the event.
	wctx, cancel := context.WithTimeout(ctx, 70*time.Second)
	defer cancel()
	w, err := cs.DiscoveryV1().EndpointSlices(namespace).Watch(wctx, metav1.ListOptions{
		FieldSelector: "metadata.name=" + name, ResourceVersion: es.ResourceVersion})
	if err != nil {
		return 0, err
	}
	defer w.Stop()
	watched := make(chan time.Time, 1)
	go func() {
		for range w.ResultChan() {
			watched <- time.Now()
			return
		}
	}()
	from := mon.count()
	start := time.Now()
	if _, err := cs.DiscoveryV1().EndpointSlices(namespace).Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		return 0, err
	}
	at, err := mon.waitFor(want, from, 60*time.Second)
	select {
	case t := <-watched:
		log.Printf("  %s: API server's watch delivered the event after %v", name, t.Sub(start).Round(100*time.Microsecond))
	default:
		log.Printf("  %s: API server's watch has not delivered the event", name)
	}
	if err != nil {
		return 0, err
	}
	return at.Sub(start), nil
}

func rss(pid int) (rss, peak float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak
}

// rulesetLines counts the lines of `nft list table` of the tables, and keeps the text
// in the file dump (beside the proxy's log).
func rulesetLines(tables []string, dump string) int {
	var all []byte
	for _, t := range tables {
		out, err := exec.Command("nft", append([]string{"list", "table"}, strings.Fields(t)...)...).Output()
		if err != nil {
			continue
		}
		all = append(all, out...)
	}
	_ = os.WriteFile(dump, all, 0o644)
	return bytes.Count(all, []byte("\n"))
}

// iptablesLines counts the lines of iptables-save and ip6tables-save (the namespace
// holds only the proxy's rules), and keeps the text in the file dump.
func iptablesLines(dump string) int {
	var all []byte
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(cmd).Output()
		if err != nil {
			continue
		}
		all = append(all, out...)
	}
	_ = os.WriteFile(dump, all, 0o644)
	return bytes.Count(all, []byte("\n"))
}

// scrape returns the Prometheus text of url.
func scrape(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return string(data), err
}

// metricSamples returns the values of the metric's samples by their label set ("" for
// an unlabelled sample, `ip_family="IPv4"` for a labelled one).
func metricSamples(url, name string) (map[string]float64, error) {
	text, err := scrape(url)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok {
			continue
		}
		labels := ""
		switch {
		case strings.HasPrefix(rest, " "):
		case strings.HasPrefix(rest, "{"):
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		default:
			continue // a longer name
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", url, line, err)
		}
		out[labels] = v
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no %s", url, name)
	}
	return out, nil
}

// firstObservation is a histogram's sum when it holds one to three observations: the
// first (full) sync, and the no-op syncs that may follow it before readiness. A
// histogram per IP family (kube-proxy's) gives the largest of the families' figures:
// the families sync at the same time, each in a loop of its own.
func firstObservation(url, name string) (float64, error) {
	counts, err := metricSamples(url, name+"_count")
	if err != nil {
		return 0, err
	}
	sums, err := metricSamples(url, name+"_sum")
	if err != nil {
		return 0, err
	}
	longest := 0.0
	for labels, count := range counts {
		if count < 1 || count > 3 {
			return 0, fmt.Errorf("%s{%s} has %v observations at synced, not 1 to 3", name, labels, count)
		}
		longest = max(longest, sums[labels])
	}
	return longest, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// table renders medians over rounds (changes: the median of every change of every
// round) with the range in brackets.
func table(samples []sample, sizes []int, proxies []string) string {
	var b strings.Builder
	b.WriteString("| Services × 10 endpoints | proxy | start → synced (s) | full sync (s) | one change, API write → kernel (ms) | RSS (MiB) | peak RSS (MiB) | ruleset lines |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range sizes {
		for _, p := range proxies {
			var start, full, changes, rssv, peak, lines []float64
			for _, s := range samples {
				if s.Services != n || s.Proxy != p || s.Err != "" && len(s.Changes) == 0 {
					continue
				}
				start = append(start, s.StartSynced)
				full = append(full, s.FullSync)
				changes = append(changes, s.Changes...)
				rssv = append(rssv, s.RSSMiB)
				peak = append(peak, s.PeakRSSMiB)
				lines = append(lines, float64(s.RulesetLines))
			}
			rng := func(v []float64, format string) string {
				if len(v) == 0 {
					return "—"
				}
				lo, hi := slices.Min(v), slices.Max(v)
				return fmt.Sprintf(format+" ("+format+"–"+format+")", median(v), lo, hi)
			}
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s |\n", n, p,
				rng(start, "%.2f"), rng(full, "%.3f"), rng(changes, "%.1f"), rng(rssv, "%.0f"), rng(peak, "%.0f"), rng(lines, "%.0f"))
		}
	}
	return b.String()
}
