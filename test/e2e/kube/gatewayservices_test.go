package kube

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"weir.dev/weir/internal/model"
	kubesource "weir.dev/weir/internal/source/kube"
	"weir.dev/weir/internal/store"
)

// TestGatewayServices runs the source as the gateway Deployment does (the weir-gateway
// ServiceAccount's token, per-Gateway Services on) against the real API server: three
// Gateways with a port-80 listener each get a Service of their own with distinct
// targetPorts, are Programmed with the Service's ClusterIP as address, keep their ports
// across a restart, and a deleted Gateway's Service is deleted.
func TestGatewayServices(t *testing.T) {
	c := requireCluster(t)
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(c.AdminConfig())
	gwAdmin := gatewayclient.NewForConfigOrDie(c.AdminConfig())
	const ns = "e2e-gwsvc"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := serviceAccountToken(t, admin, "weir-gateway")
	st := store.New()
	start := func() context.CancelFunc {
		src, err := kubesource.New(kubesource.Options{Kubeconfig: writeKubeconfig(t, c, token), Store: st, Logger: testLogger(t),
			Status:          &kubesource.StatusOptions{RetryPeriod: 500 * time.Millisecond, LeaseDuration: 2 * time.Second, RenewDeadline: time.Second},
			GatewayServices: &kubesource.GatewayServiceOptions{}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- src.Run(ctx) }()
		eventually(t, time.Minute, "source synced", func() (bool, error) { return src.Synced(), nil })
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("source Run: %v", err)
			}
		}
	}
	stop := start()
	defer func() { stop() }()

	names := []string{"same-namespace", "all-namespaces", "backend-namespaces"}
	for _, name := range names {
		listeners := []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 80}}
		if name == "backend-namespaces" {
			listeners = append(listeners, gatewayv1.Listener{Name: "alt", Protocol: gatewayv1.HTTPProtocolType, Port: 8080})
		}
		if _, err := gwAdmin.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       gatewayv1.GatewaySpec{GatewayClassName: "weir", Listeners: listeners},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// services lists the Gateways' Services in weir-system by owning Gateway.
	services := func() (map[string]corev1.Service, error) {
		list, err := admin.CoreV1().Services("weir-system").List(ctx, metav1.ListOptions{LabelSelector: model.GatewayServiceManagedByLabel + "=weir"})
		if err != nil {
			return nil, err
		}
		out := map[string]corev1.Service{}
		for _, svc := range list.Items {
			out[svc.Annotations[model.GatewayOwnerAnnotation]] = svc
		}
		return out, nil
	}
	var first map[string]corev1.Service
	eventually(t, 30*time.Second, "a Service per Gateway", func() (bool, error) {
		var err error
		first, err = services()
		return len(first) == 3, err
	})
	targets := map[int32]string{}
	for _, name := range names {
		svc, ok := first[ns+"/"+name]
		if !ok {
			t.Fatalf("no Service for Gateway %s", name)
		}
		if svc.Name != "weir-gw-"+ns+"-"+name || svc.Spec.Type != corev1.ServiceTypeLoadBalancer ||
			svc.Spec.Selector["app.kubernetes.io/name"] != "weir-gateway" || svc.Labels[model.GatewayOwnerNameLabel] != name {
			t.Errorf("Service %s: type %s, selector %v, labels %v", svc.Name, svc.Spec.Type, svc.Spec.Selector, svc.Labels)
		}
		wantPorts := 1
		if name == "backend-namespaces" {
			wantPorts = 2
		}
		if len(svc.Spec.Ports) != wantPorts {
			t.Errorf("Service %s ports %+v", svc.Name, svc.Spec.Ports)
		}
		for _, p := range svc.Spec.Ports {
			tp := int32(p.TargetPort.IntValue())
			if tp < kubesource.DefaultGatewayServicePortMin || tp > kubesource.DefaultGatewayServicePortMax || targets[tp] != "" {
				t.Errorf("Service %s port %d: targetPort %d out of range or taken by %s", svc.Name, p.Port, tp, targets[tp])
			}
			targets[tp] = svc.Name
		}
	}

	for _, name := range names {
		want := first[ns+"/"+name].Spec.ClusterIP
		eventually(t, 30*time.Second, "Gateway "+name+" Programmed with its Service's ClusterIP", func() (bool, error) {
			gw, err := gwAdmin.GatewayV1().Gateways(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return meta.IsStatusConditionTrue(gw.Status.Conditions, "Accepted") && meta.IsStatusConditionTrue(gw.Status.Conditions, "Programmed") &&
				len(gw.Status.Addresses) == 1 && gw.Status.Addresses[0].Value == want, nil
		})
	}

	// The model binds each Gateway's listeners on its Service's targetPorts.
	objs, _ := st.Current()
	snap := model.Translate(objs, model.Node{})
	var bound []string
	for _, l := range snap.Gateway.Listeners {
		bound = append(bound, l.Address)
	}
	var wantBound []string
	for tp := range targets {
		wantBound = append(wantBound, fmt.Sprintf(":%d", tp))
	}
	slices.Sort(wantBound)
	if !slices.Equal(bound, wantBound) {
		t.Errorf("listeners bound on %v, want %v", bound, wantBound)
	}

	// A restart (a new leader) reads the allocations back: nothing changes.
	stop()
	stop = start()
	time.Sleep(3 * time.Second) // a few status rounds of the new leader
	again, err := services()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(first, again, func(a, b corev1.Service) bool { return a.UID == b.UID && a.ResourceVersion == b.ResourceVersion }) {
		t.Errorf("Services changed across a restart:\nbefore %v\nafter  %v", first, again)
	}

	// Deleting a Gateway deletes its Service; the others stay.
	if err := gwAdmin.GatewayV1().Gateways(ns).Delete(ctx, "all-namespaces", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the deleted Gateway's Service is deleted", func() (bool, error) {
		_, err := admin.CoreV1().Services("weir-system").Get(ctx, first[ns+"/all-namespaces"].Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	left, err := services()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[ns+"/same-namespace"].UID != first[ns+"/same-namespace"].UID {
		t.Errorf("Services left: %v", slices.Collect(maps.Keys(left)))
	}

	// The other tests' gateways bind their listener ports on every address in file mode:
	// leave no Gateway behind, and so no Service either.
	if err := gwAdmin.GatewayV1().Gateways(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "every Gateway Service deleted", func() (bool, error) {
		left, err := services()
		return len(left) == 0, err
	})
}
