// Package kube is weir's Kubernetes source: client-go informers watch the API server and
// every change rebuilds the model.Objects handed to the store. It also writes status back
// (Ingress, GatewayClass, Gateway, Routes) under a Lease-based leader election.
//
// While the API server is unreachable the informers keep their caches, so the store keeps
// the last object set; nothing is ever pushed from a failed list.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/store"
)

// Clients are the API clients the source uses. Tests pass fakes; otherwise New builds
// them from Kubeconfig or the in-cluster config.
type Clients struct {
	Kube    kubernetes.Interface
	Gateway gatewayclient.Interface
	Dynamic dynamic.Interface
}

// Options configure a Source.
type Options struct {
	// Kubeconfig is the path of a kubeconfig file; ignored when InCluster or Clients is set.
	Kubeconfig string
	// InCluster uses the Pod's ServiceAccount.
	InCluster bool
	// APIServer, when set, is the API server's URL (https://HOST:PORT) in place of the one
	// in the kubeconfig or the in-cluster environment (the kubernetes Service's ClusterIP,
	// which a node proxy replacing kube-proxy cannot reach before it runs).
	APIServer string
	// Clients, when set, are used instead of building clients (tests).
	Clients *Clients

	// Namespace restricts namespaced objects to one namespace; "" watches all.
	Namespace string
	// LabelSelector restricts Services, EndpointSlices, Ingresses, Gateways, Routes and
	// TrafficPolicies. Secrets, ReferenceGrants, BackendTLSPolicies and cluster-scoped
	// objects are not filtered by labels, because they are referenced by name.
	LabelSelector string
	// NodeName is the node weir runs on; its Node object gives the zone. "" skips it.
	NodeName string
	// NetworkPolicy watches Pods and NetworkPolicies (and every Namespace's labels), the
	// inputs of network policy; LabelSelector does not filter them.
	NetworkPolicy bool

	// Store receives every rebuilt object set.
	Store *store.Store

	// Coalesce is the least time between two rebuilds: a lone event is rebuilt at once,
	// and events that follow within Coalesce go into one rebuild. Default 30 ms.
	Coalesce time.Duration
	// Rediscover is how often API groups that were missing (Gateway API, weir.dev) are
	// looked for again. Default 30 s.
	Rediscover time.Duration
	// ProbeInterval is how often the API server's health is probed for weir_kube_api_up.
	// Default 2 s.
	ProbeInterval time.Duration

	// Status enables status write-back under leader election; nil disables it.
	Status *StatusOptions
	// GatewayServices, when set, gives every Gateway a Service of its own: the source
	// reads those Services into model.Objects.GatewayServices (and sets
	// GatewayServicesManaged), and the status leader makes and removes them. Nil keeps
	// one shared address for every Gateway, as in file mode.
	GatewayServices *GatewayServiceOptions

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Source watches the Kubernetes API and feeds the store.
type Source struct {
	opts    Options
	log     *slog.Logger
	clients Clients
	probe   func(ctx context.Context) error
	m       metrics

	mu      sync.Mutex
	kinds   map[string]*kind // by kind name; guarded by mu
	dirty   map[string]bool  // kinds changed since the last rebuild; guarded by mu
	objects model.Objects    // the last rebuilt set; guarded by mu
	node    model.Node       // guarded by mu

	wake    chan struct{} // an event arrived
	rebuilt chan struct{} // a rebuild was pushed (status writer)
	// inflight maps kind/namespace/name to the resourceVersion a status patch was
	// computed against, so a write the cache has not seen yet is not sent twice. Owned by
	// the status loop.
	inflight map[string]string
	// portsExhaustedSaid: the lack of free Gateway targetPorts was logged. gwSvcErrs: the
	// last failure logged per Gateway Service write ("op namespace/name"), so a failure
	// repeated every status round is logged once. Owned by the status loop.
	portsExhaustedSaid bool
	gwSvcErrs          map[string]string

	synced atomic.Bool
	apiUp  atomic.Bool
}

// New checks the options and builds the clients. It does not contact the API server.
func New(opts Options) (*Source, error) {
	if opts.Store == nil {
		return nil, errors.New("kube source: no store")
	}
	if _, err := labels.Parse(opts.LabelSelector); err != nil {
		return nil, fmt.Errorf("kube source: label selector %q: %w", opts.LabelSelector, err)
	}
	if opts.Coalesce <= 0 {
		opts.Coalesce = 30 * time.Millisecond
	}
	if opts.Rediscover <= 0 {
		opts.Rediscover = 30 * time.Second
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{
		opts:    opts,
		log:     opts.Logger.With("source", "kube"),
		kinds:   map[string]*kind{},
		dirty:   map[string]bool{},
		node:    model.Node{Name: opts.NodeName},
		wake:    make(chan struct{}, 1),
		rebuilt: make(chan struct{}, 1),
	}
	if opts.Status != nil {
		if err := opts.Status.setDefaults(); err != nil {
			return nil, err
		}
	}
	if opts.GatewayServices != nil {
		if err := opts.GatewayServices.setDefaults(); err != nil {
			return nil, err
		}
		s.objects.GatewayServicesManaged = true
	}
	if opts.Clients != nil {
		s.clients = *opts.Clients
		s.probe = func(context.Context) error {
			_, err := s.clients.Kube.Discovery().ServerVersion()
			return err
		}
	} else {
		cfg, err := restConfig(opts)
		if err != nil {
			return nil, err
		}
		if err := s.buildClients(cfg); err != nil {
			return nil, err
		}
	}
	var err error
	if s.m, err = newMetrics(opts.Registerer); err != nil {
		return nil, err
	}
	return s, nil
}

func restConfig(opts Options) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	switch {
	case opts.InCluster:
		cfg, err = rest.InClusterConfig()
	case opts.Kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", opts.Kubeconfig)
	default:
		return nil, errors.New("kube source: neither a kubeconfig nor in-cluster mode was given")
	}
	if err != nil {
		return nil, fmt.Errorf("kube source: client config: %w", err)
	}
	if opts.APIServer != "" {
		u, err := url.Parse(opts.APIServer)
		if err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
			return nil, fmt.Errorf("kube source: API server %q: want https://HOST:PORT", opts.APIServer)
		}
		cfg.Host = opts.APIServer
	}
	return cfg, nil
}

