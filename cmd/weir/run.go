package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"weir.dev/weir/internal/admin"
	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/ebpf"
	"weir.dev/weir/internal/dataplane/iptables"
	"weir.dev/weir/internal/dataplane/ipvs"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/dataplane/netpol"
	"weir.dev/weir/internal/dataplane/nftables"
	"weir.dev/weir/internal/dataplane/userspace"
	"weir.dev/weir/internal/dns"
	"weir.dev/weir/internal/gateway"
	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/runner"
	"weir.dev/weir/internal/source/file"
	"weir.dev/weir/internal/source/kube"
	"weir.dev/weir/internal/store"
)

// runFlags are weir run's settings.
type runFlags struct {
	configPaths       []string
	maxManifestSize   string
	mode              string
	nodeName          string
	zone              string
	nodePortAddresses []string
	// kube-proxy's settings, under its flag names.
	bindAddress                string
	masqueradeAll              bool
	clusterCIDRs               []string
	detectLocalMode            string
	podBridgeInterface         string
	podInterfaceNamePrefix     string
	ebpfCgroup                 string
	ebpfPinPath                string
	iptablesLocalhostNodePorts bool
	adminAddr                  string
	healthAddr                 string
	apiServer                  string
	dnsAddr                    string
	clusterDomain              string
	dnsTTL                     time.Duration
	dnsUpstreams               []string
	ingressHTTPAddr            string
	ingressHTTPSAddr           string
	trustedProxies             []string
	drainTimeout               time.Duration
	udpMaxFlows                int
	udpMaxFlowsPerSrc          int
	minSyncInterval            time.Duration
	kubeconfig                 string
	inCluster                  bool
	namespace                  string
	labelSelector              string
	statusAddresses            []string
	gatewayServiceType         string
	gatewayNamespace           string
	gatewayPodSelector         string
	gatewayServicePorts        string
	accessLog                  bool
	h2c                        bool
	gatewayLoops               bool
	// noGateway turns the L7 gateway and status write-back off (--gateway=false).
	noGateway bool
	// cleanupOtherModes removes the rules of the kernel modes not in use at start
	// (--cleanup-other-modes; false in runFlags built by in-process tests).
	cleanupOtherModes bool
	// networkPolicy enforces NetworkPolicy in nftables (table inet weir_netpol).
	networkPolicy bool
	log           logFlags
}

