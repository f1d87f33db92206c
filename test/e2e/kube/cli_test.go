package kube

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// TestWeirRunAgainstAPIServer runs the weir binary itself, `weir run --kubeconfig`,
// with the gateway ServiceAccount's token and --mode none, and checks the wiring from
// the CLI through the Kubernetes source to readiness, the Snapshot and cluster DNS.
func TestWeirRunAgainstAPIServer(t *testing.T) {
	c := requireCluster(t)
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(c.AdminConfig())
	const ns = "e2e-cli"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := admin.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	bin := filepath.Join(t.TempDir(), "weir")
	build := exec.Command("go", "build", "-o", bin, "./cmd/weir")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	kubeconfig := writeKubeconfig(t, c, serviceAccountToken(t, admin, "weir-gateway"))
	adminAddr, dnsAddr := freeAddr(t), freeAddr(t)
	logs, err := os.CreateTemp(t.TempDir(), "weir-log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--kubeconfig", kubeconfig, "--namespace", ns, "--mode", "none",
		"--node-name", "node-a", "--admin-addr", adminAddr, "--dns-addr", dnsAddr, "--drain-timeout", "1s")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("weir's log:\n%s", b)
		}
	})

	httpGet := func(path string) (int, string) {
		resp, err := http.Get("http://" + adminAddr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, 60*time.Second, "weir ready", func() (bool, error) {
		code, _ := httpGet("/readyz")
		return code == 200, nil
	})

	aRecords := func() ([]string, error) {
		m := new(mdns.Msg)
		m.SetQuestion("api."+ns+".svc.cluster.local.", mdns.TypeA)
		r, _, err := (&mdns.Client{Timeout: time.Second}).Exchange(m, dnsAddr)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, rr := range r.Answer {
			if a, ok := rr.(*mdns.A); ok {
				out = append(out, a.A.String())
			}
		}
		return out, nil
	}
	eventually(t, 30*time.Second, "DNS answers the ClusterIP the API server allocated", func() (bool, error) {
		got, err := aRecords()
		return err == nil && len(got) == 1 && got[0] == svc.Spec.ClusterIP, nil
	})

	// An EndpointSlice written through the API shows up in the admin API's Snapshot.
	ready := true
	if _, err := admin.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "api-1", Labels: map[string]string{discoveryv1.LabelServiceName: "api"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptrTo("http"), Port: ptrTo(int32(8080))}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.251.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the endpoint in /api/snapshot", func() (bool, error) {
		code, body := httpGet("/api/snapshot")
		return code == 200 && strings.Contains(body, `"10.251.0.7"`), nil
	})
	if code, body := httpGet("/metrics"); code != 200 || !strings.Contains(body, "weir_kube_api_up 1") {
		t.Errorf("/metrics lacks weir_kube_api_up 1 (code %d)", code)
	}
}

// freeAddr is a loopback address with a port free for TCP and UDP.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

func ptrTo[T any](v T) *T { return &v }
