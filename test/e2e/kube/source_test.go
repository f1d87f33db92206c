package kube

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/userspace"
	"weir.dev/weir/internal/echo"
	"weir.dev/weir/internal/gateway"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/netnstest"
	"weir.dev/weir/internal/runner"
	kubesource "weir.dev/weir/internal/source/kube"
	"weir.dev/weir/internal/store"
)

// serviceAccountToken asks the API server for a token of one of weir's ServiceAccounts
// (from deploy/).
func serviceAccountToken(t *testing.T, admin kubernetes.Interface, name string) string {
	t.Helper()
	tr, err := admin.CoreV1().ServiceAccounts("weir-system").CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", name, err)
	}
	return tr.Status.Token
}

// eventually polls cond every 50 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v (last error: %v)", what, timeout, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testLogger logs to the test at Info, so a failure shows what the source did.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// runSource starts a Source with a kubeconfig for token and waits for its initial sync.
func runSource(t *testing.T, c *cluster, token string, opts kubesource.Options) *kubesource.Source {
	t.Helper()
	opts.Kubeconfig = writeKubeconfig(t, c, token)
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	src, err := kubesource.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("source Run: %v", err)
		}
	})
	eventually(t, time.Minute, "source synced", func() (bool, error) { return src.Synced(), nil })
	return src
}

func slice(ns, svc string, addrs []string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "weir-e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true)}, NodeName: ptr.To("node-a")})
	}
	return es
}

// endpointsOf counts the addresses of a Service's slices in objs.
func endpointsOf(objs *model.Objects, ns, svc string) int {
	n := 0
	for _, es := range objs.EndpointSlices {
		if es.Namespace == ns && es.Labels[discoveryv1.LabelServiceName] == svc {
			n += len(es.Endpoints)
		}
	}
	return n
}

// dataPath is the userspace data plane in the test's own network namespace, fed by a
// runner, with echo backends in a "pod" namespace reached over a veth. The proxy opens
// its backend connections from whatever thread runs them, so it cannot live in a
// namespace of its own; the veth's host end carries the ClusterIP, and deleting the
// veth removes both.
type dataPath struct {
	testNet
	pod    *netnstest.NS
	runner *runner.Runner
}

// gatewayAddr is where the test's Gateway listens: the veth's host end.
func (tn testNet) gatewayAddr() string { return tn.podNet + "1" }

// gatewayPort is the test's Gateway listener port, off the well-known range.
func (tn testNet) gatewayPort() int32 { return 18080 }

const backendMax = 10

// testNet are the addresses of one run, random so that concurrent runs of this suite
// (each with its own API server) do not collide in the host's namespace.
type testNet struct {
	clusterIP string // in the API server's 10.0.0.0/16 service range
	podNet    string // "10.231.X." with the host end at .1 and backends from .10
}

func newTestNet() testNet {
	n := time.Now().UnixNano()
	return testNet{
		clusterIP: fmt.Sprintf("10.0.%d.%d", 200+n%50, 10+(n>>8)%200),
		podNet:    fmt.Sprintf("10.231.%d.", (n>>16)%250),
	}
}