func (f *runFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringSliceVarP(&f.configPaths, "config", "c", nil, "manifest file or folder (read recursively, hot-reloaded); repeatable")
	registerMaxManifestSize(fl, &f.maxManifestSize)
	fl.StringVar(&f.mode, "mode", "userspace", "L4 data plane: userspace, nftables, iptables, ebpf, ipvs, or none (gateway and DNS only)")
	fl.BoolVar(&f.cleanupOtherModes, "cleanup-other-modes", true, "at start, remove the rules an earlier run left in the kernel modes not in use (not with --mode none); false when another weir on this host serves in another mode")
	fl.StringVar(&f.nodeName, "node-name", hostname(), "this node's name, for traffic policy Local")
	fl.StringVar(&f.zone, "zone", "", "this node's zone, for trafficDistribution PreferClose zone hints")
	fl.StringSliceVar(&f.nodePortAddresses, "nodeport-addresses", nil, "CIDRs whose local addresses serve node ports, per IP family: a family with no CIDR listed serves them on all its addresses (default: all local addresses)")
	fl.StringVar(&f.bindAddress, "bind-address", "", "this node's primary IP, as kube-proxy's flag (it binds nothing): loadBalancerSourceRanges holding it admit the LoadBalancer IPs as sources (default: from the Node object, else loopback)")
	fl.BoolVar(&f.masqueradeAll, "masquerade-all", false, "masquerade all traffic sent to ClusterIPs (nftables, iptables)")
	fl.StringSliceVar(&f.clusterCIDRs, "cluster-cidr", nil, "the pods' CIDR range, one per IP family; with --detect-local-mode ClusterCIDR, traffic from it is from pods (ClusterIP traffic from elsewhere is masqueraded; pods reaching a Local Service's node port or LoadBalancer IP use every endpoint)")
	fl.StringVar(&f.detectLocalMode, "detect-local-mode", string(model.LocalModeClusterCIDR), "how traffic from pods is recognised: ClusterCIDR, BridgeInterface or InterfaceNamePrefix")
	fl.StringVar(&f.podBridgeInterface, "pod-bridge-interface", "", "with --detect-local-mode BridgeInterface: traffic in from this bridge is from pods")
	fl.StringVar(&f.podInterfaceNamePrefix, "pod-interface-name-prefix", "", "with --detect-local-mode InterfaceNamePrefix: traffic in from interfaces named with this prefix is from pods")
	fl.StringVar(&f.ebpfCgroup, "ebpf-cgroup", "", "ebpf mode: the cgroup v2 directory whose sockets are balanced (default: the cgroup2 mount's root, found in /proc/self/mountinfo)")
	fl.StringVar(&f.ebpfPinPath, "ebpf-pin-path", ebpf.DefaultPinPath, "ebpf mode: bpffs directory where the maps and program links are pinned, so they outlive weir (bpffs is mounted on its parent if none is)")
	fl.BoolVar(&f.iptablesLocalhostNodePorts, "iptables-localhost-nodeports", true, "iptables mode: serve node ports on 127.0.0.0/8 (sets net.ipv4.conf.all.route_localnet=1), as kube-proxy")
	fl.StringVar(&f.adminAddr, "admin-addr", "127.0.0.1:9901", "admin API address (/healthz, /readyz, /metrics, /api/snapshot, dashboard); empty disables it")
	fl.StringVar(&f.healthAddr, "health-addr", "", "serve only /healthz and /readyz on this address (kube-proxy's is 0.0.0.0:10256), for probes from outside the node; empty disables it")
	fl.StringVar(&f.dnsAddr, "dns-addr", "", "serve cluster DNS on this address (UDP and TCP), for example 127.0.0.1:5353; off when empty")
	fl.StringVar(&f.clusterDomain, "cluster-domain", "cluster.local", "cluster DNS zone")
	fl.DurationVar(&f.dnsTTL, "dns-ttl", 5*time.Second, "TTL of cluster DNS answers")
	fl.StringSliceVar(&f.dnsUpstreams, "dns-upstream", nil, "resolvers (host:port) for names outside the cluster zone; refused when none")
	fl.StringVar(&f.ingressHTTPAddr, "ingress-http-addr", "127.0.0.1:8080", "listener for Ingress HTTP traffic")
	fl.StringVar(&f.ingressHTTPSAddr, "ingress-https-addr", "127.0.0.1:8443", "listener for Ingress HTTPS traffic")
	fl.StringSliceVar(&f.trustedProxies, "trusted-proxies", nil, "CIDRs whose X-Forwarded-* and Forwarded headers the gateway trusts")
	fl.DurationVar(&f.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, how long established connections may finish")
	fl.BoolFunc("gateway", "serve Gateways and Ingresses of weir's class and write their status (default true); --gateway=false on node proxies when a gateway Deployment serves them", func(v string) error {
		on, err := strconv.ParseBool(v)
		f.noGateway = !on
		return err
	})
	fl.BoolVar(&f.networkPolicy, "network-policy", false, "enforce Kubernetes NetworkPolicy for the pods on this node in nftables (table inet weir_netpol), in any --mode; needs --node-name with an API server")
	fl.IntVar(&f.udpMaxFlows, "udp-max-flows", 16384, "userspace mode: most UDP flows at once (each holds a socket); beyond it the least recently used flow is evicted")
	fl.IntVar(&f.udpMaxFlowsPerSrc, "udp-max-flows-per-source", 256, "userspace mode: most UDP flows of one client address; beyond it that address's least recently used flow is evicted")
	fl.DurationVar(&f.minSyncInterval, "min-sync-interval", time.Second, "minimum time between data plane syncs after a burst of two")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "watch this cluster's API server instead of files")
	fl.BoolVar(&f.inCluster, "in-cluster", false, "watch the API server of the cluster weir runs in")
	fl.StringVar(&f.apiServer, "api-server", "", "with the Kubernetes source: the API server's URL (https://HOST:PORT) in place of the kubeconfig's or the in-cluster one; a node proxy replacing kube-proxy needs it, since the kubernetes Service's ClusterIP works only once it runs")
	fl.StringVar(&f.namespace, "namespace", "", "with the Kubernetes source: watch only this namespace")
	fl.StringVar(&f.labelSelector, "label-selector", "", "with the Kubernetes source: watch only objects with these labels")
	fl.StringSliceVar(&f.statusAddresses, "status-address", nil, "with the Kubernetes source: addresses written to Ingress status (and to Gateway status with --gateway-service-type none)")
	fl.StringVar(&f.gatewayServiceType, "gateway-service-type", "LoadBalancer", "with the Kubernetes source: the type of the Service weir makes for each Gateway (LoadBalancer, NodePort or ClusterIP), whose address the Gateway gets; none: no Services, every Gateway binds its listener ports on all addresses, as in file mode")
	fl.StringVar(&f.gatewayNamespace, "gateway-namespace", envOr("POD_NAMESPACE", "weir-system"), "with the Kubernetes source: the namespace of the gateway Pods, where the Gateways' Services are made")
	fl.StringVar(&f.gatewayPodSelector, "gateway-pod-selector", "app.kubernetes.io/name=weir-gateway", "with the Kubernetes source: the labels of the gateway Pods, which the Gateways' Services select")
	fl.StringVar(&f.gatewayServicePorts, "gateway-service-ports", "20000-29999", "with the Kubernetes source: the range of container ports weir allocates to Gateway listeners (the targetPorts of the Gateways' Services)")
	fl.BoolVar(&f.accessLog, "access-log", false, "log every L7 request (JSON with --log-format json)")
	fl.BoolVar(&f.h2c, "h2c", true, "accept cleartext HTTP/2 with prior knowledge on the gateway's HTTP listeners, as gRPC clients of a GRPCRoute speak it (Upgrade: h2c is never accepted)")
	fl.BoolVar(&f.gatewayLoops, "gateway-event-loops", true, "serve HTTP/1.1 requests without a body on the gateway's plaintext listeners with event loops (false: net/http alone)")
	f.log.register(cmd)
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func newRunCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run weir on a folder of manifests or a Kubernetes cluster",
		Long: `Run weir: read Kubernetes manifests (Service, EndpointSlice or Endpoints, Ingress,
Gateway API routes, Secrets, weir's TrafficPolicy) from files or folders, or watch a
cluster's API server, and proxy the Services they describe.

Files are watched and hot-reloaded (SIGHUP also reloads). An invalid edit is logged
with file, line, object and field, and the last good configuration stays in force.`,
		Example: `  weir run --config ./manifests/
  weir run --config ./manifests/ --mode nftables --node-name node-a
  weir run --config ./manifests/ --dns-addr 127.0.0.1:5353`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := f.log.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return run(cmd.Context(), f, logger, nil)
		},
	}
	f.register(cmd)
	groupFlags(cmd)
	return cmd
}

