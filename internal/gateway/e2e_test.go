package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

// The shared health overlay fits the gateway's Health option.
var _ Health = (*health.Overlay)(nil)

func service(name string, e *echoBackend) (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: corev1.ServiceSpec{
		ClusterIP: "10.96.0." + strconv.Itoa(10+len(name)), Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	ready := true
	port := int32(e.addr.Port())
	proto := corev1.ProtocolTCP
	pname := "http"
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{e.addr.Addr().String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port, Protocol: &proto}}}
	return svc, es
}

// TestEndToEndFromObjects goes from Gateway API objects through model.Translate to a
// live gateway.
func TestEndToEndFromObjects(t *testing.T) {
	v1, v2 := startEcho(t, "v1"), startEcho(t, "v2")
	s1, e1 := service("web-v1", v1)
	s2, e2 := service("web-v2", v2)
	addr := freeAddr(t)
	host, portStr, _ := strings.Cut(addr, ":")
	port, _ := strconv.Atoi(portStr)
	ipType := gatewayv1.IPAddressType
	p80 := gatewayv1.PortNumber(80)
	exact := gatewayv1.PathMatchExact
	objs := &model.Objects{
		Services:       []*corev1.Service{s1, s2},
		EndpointSlices: []*discoveryv1.EndpointSlice{e1, e2},
		GatewayClasses: []*gatewayv1.GatewayClass{{ObjectMeta: metav1.ObjectMeta{Name: "weir"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: model.GatewayControllerName}}},
		Gateways: []*gatewayv1.Gateway{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "gw"}, Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "weir", Addresses: []gatewayv1.GatewaySpecAddress{{Type: &ipType, Value: host}},
			Listeners: []gatewayv1.Listener{{Name: "http", Port: gatewayv1.PortNumber(port), Protocol: gatewayv1.HTTPProtocolType}}}}},
		HTTPRoutes: []*gatewayv1.HTTPRoute{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Hostnames:       []gatewayv1.Hostname{"shop.example.com"},
			Rules: []gatewayv1.HTTPRouteRule{
				{Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &exact, Value: new("/v2")}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-v2", Port: &p80}}}}},
				{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-v1", Port: &p80}}}}},
			}}}},
	}
	snap := model.Translate(objs, model.Node{Name: "node-1"})
	if snap.Gateway == nil || len(snap.Gateway.Listeners) != 1 {
		t.Fatalf("translate: %+v", snap.Gateway)
	}
	g, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown(t.Context()) })
	if err := g.Sync(t.Context(), snap); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, path string
		code       int
		want       string
	}{
		{"shop.example.com", "/v2", 200, "v2"},
		{"shop.example.com", "/", 200, "v1"},
		{"other.example.com", "/", 404, ""},
	}
	for _, tc := range tests {
		resp, rep := get(t, http.DefaultClient, "GET", "http://"+addr+tc.path, map[string]string{"Host": tc.host})
		if resp.StatusCode != tc.code || (tc.want != "" && (rep == nil || rep.Name != tc.want)) {
			t.Fatalf("%s%s: %d %+v, want %d %s", tc.host, tc.path, resp.StatusCode, rep, tc.code, tc.want)
		}
	}
}

// TestSharedHealthOverlay checks that the gateway reports to internal/health under
// the keys the overlay uses, so that a failing endpoint is ejected there.
func TestSharedHealthOverlay(t *testing.T) {
	good, bad := startEcho(t, "good"), startEcho(t, "bad")
	bad.failAll.Store(true)
	svc, es := service("web", good)
	es.Endpoints = append(es.Endpoints, es.Endpoints[0])
	es.Endpoints[1].Addresses = []string{bad.addr.Addr().String()}
	// Both echoes listen on 127.0.0.1 with different ports: give each its own slice.
	es2 := es.DeepCopy()
	es2.Name = "web-2"
	port := int32(bad.addr.Port())
	es2.Ports[0].Port = &port
	es.Endpoints = es.Endpoints[:1]
	es2.Endpoints = es2.Endpoints[1:]
	addr := freeAddr(t)
	host, portStr, _ := strings.Cut(addr, ":")
	lport, _ := strconv.Atoi(portStr)
	ipType := gatewayv1.IPAddressType
	p80 := gatewayv1.PortNumber(80)
	objs := &model.Objects{
		Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{es, es2},
		GatewayClasses: []*gatewayv1.GatewayClass{{ObjectMeta: metav1.ObjectMeta{Name: "weir"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: model.GatewayControllerName}}},
		Gateways: []*gatewayv1.Gateway{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "gw"}, Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "weir", Addresses: []gatewayv1.GatewaySpecAddress{{Type: &ipType, Value: host}},
			Listeners: []gatewayv1.Listener{{Name: "http", Port: gatewayv1.PortNumber(lport), Protocol: gatewayv1.HTTPProtocolType}}}}},
		HTTPRoutes: []*gatewayv1.HTTPRoute{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: &p80}}}}}}}}},
	}
	snap := model.Translate(objs, model.Node{Name: "node-1"})
	overlay, err := health.New(health.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(overlay.Close)
	g, err := New(Options{Health: overlay})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown(t.Context()) })
	if err := g.Sync(t.Context(), snap); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		get(t, http.DefaultClient, "GET", "http://"+addr+"/", nil)
	}
	if overlay.Healthy("default/web:http", bad.addr) {
		t.Fatal("the shared overlay did not eject the failing endpoint")
	}
	if !overlay.Healthy("default/web:http", good.addr) {
		t.Fatal("the good endpoint was ejected")
	}
	hits := bad.hits.Load()
	for range 10 {
		if resp, _ := get(t, http.DefaultClient, "GET", "http://"+addr+"/", nil); resp.StatusCode != 200 {
			t.Fatalf("status %d after ejection", resp.StatusCode)
		}
	}
	if bad.hits.Load() != hits {
		t.Fatal("ejected endpoint still gets traffic")
	}
}
