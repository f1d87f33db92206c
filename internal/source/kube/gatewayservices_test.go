package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/store"
)

func targetPorts(svc *corev1.Service) map[int32]int32 {
	out := map[int32]int32{}
	for _, p := range svc.Spec.Ports {
		out[p.Port] = p.TargetPort.IntVal
	}
	return out
}

// TestPlanGatewayServices checks the allocation of targetPorts: unique across Gateways,
// kept from the existing Services, bounded by the range, and the removal of Services
// whose Gateway is gone.
func TestPlanGatewayServices(t *testing.T) {
	o := &GatewayServiceOptions{Type: corev1.ServiceTypeClusterIP, PortMin: 20000, PortMax: 20003}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	want := []model.GatewayPorts{
		{Namespace: "a", Name: "one", Ports: []int32{80, 443}},
		{Namespace: "a", Name: "two", Ports: []int32{80}},
	}
	plan := planGatewayServices(want, nil, o)
	if len(plan.create) != 2 || len(plan.update)+len(plan.remove) != 0 {
		t.Fatalf("plan %+v", plan)
	}
	one, two := plan.create[0], plan.create[1]
	if one.Name != "weir-gw-a-one" || one.Namespace != "weir-system" || one.Annotations[model.GatewayOwnerAnnotation] != "a/one" ||
		one.Labels[model.GatewayOwnerNameLabel] != "one" || one.Spec.Selector["app.kubernetes.io/name"] != "weir-gateway" {
		t.Errorf("service one: %+v", one.ObjectMeta)
	}
	if got := targetPorts(one); got[80] != 20000 || got[443] != 20001 {
		t.Errorf("one: %v", got)
	}
	if got := targetPorts(two); got[80] != 20002 {
		t.Errorf("two: %v", got)
	}

	// Read back: nothing changes. Gateway one goes; a new Gateway takes the freed ports
	// only after the kept allocation of two.
	two.UID = "uid-two"
	if p := planGatewayServices(want, []*corev1.Service{one, two}, o); len(p.create)+len(p.update)+len(p.remove) != 0 {
		t.Fatalf("stable plan %+v", p)
	}
	want2 := []model.GatewayPorts{{Namespace: "a", Name: "three", Ports: []int32{80, 8080, 9090}}, want[1]}
	p := planGatewayServices(want2, []*corev1.Service{one, two}, o)
	if len(p.remove) != 1 || p.remove[0] != one || len(p.create) != 1 || len(p.update) != 0 {
		t.Fatalf("plan %+v", p)
	}
	if got := targetPorts(p.create[0]); got[80] != 20000 || got[8080] != 20001 || got[9090] != 20003 {
		t.Errorf("three: %v", got)
	}

	// The range is exhausted: the port that does not fit is left out and said.
	want3 := append(want2, model.GatewayPorts{Namespace: "b", Name: "four", Ports: []int32{80}})
	p = planGatewayServices(want3, []*corev1.Service{p.create[0], two}, o)
	if len(p.create) != 0 || len(p.exhausted) != 1 || p.exhausted[0] != "b/four" {
		t.Fatalf("plan %+v", p)
	}

	// A port changed by hand is put back; a stray Service without an owner goes.
	changed := two.DeepCopy()
	changed.Spec.Ports[0].TargetPort = intstr.FromString("http")
	stray := two.DeepCopy()
	stray.Name, stray.Annotations = "stray", nil
	p = planGatewayServices(want[1:], []*corev1.Service{changed, stray}, o)
	if len(p.update) != 1 || targetPorts(p.update[0])[80] != 20000 || len(p.remove) != 1 || p.remove[0].Name != "stray" {
		t.Fatalf("plan %+v", p)
	}
}