// run is weir's main job: source → store → runner → data planes, plus the admin API.
// ready, when set, is called once the first configuration is applied.
func run(ctx context.Context, f runFlags, logger *slog.Logger, ready func(adminAddr string)) error {
	if len(f.configPaths) == 0 && f.kubeconfig == "" && !f.inCluster {
		return errors.New("nothing to run: give --config PATH (manifests) or --kubeconfig/--in-cluster")
	}
	if len(f.configPaths) > 0 && (f.kubeconfig != "" || f.inCluster) {
		return errors.New("--config and --kubeconfig/--in-cluster are two sources: give one (weir reads either manifest files or an API server)")
	}
	maxManifestBytes, err := parseMaxManifestSize(f.maxManifestSize)
	if err != nil {
		return err
	}
	proxyConfig, err := f.proxyConfig()
	if err != nil {
		return err
	}
	var bindIP netip.Addr
	if f.bindAddress != "" {
		if bindIP, err = netip.ParseAddr(f.bindAddress); err != nil {
			return fmt.Errorf("--bind-address %q: %w", f.bindAddress, err)
		}
		bindIP = bindIP.Unmap()
	}
	withBindIP := func(n model.Node) model.Node {
		if bindIP.IsValid() && !bindIP.IsUnspecified() {
			n.IPs[btoi(bindIP.Is6())] = bindIP
		}
		return n
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	st := store.New()
	g, ctx := errgroup.WithContext(ctx)

	// The gateway, once made, corrects the statuses written back (listeners it could
	// not bind are not Programmed); the status loop may run before it exists.
	var served atomic.Pointer[gateway.Gateway]

	// Source.
	node := withBindIP(model.Node{Name: f.nodeName, Zone: f.zone})
	var nodeFrom func() model.Node
	var sourceSynced func() bool
	var configError func() error
	switch {
	case len(f.configPaths) > 0:
		src := file.New(file.Options{Paths: f.configPaths, Store: st, Logger: logger, Registerer: reg, Own: ownListeners(f), MaxFileBytes: maxManifestBytes})
		if err := src.Load(); err != nil {
			return fmt.Errorf("configuration rejected:\n%w", err)
		}
		configError = func() error { _, err := src.LastResult(); return err }
		g.Go(func() error { return src.Run(ctx) })
		g.Go(func() error { reloadOnHangup(ctx, src.Reload); return nil })
		sourceSynced = func() bool { return true }
	default:
		gwServices, err := gatewayServiceOptions(&f)
		if err != nil {
			return err
		}
		// Without the gateway, Gateway and Ingress status is another process's job.
		var statusOptions *kube.StatusOptions
		if !f.noGateway {
			statusOptions = &kube.StatusOptions{Addresses: f.statusAddresses, Served: func(snap *model.Snapshot) *model.Snapshot {
				if gw := served.Load(); gw != nil {
					return gw.Served(snap)
				}
				return snap
			}}
		} else {
			gwServices = nil
		}
		src, err := kube.New(kube.Options{
			Kubeconfig: f.kubeconfig, InCluster: f.inCluster, APIServer: f.apiServer, Namespace: f.namespace,
			LabelSelector: f.labelSelector, NodeName: f.nodeName, NetworkPolicy: f.networkPolicy, Store: st, GatewayServices: gwServices,
			Status: statusOptions,
			Logger: logger, Registerer: reg,
		})
		if err != nil {
			return err
		}
		g.Go(func() error { return src.Run(ctx) })
		sourceSynced = src.Synced
		nodeFrom = func() model.Node {
			n := src.Node()
			if f.zone != "" {
				n.Zone = f.zone // the flag wins over the Node's topology label
			}
			return withBindIP(n)
		}
	}

	// Data planes.
	var planes []dataplane.Dataplane
	var shutdowns []func(context.Context) error
	sections := map[string]func() any{}
	// One health overlay (active checks, outlier ejection) for the userspace proxy and the
	// gateway; the kernel data planes do not consult it.
	checker, err := health.New(health.Options{Logger: logger, Registerer: reg})
	if err != nil {
		return err
	}
	g.Go(func() error { return checker.Run(ctx) })
	sections["health"] = func() any { return checker.Status() }
	if f.cleanupOtherModes && f.mode != "none" {
		// Not with --mode none: the gateway may run beside a node proxy on the same host.
		cleanupOtherModes(ctx, f.mode, logger)
	}
	if f.networkPolicy {
		enforcer, err := netpol.New(netpol.Options{Logger: logger, Registerer: reg})
		if err != nil {
			return err
		}
		planes = append(planes, enforcer)
	} else if f.cleanupOtherModes && f.mode != "none" {
		cleanupNetworkPolicy(ctx, logger)
	}
	switch f.mode {
	case "userspace":
		proxy, err := userspace.New(userspace.Options{
			Logger: logger, Registerer: reg, Proxy: proxyConfig,
			Health: checker, DrainTimeout: f.drainTimeout,
			MaxUDPFlows: f.udpMaxFlows, MaxUDPFlowsPerSource: f.udpMaxFlowsPerSrc,
		})
		if err != nil {
			return err
		}
		planes = append(planes, proxy)
		shutdowns = append(shutdowns, proxy.Shutdown)
	case "nftables":
		proxier, err := nftables.New(nftables.Options{Options: kernel.Options{Logger: logger, Registerer: reg, Proxy: proxyConfig}})
		if err != nil {
			return err
		}
		planes = append(planes, proxier)
		shutdowns = append(shutdowns, func(context.Context) error { proxier.Close(); return nil })
	case "iptables":
		proxier, err := iptables.New(iptables.Options{
			Options:                   kernel.Options{Logger: logger, Registerer: reg, Proxy: proxyConfig},
			DisableLocalhostNodePorts: !f.iptablesLocalhostNodePorts,
		})
		if err != nil {
			return err
		}
		planes = append(planes, proxier)
		shutdowns = append(shutdowns, func(context.Context) error { proxier.Close(); return nil })
	case "ipvs":
		proxier, err := ipvs.New(ipvs.Options{Options: kernel.Options{Logger: logger, Registerer: reg, Proxy: proxyConfig}})
		if err != nil {
			return err
		}
		planes = append(planes, proxier)
		shutdowns = append(shutdowns, func(context.Context) error { proxier.Close(); return nil })
	case "ebpf":
		proxier, err := ebpf.New(ebpf.Options{Cgroup: f.ebpfCgroup, PinPath: f.ebpfPinPath, Proxy: proxyConfig, Logger: logger, Registerer: reg})
		if err != nil {
			return err
		}
		planes = append(planes, proxier)
		shutdowns = append(shutdowns, func(context.Context) error { return proxier.Close() })
		sections["ebpf"] = func() any { return proxier.Status() }
	case "none":
		// Gateway mode: no L4 data plane; the gateway picks endpoints itself.
	default:
		return fmt.Errorf("--mode %q: want userspace, nftables, iptables, ebpf, ipvs or none", f.mode)
	}

	// The L7 gateway opens listeners only for Gateways and Ingresses of weir's class.
	if !f.noGateway {
		trusted, err := parsePrefixes("--trusted-proxies", f.trustedProxies)
		if err != nil {
			return err
		}
		gw, err := gateway.New(gateway.Options{
			Logger: logger, Registerer: reg, IngressHTTPAddr: f.ingressHTTPAddr,
			IngressHTTPSAddr: f.ingressHTTPSAddr, TrustedProxies: trusted, AccessLog: f.accessLog, H2C: f.h2c,
			Health: checker, DisableEventLoops: !f.gatewayLoops,
		})
		if err != nil {
			return err
		}
		served.Store(gw)
		planes = append(planes, gw)
		shutdowns = append(shutdowns, gw.Shutdown)
		sections["gateway"] = func() any {
			return map[string]any{"listeners": gw.Addresses(), "canaryRollbacks": gw.CanaryRollbacks()}
		}
	}

	if f.dnsAddr != "" {
		srv, err := dns.New(dns.Options{
			Addr: f.dnsAddr, Domain: f.clusterDomain, TTL: f.dnsTTL, Upstreams: f.dnsUpstreams,
			Logger: logger, Registerer: reg,
		})
		if err != nil {
			return err
		}
		g.Go(func() error { return srv.Run(ctx) })
		planes = append(planes, dnsPlane{srv})
		logger.Info("cluster DNS listening", "addr", srv.Addr(), "zone", f.clusterDomain)
	}

	rn, err := runner.New(runner.Options{
		Objects: st, Node: node, NodeFrom: nodeFrom, Dataplanes: planes, MinInterval: f.minSyncInterval,
		Logger: logger, Registerer: reg,
	})
	if err != nil {
		return err
	}
	g.Go(func() error { return rn.Run(ctx) })

	// Admin API.
	adminAddr := ""
	if f.adminAddr != "" {
		adm, err := admin.Listen(admin.Options{
			Addr: f.adminAddr, Gatherer: reg, Snapshot: func() *model.Snapshot {
				if gw := served.Load(); gw != nil {
					return gw.Served(rn.Snapshot())
				}
				return rn.Snapshot()
			},
			Ready:       func() bool { return sourceSynced() && rn.Synced() },
			Sections:    sections,
			ConfigError: configError,
			SyncError:   rn.SyncError,
			Health:      checker.Status,
			Traffic:     checker.Traffic,
			Mode:        f.mode,
			Logger:      logger,
		})
		if err != nil {
			return err
		}
		adminAddr = adm.Addr().String()
		g.Go(func() error { return adm.Serve(ctx) })
		logger.Info("admin API listening", "addr", "http://"+adminAddr)
	}
	if f.healthAddr != "" {
		hs, err := admin.Listen(admin.Options{
			Addr: f.healthAddr, HealthOnly: true, Snapshot: rn.Snapshot,
			Ready: func() bool { return sourceSynced() && rn.Synced() }, Logger: logger,
		})
		if err != nil {
			return fmt.Errorf("--health-addr: %w", err)
		}
		g.Go(func() error { return hs.Serve(ctx) })
		logger.Info("health port listening", "addr", "http://"+hs.Addr().String())
	}
	if ready != nil {
		g.Go(func() error {
			for !rn.Synced() {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(10 * time.Millisecond):
				}
			}
			ready(adminAddr)
			return nil
		})
	}

	err = g.Wait()
	shutdown(logger, f, shutdowns)
	return err
}