func (s *Source) buildClients(cfg *rest.Config) error {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "weir"
	cfg.QPS, cfg.Burst = 50, 100
	// Built-in kinds travel as protobuf: less CPU and garbage than JSON at 10k objects.
	kcfg := rest.CopyConfig(cfg)
	kcfg.ContentType = "application/vnd.kubernetes.protobuf"
	kcfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	var err error
	if s.clients.Kube, err = kubernetes.NewForConfig(kcfg); err != nil {
		return fmt.Errorf("kube source: kubernetes client: %w", err)
	}
	if s.clients.Gateway, err = gatewayclient.NewForConfig(cfg); err != nil {
		return fmt.Errorf("kube source: gateway-api client: %w", err)
	}
	if s.clients.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return fmt.Errorf("kube source: dynamic client: %w", err)
	}
	// The probe has a short timeout of its own; the watch clients must have none.
	pcfg := rest.CopyConfig(cfg)
	pcfg.Timeout = 2 * time.Second
	probe, err := kubernetes.NewForConfig(pcfg)
	if err != nil {
		return fmt.Errorf("kube source: probe client: %w", err)
	}
	s.probe = func(ctx context.Context) error {
		return probe.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	}
	return nil
}

// Synced reports whether the initial list of every watched kind is done and the first
// object set was handed to the store. It stays true during API server outages, since the
// data planes keep serving the last state.
func (s *Source) Synced() bool { return s.synced.Load() }

// APIUp reports whether the API server answered the last probe or watch.
func (s *Source) APIUp() bool { return s.apiUp.Load() }

// Node is this node's name and zone (label topology.kubernetes.io/zone). Valid once
// Synced; the zone is "" when the node has none or NodeName was not given.
func (s *Source) Node() model.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node
}

// Objects returns the last object set handed to the store.
func (s *Source) Objects() *model.Objects {
	s.mu.Lock()
	defer s.mu.Unlock()
	objs := s.objects
	return &objs
}

// Run watches until ctx is done. It returns an error only when the initial setup fails;
// an unreachable API server is retried forever (Synced stays false until it answers).
func (s *Source) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	wg.Add(1)
	go func() { defer wg.Done(); s.probeLoop(ctx) }()

	// Discovery decides which informers exist; retry until the API server answers.
	for {
		err := s.ensureInformers(ctx)
		if err == nil {
			break
		}
		s.log.Warn("API discovery failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
	if !s.waitForSync(ctx) {
		return nil
	}
	s.rebuild()
	s.synced.Store(true)
	s.m.synced.Set(1)
	s.log.Info("initial sync done", "kinds", s.kindNames())

	wg.Add(1)
	go func() { defer wg.Done(); s.rediscoverLoop(ctx) }()
	if s.opts.Status != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.runStatus(ctx) }()
	}
	s.rebuildLoop(ctx)
	return nil
}

// rebuildLoop coalesces events: an event after a quiet spell of Coalesce is rebuilt at
// once (a lone change reaches the store without waiting); events that follow within
// Coalesce of a rebuild go into one rebuild when that time is up.
func (s *Source) rebuildLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.wake:
		}
		if wait := s.opts.Coalesce - time.Since(last); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
		}
		s.rebuild()
		last = time.Now()
	}
}

func (s *Source) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// rebuild lists the changed kinds from their informer caches and pushes the whole set.
func (s *Source) rebuild() {
	start := time.Now()
	s.mu.Lock()
	for name := range s.dirty {
		k := s.kinds[name]
		if k == nil || !k.informer.HasSynced() {
			continue // a kind that appeared later joins after its first list
		}
		k.fill(&s.objects, k.informer.GetStore().List())
		delete(s.dirty, name)
	}
	if k := s.kinds[kindNode]; k != nil {
		s.node = nodeFrom(s.opts.NodeName, k.informer.GetStore().List())
	}
	objs := s.objects // the slices are never modified after a fill, only replaced
	s.mu.Unlock()

	s.opts.Store.Update(&objs)
	s.m.rebuildSeconds.Observe(time.Since(start).Seconds())
	select {
	case s.rebuilt <- struct{}{}:
	default:
	}
}

func (s *Source) probeLoop(ctx context.Context) {
	t := time.NewTicker(s.opts.ProbeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := s.probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.setAPIUp(err == nil, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Source) setAPIUp(up bool, err error) {
	was := s.apiUp.Swap(up)
	if up {
		s.m.apiUp.Set(1)
		if !was {
			s.log.Info("API server reachable")
		}
		return
	}
	s.m.apiUp.Set(0)
	if was {
		s.log.Warn("API server unreachable; data planes keep the last state", "err", err)
	}
}