func TestGatewayServiceName(t *testing.T) {
	long := strings.Repeat("x", 80)
	for _, tc := range []struct {
		ns, name string
		hashed   bool
	}{{"ns", "gw", false}, {"ns", "gw.v1", false}, {"ns", long, false}, {"ns", "gw", true}, {"ns", long, true}} {
		n := GatewayServiceName(tc.ns, tc.name, tc.hashed)
		if len(n) > 63 || strings.ContainsAny(n, ".") || strings.HasSuffix(n, "-") || !strings.HasPrefix(n, "weir-gw-ns-") {
			t.Errorf("%s/%s hashed %v: %q", tc.ns, tc.name, tc.hashed, n)
		}
	}
	if GatewayServiceName("ns", "gw", false) != "weir-gw-ns-gw" {
		t.Error(GatewayServiceName("ns", "gw", false))
	}
	if GatewayServiceName("ns", long, false) == GatewayServiceName("ns", long+"y", false) {
		t.Error("long names collide")
	}
}

// TestSyncGatewayServices runs the source with fake clients as the status leader: a
// Gateway gets its Service and a stray one goes; without the Gateway API served, the
// existing Services are left alone.
func TestSyncGatewayServices(t *testing.T) {
	stray := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "weir-system", Name: "weir-gw-default-gone",
		Labels:      map[string]string{model.GatewayServiceManagedByLabel: model.GatewayServiceManagedBy, model.GatewayOwnerNamespaceLabel: "default"},
		Annotations: map[string]string{model.GatewayOwnerAnnotation: "default/gone"}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(20000)}}}}
	for _, served := range []bool{true, false} {
		t.Run(fmt.Sprintf("Gateway API served %v", served), func(t *testing.T) {
			clients, kube, gw := fakeClients(t, served, false)
			ctx := context.Background()
			if err := create(kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weir-system"}}, metav1.CreateOptions{})); err != nil {
				t.Fatal(err)
			}
			if err := create(kube.CoreV1().Services("weir-system").Create(ctx, stray.DeepCopy(), metav1.CreateOptions{})); err != nil {
				t.Fatal(err)
			}
			if err := create(gw.GatewayV1().Gateways("default").Create(ctx, &gatewayv1.Gateway{ObjectMeta: objectMeta("default", "web"),
				Spec: gatewayv1.GatewaySpec{GatewayClassName: "weir", Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}}}},
				metav1.CreateOptions{})); err != nil {
				t.Fatal(err)
			}
			st := store.New()
			startSource(t, Options{Clients: clients, Store: st, Registerer: prometheus.NewRegistry(),
				GatewayServices: &GatewayServiceOptions{Type: corev1.ServiceTypeClusterIP},
				Status: &StatusOptions{Identity: "test", LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond,
					RetryPeriod: 100 * time.Millisecond, MinInterval: 50 * time.Millisecond}})
			names := func() map[string]*corev1.Service {
				list, err := kube.CoreV1().Services("weir-system").List(ctx, metav1.ListOptions{})
				if err != nil {
					t.Fatal(err)
				}
				out := map[string]*corev1.Service{}
				for i := range list.Items {
					out[list.Items[i].Name] = &list.Items[i]
				}
				return out
			}
			objs := waitFor(t, st, "the stray Service read", func(o *model.Objects) bool { return o.GatewayServicesManaged && len(o.GatewayServices) > 0 })
			if served {
				deadline := time.Now().Add(10 * time.Second)
				for {
					have := names()
					if svc := have["weir-gw-default-web"]; svc != nil && have[stray.Name] == nil {
						if targetPorts(svc)[80] != 20000 || svc.Spec.Type != corev1.ServiceTypeClusterIP {
							t.Errorf("Service %+v", svc.Spec)
						}
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("Services %v: want weir-gw-default-web only", have)
					}
					time.Sleep(20 * time.Millisecond)
				}
				return
			}
			time.Sleep(time.Second) // several status rounds
			if have := names(); len(have) != 1 || have[stray.Name] == nil || len(objs.GatewayServices) != 1 {
				t.Errorf("Services %v: want the stray one kept", have)
			}
		})
	}
}