// shutdown drains every data plane at once, within the drain timeout, and says what
// stays behind: in the kernel modes, the rules keep serving after weir exits.
func shutdown(logger *slog.Logger, f runFlags, shutdowns []func(context.Context) error) {
	drainCtx, cancel := context.WithTimeout(context.Background(), f.drainTimeout)
	defer cancel()
	start := time.Now()
	logger.Info("shutting down: draining connections (a second SIGINT or SIGTERM exits at once)", "drain_timeout", f.drainTimeout)
	var wg sync.WaitGroup
	for _, sd := range shutdowns {
		wg.Go(func() {
			if err := sd(drainCtx); err != nil {
				logger.Warn("shutdown", "err", err)
			}
		})
	}
	wg.Wait()
	logger.Info("stopped", "drain_took", time.Since(start).Round(time.Millisecond))
	if slices.Contains(kernelModes, f.mode) && (f.mode != "ebpf" || f.ebpfPinPath != "") {
		logger.Warn("the "+f.mode+" rules stay in the kernel and keep serving the Services with their last endpoints; remove them with `weir cleanup --mode "+f.mode+"`",
			"mode", f.mode)
	}
}

// dnsPlane hands Snapshots to the DNS server, so DNS answers change with the proxies.
type dnsPlane struct{ srv *dns.Server }