func (tn testNet) backendAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", tn.podNet, 10+i)
	}
	return out
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// newDataPath builds the namespace, backends, data plane and runner, or returns nil
// when network namespaces are not available here.
func newDataPath(t *testing.T, st *store.Store, tn testNet) *dataPath {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("not root: the data path is not tested, only the store")
		return nil
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Log("no ip command: the data path is not tested, only the store")
		return nil
	}
	h := netnstest.New(t)
	dp := &dataPath{testNet: tn, pod: h.NS("pod")}
	host := fmt.Sprintf("wk%x", time.Now().UnixNano()&0xffffff)
	if err := ipCmd("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", dp.pod.Name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ipCmd("link", "del", host) })
	for _, args := range [][]string{
		{"addr", "add", tn.podNet + "1/24", "dev", host},
		{"addr", "add", tn.clusterIP + "/32", "dev", host},
		{"link", "set", host, "up"},
	} {
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	dp.pod.MustRun("ip", "link", "set", "eth0", "up")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, a := range tn.backendAddrs(backendMax) {
		dp.pod.MustRun("ip", "addr", "add", a+"/24", "dev", "eth0")
		var ln net.Listener
		if err := dp.pod.Do(func() (err error) {
			ln, err = net.Listen("tcp", a+":8080")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = echo.ServeHTTP(ctx, ln, a) }()
	}
	proxy, err := userspace.New(userspace.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	gw, err := gateway.New(gateway.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
	})
	dp.runner, err = runner.New(runner.Options{Objects: st, Node: model.Node{Name: "node-a"},
		Dataplanes: []dataplane.Dataplane{proxy, gw}, MinInterval: 100 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = dp.runner.Run(ctx) }()
	return dp
}

// get sends one HTTP request to the Service and returns the body (the echo names the
// backend address).
func (dp *dataPath) get() (string, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + dp.clusterIP + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// snapshotEndpoints counts the cluster endpoints the data plane was last given.
func (dp *dataPath) snapshotEndpoints(ns, svc string) int {
	snap := dp.runner.Snapshot()
	if snap == nil {
		return -1
	}
	for _, s := range snap.Services {
		if s.Key.Namespace == ns && s.Key.Name == svc && len(s.Ports) > 0 {
			return len(s.Ports[0].Cluster.Endpoints)
		}
	}
	return -1
}

// TestKubeSource runs weir's source with the gateway ServiceAccount's token (and no
// other credential) against the real API server, through these steps in order.
func TestKubeSource(t *testing.T) {
	c := requireCluster(t)
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(c.AdminConfig())
	gwAdmin := gatewayclient.NewForConfigOrDie(c.AdminConfig())
	const ns = "e2e-source"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a",
		Labels: map[string]string{kubesource.ZoneLabel: "zone-a"}}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	st := store.New()
	reg := prometheus.NewRegistry()
	src := runSource(t, c, serviceAccountToken(t, admin, "weir-gateway"), kubesource.Options{
		NodeName: "node-a", Store: st, Registerer: reg,
		Status: &kubesource.StatusOptions{Addresses: []string{"192.0.2.80"}, RetryPeriod: 500 * time.Millisecond},
	})
	if n := src.Node(); n.Zone != "zone-a" {
		t.Errorf("node = %+v, want zone-a", n)
	}
	tn := newTestNet()
	dp := newDataPath(t, st, tn)
	storeHas := func(what string, cond func(*model.Objects) bool) {
		t.Helper()
		eventually(t, 30*time.Second, what, func() (bool, error) {
			objs, _ := st.Current()
			return objs != nil && cond(objs), nil
		})
	}

	t.Run("service and endpoints are proxied", func(t *testing.T) {
		_, err := admin.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
			Spec:       corev1.ServiceSpec{ClusterIP: tn.clusterIP, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(ns, "web", tn.backendAddrs(1)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		storeHas("service with one endpoint in the store", func(o *model.Objects) bool { return endpointsOf(o, ns, "web") == 1 })
		if dp == nil {
			return
		}
		eventually(t, 30*time.Second, "traffic through the userspace proxy", func() (bool, error) {
			body, err := dp.get()
			return err == nil && strings.Contains(body, tn.backendAddrs(1)[0]), err
		})
	})

	t.Run("endpoints scale 1, 10, 0, 3", func(t *testing.T) {
		for _, n := range []int{10, 0, 3} {
			cur, err := admin.DiscoveryV1().EndpointSlices(ns).Get(ctx, "web-1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cur.Endpoints = slice(ns, "web", tn.backendAddrs(n)).Endpoints
			if _, err := admin.DiscoveryV1().EndpointSlices(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			storeHas(fmt.Sprintf("%d endpoints in the store", n), func(o *model.Objects) bool { return endpointsOf(o, ns, "web") == n })
			if dp == nil {
				continue
			}
			eventually(t, 30*time.Second, fmt.Sprintf("%d endpoints in the data plane", n), func() (bool, error) {
				return dp.snapshotEndpoints(ns, "web") == n, nil
			})
			if n == 0 {
				eventually(t, 10*time.Second, "no endpoints: connections are refused", func() (bool, error) {
					_, err := dp.get()
					return err != nil, nil
				})
				continue
			}
			seen := map[string]bool{}
			eventually(t, 30*time.Second, fmt.Sprintf("traffic reaches all %d backends", n), func() (bool, error) {
				body, err := dp.get()
				for _, a := range tn.backendAddrs(n) {
					if err == nil && strings.Contains(body, `"`+a+`"`) {
						seen[a] = true
					}
				}
				return len(seen) == n, err
			})
		}
	})

	t.Run("ingress gets its status address", func(t *testing.T) {
		_, err := admin.NetworkingV1().Ingresses(ns).Create(ctx, &networkingv1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
			Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("weir"), DefaultBackend: &networkingv1.IngressBackend{
				Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "Ingress status.loadBalancer", func() (bool, error) {
			ing, err := admin.NetworkingV1().Ingresses(ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			lb := ing.Status.LoadBalancer.Ingress
			return len(lb) == 1 && lb[0].IP == "192.0.2.80", nil
		})
	})

	t.Run("gateway and route status are written back", func(t *testing.T) {
		_, err := gwAdmin.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "weir",
				Addresses: []gatewayv1.GatewaySpecAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: tn.gatewayAddr()}},
				Listeners: []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: gatewayv1.PortNumber(tn.gatewayPort())}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = gwAdmin.GatewayV1().HTTPRoutes(ns).Create(ctx, &gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
					BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: ptr.To[gatewayv1.PortNumber](80)}}}}}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		storeHas("gateway and route in the store", func(o *model.Objects) bool { return len(o.Gateways) > 0 && len(o.HTTPRoutes) > 0 })
		eventually(t, 30*time.Second, "GatewayClass Accepted", func() (bool, error) {
			gc, err := gwAdmin.GatewayV1().GatewayClasses().Get(ctx, "weir", metav1.GetOptions{})
			return err == nil && meta.IsStatusConditionTrue(gc.Status.Conditions, "Accepted"), err
		})
		eventually(t, 30*time.Second, "Gateway Programmed with its address and one attached route", func() (bool, error) {
			gw, err := gwAdmin.GatewayV1().Gateways(ns).Get(ctx, "gw", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return meta.IsStatusConditionTrue(gw.Status.Conditions, "Programmed") && len(gw.Status.Addresses) == 1 &&
				gw.Status.Addresses[0].Value == "192.0.2.80" && len(gw.Status.Listeners) == 1 &&
				gw.Status.Listeners[0].AttachedRoutes == 1, nil
		})
		eventually(t, 30*time.Second, "HTTPRoute parent Accepted and ResolvedRefs", func() (bool, error) {
			r, err := gwAdmin.GatewayV1().HTTPRoutes(ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil || len(r.Status.Parents) != 1 {
				return false, err
			}
			p := r.Status.Parents[0]
			return string(p.ControllerName) == kubesource.DefaultGatewayControllerName &&
				meta.IsStatusConditionTrue(p.Conditions, "Accepted") && meta.IsStatusConditionTrue(p.Conditions, "ResolvedRefs"), nil
		})
		if dp == nil {
			return
		}
		url := fmt.Sprintf("http://%s:%d/", tn.gatewayAddr(), tn.gatewayPort())
		eventually(t, 30*time.Second, "HTTP through the Gateway to a backend", func() (bool, error) {
			client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := client.Get(url)
			if err != nil {
				return false, err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			return resp.StatusCode == http.StatusOK && strings.Contains(string(body), tn.podNet), err
		})
		t.Logf("HTTP through Gateway %s reached a backend", url)
	})

	t.Run("namespace labels feed allowedRoutes selectors", func(t *testing.T) {
		const routeNS = "e2e-source-sel"
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: routeNS}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := gwAdmin.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw-sel"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "weir",
				Addresses: []gatewayv1.GatewaySpecAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: tn.gatewayAddr()}},
				Listeners: []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: gatewayv1.PortNumber(tn.gatewayPort() + 1),
					AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptr.To(gatewayv1.NamespacesFromSelector),
						Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"weir.dev/e2e": "selected"}}}}}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = gwAdmin.GatewayV1().HTTPRoutes(routeNS).Create(ctx, &gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: routeNS, Name: "web"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw-sel", Namespace: ptr.To(gatewayv1.Namespace(ns))}}},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
					BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: ptr.To[gatewayv1.PortNumber](80)}}}}}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		routeAccepted := func(want metav1.ConditionStatus, reason string) func() (bool, error) {
			return func() (bool, error) {
				r, err := gwAdmin.GatewayV1().HTTPRoutes(routeNS).Get(ctx, "web", metav1.GetOptions{})
				if err != nil || len(r.Status.Parents) != 1 {
					return false, err
				}
				c := meta.FindStatusCondition(r.Status.Parents[0].Conditions, "Accepted")
				return c != nil && c.Status == want && c.Reason == reason, nil
			}
		}
		eventually(t, 30*time.Second, "route in an unlabelled namespace not allowed", routeAccepted(metav1.ConditionFalse, "NotAllowedByListeners"))

		nsObj, err := admin.CoreV1().Namespaces().Get(ctx, routeNS, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nsObj.Labels["weir.dev/e2e"] = "selected"
		if _, err := admin.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "route accepted once its namespace is labelled", routeAccepted(metav1.ConditionTrue, "Accepted"))
		eventually(t, 30*time.Second, "listener counts the route", func() (bool, error) {
			gw, err := gwAdmin.GatewayV1().Gateways(ns).Get(ctx, "gw-sel", metav1.GetOptions{})
			return err == nil && len(gw.Status.Listeners) == 1 && gw.Status.Listeners[0].AttachedRoutes == 1, err
		})
		// Both namespaces' labels came through the informer (the API server set the
		// name label on each).
		storeHas("namespace labels in the store", func(o *model.Objects) bool {
			for _, n := range o.Namespaces {
				if n.Name == routeNS {
					return n.Labels["weir.dev/e2e"] == "selected" && n.Labels[corev1.LabelMetadataName] == routeNS
				}
			}
			return false
		})
	})

	t.Run("API server outage keeps the last state", func(t *testing.T) {
		before, _ := st.Current()
		wantEndpoints := endpointsOf(before, ns, "web")
		if err := c.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		restarted := false
		t.Cleanup(func() {
			if !restarted {
				if err := c.StartAPIServer(); err != nil {
					t.Errorf("restart kube-apiserver: %v", err)
				}
			}
		})
		sawDown := false
		for time.Since(stopped) < 20*time.Second {
			objs, _ := st.Current()
			if objs == nil || endpointsOf(objs, ns, "web") != wantEndpoints || len(objs.Services) != len(before.Services) {
				t.Fatalf("the store lost its state during the outage")
			}
			if !src.Synced() {
				t.Fatal("source became unready during the outage")
			}
			if !src.APIUp() {
				sawDown = true
			}
			if dp != nil && wantEndpoints > 0 {
				if _, err := dp.get(); err != nil {
					t.Fatalf("traffic stopped during the outage: %v", err)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !sawDown {
			t.Error("weir_kube_api_up never went to 0 during the outage")
		}
		if err := c.StartAPIServer(); err != nil {
			t.Fatal(err)
		}
		restarted = true
		cur, err := admin.DiscoveryV1().EndpointSlices(ns).Get(ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Endpoints = slice(ns, "web", tn.backendAddrs(5)).Endpoints
		if _, err := admin.DiscoveryV1().EndpointSlices(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Reflectors back off up to 30 s between retries; allow for that.
		eventually(t, 90*time.Second, "change after the restart reaches the store", func() (bool, error) {
			objs, _ := st.Current()
			return endpointsOf(objs, ns, "web") == 5, nil
		})
		eventually(t, 30*time.Second, "API up again", func() (bool, error) { return src.APIUp(), nil })
	})
}