func (d dnsPlane) Name() string { return "dns" }

func (d dnsPlane) Sync(_ context.Context, snap *model.Snapshot) error {
	d.srv.Update(snap)
	return nil
}

// reloadOnHangup calls reload on every SIGHUP until ctx ends.
func reloadOnHangup(ctx context.Context, reload func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			reload()
		}
	}
}

// ownListeners describes weir's own fixed listeners, so that the file source refuses
// an endpoint at one of them: a route to the admin address would serve the admin API.
// A listener on an unspecified address owns its port on every local address.
func ownListeners(f runFlags) func(netip.AddrPort) string {
	type own struct {
		ap   netip.AddrPort
		what string
	}
	var owns []own
	for _, l := range []struct{ addr, what string }{
		{f.adminAddr, "admin API (--admin-addr)"},
		{f.healthAddr, "health port (--health-addr)"},
		{f.dnsAddr, "cluster DNS (--dns-addr)"},
		{f.ingressHTTPAddr, "Ingress HTTP listener (--ingress-http-addr)"},
		{f.ingressHTTPSAddr, "Ingress HTTPS listener (--ingress-https-addr)"},
	} {
		if ap, err := netip.ParseAddrPort(l.addr); err == nil && ap.Port() != 0 {
			owns = append(owns, own{netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), l.what})
		}
	}
	return func(ap netip.AddrPort) string {
		for _, o := range owns {
			if o.ap.Port() != ap.Port() {
				continue
			}
			if o.ap.Addr() == ap.Addr() || (o.ap.Addr().IsUnspecified() && isLocalAddr(ap.Addr())) {
				return o.what
			}
		}
		return ""
	}
}

// isLocalAddr reports whether a is an address of this host.
func isLocalAddr(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if ipn, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// proxyConfig collects kube-proxy's settings from their flags.
func (f *runFlags) proxyConfig() (model.ProxyConfig, error) {
	var c model.ProxyConfig
	var err error
	if c.NodePortAddresses, err = parsePrefixes("--nodeport-addresses", f.nodePortAddresses); err != nil {
		return c, err
	}
	c.MasqueradeAll = f.masqueradeAll
	c.DetectLocal = model.DetectLocal{
		Mode: model.LocalMode(f.detectLocalMode), BridgeInterface: f.podBridgeInterface, InterfaceNamePrefix: f.podInterfaceNamePrefix,
	}
	if c.DetectLocal.ClusterCIDRs, err = parsePrefixes("--cluster-cidr", f.clusterCIDRs); err != nil {
		return c, err
	}
	if err := c.DetectLocal.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func parsePrefixes(flag string, values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range values {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", flag, v, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// envOr is the environment variable key, or def when it is unset or empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// gatewayServiceOptions reads the --gateway-* flags of the Gateways' Services (empty ones
// take kube.GatewayServiceOptions' defaults); nil with type none.
func gatewayServiceOptions(f *runFlags) (*kube.GatewayServiceOptions, error) {
	if strings.EqualFold(f.gatewayServiceType, "none") {
		return nil, nil
	}
	o := &kube.GatewayServiceOptions{Namespace: f.gatewayNamespace, Type: corev1.ServiceType(f.gatewayServiceType)}
	if f.gatewayPodSelector != "" {
		sel, err := labels.ConvertSelectorToLabelsMap(f.gatewayPodSelector)
		if err != nil || len(sel) == 0 {
			return nil, fmt.Errorf("--gateway-pod-selector %q: want key=value[,key=value]", f.gatewayPodSelector)
		}
		o.Selector = sel
	}
	if f.gatewayServicePorts != "" {
		lo, hi, ok := strings.Cut(f.gatewayServicePorts, "-")
		pmin, err1 := strconv.ParseInt(lo, 10, 32)
		pmax, err2 := strconv.ParseInt(hi, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("--gateway-service-ports %q: want MIN-MAX", f.gatewayServicePorts)
		}
		o.PortMin, o.PortMax = int32(pmin), int32(pmax)
	}
	for _, t := range []corev1.ServiceType{corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeNodePort, corev1.ServiceTypeClusterIP} {
		if strings.EqualFold(f.gatewayServiceType, string(t)) {
			o.Type = t
		}
	}
	return o, nil
}
