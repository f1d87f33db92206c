package nftables

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kptr "k8s.io/utils/ptr"

	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/netnstest"
)

// churn is a random object set that changes as a source changes it (a changed object
// is a new pointer) and the Snapshots a Translator makes of it, versioned as the runner
// versions them.
type churn struct {
	rng      *rand.Rand
	services map[int]*corev1.Service
	slices   map[int]*discoveryv1.EndpointSlice
	tr       *model.Translator
	version  uint64
}

func newChurn(seed uint64) *churn {
	c := &churn{rng: rand.New(rand.NewPCG(seed, 11)), services: map[int]*corev1.Service{},
		slices: map[int]*discoveryv1.EndpointSlice{}, tr: model.NewTranslator()}
	for i := range 20 {
		c.services[i] = c.service(i)
		c.slices[i] = c.slice(i)
	}
	return c
}

func (c *churn) service(i int) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("svc-%d", i)},
		Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.0.%d", i+1), Ports: []corev1.ServicePort{
			{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}}
	svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	if c.rng.IntN(3) == 0 {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53})
	}
	switch c.rng.IntN(5) {
	case 0:
		svc.Spec.Type = corev1.ServiceTypeNodePort
		for p := range svc.Spec.Ports {
			svc.Spec.Ports[p].NodePort = int32(30000 + i*2 + p)
		}
		if c.rng.IntN(2) == 0 {
			svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
	case 1:
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: kptr.To(int32(60 + c.rng.IntN(2)))}}
	case 2:
		svc.Spec.ExternalIPs = []string{fmt.Sprintf("192.0.2.%d", i+1)}
	}
	return svc
}

func (c *churn) slice(i int) *discoveryv1.EndpointSlice {
	name := fmt.Sprintf("svc-%d", i)
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: kptr.To("http"), Port: kptr.To(int32(8080)), Protocol: kptr.To(corev1.ProtocolTCP)},
			{Name: kptr.To("dns"), Port: kptr.To(int32(5353)), Protocol: kptr.To(corev1.ProtocolUDP)}},
	}
	for range c.rng.IntN(6) {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{fmt.Sprintf("10.1.%d.%d", i, 1+c.rng.IntN(8))},
			Conditions: discoveryv1.EndpointConditions{Ready: kptr.To(c.rng.IntN(4) > 0),
				Serving: kptr.To(true), Terminating: kptr.To(c.rng.IntN(4) == 0)},
			NodeName: kptr.To([]string{"node-a", "node-b"}[c.rng.IntN(2)]),
		})
	}
	return es
}

// step changes one to three objects and returns the next Snapshot.
func (c *churn) step() *model.Snapshot {
	for range 1 + c.rng.IntN(3) {
		i := c.rng.IntN(24)
		switch c.rng.IntN(6) {
		case 0:
			c.services[i] = c.service(i)
		case 1:
			delete(c.services, i)
		default:
			c.slices[i] = c.slice(i)
		}
	}
	objs := &model.Objects{}
	for _, i := range slices.Sorted(mapKeys(c.services)) {
		objs.Services = append(objs.Services, c.services[i])
	}
	for _, i := range slices.Sorted(mapKeys(c.slices)) {
		objs.EndpointSlices = append(objs.EndpointSlices, c.slices[i])
	}
	snap := c.tr.Translate(objs, model.Node{Name: "node-a"})
	c.version++
	snap.Version = c.version
	return snap
}

func mapKeys[V any](m map[int]V) func(func(int) bool) {
	return func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// full is snap without its Delta: a data plane must compare everything.
func full(snap *model.Snapshot) *model.Snapshot {
	cp := *snap
	cp.Delta = nil
	return &cp
}

// TestDeltaSyncEqualsFull: Snapshots of a Translator under random changes (seeded),
// applied as deltas, leave exactly the tables a full sync of each Snapshot writes.
func TestDeltaSyncEqualsFull(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(8) {
		c := newChurn(seed)
		inc := newFixture(t, kernel.Options{})
		deltas := 0
		for step := range 60 {
			snap := c.step()
			if snap.DeltaFrom(inc.p.applied) != nil {
				deltas++
			}
			if err := inc.p.Sync(ctx, snap); err != nil {
				t.Fatal(err)
			}
			ref := newFixture(t, kernel.Options{})
			if err := ref.p.Sync(ctx, full(snap)); err != nil {
				t.Fatal(err)
			}
			for _, pair := range [][2]*countingFake{{inc.v4, ref.v4}, {inc.v6, ref.v6}} {
				if got, want := sortedDump(pair[0].Dump()), sortedDump(pair[1].Dump()); got != want {
					t.Fatalf("seed %d step %d: delta-synced tables differ from a full sync\n%s", seed, step, firstDifference(got, want))
				}
			}
		}
		if deltas < 55 {
			t.Fatalf("seed %d: only %d of 60 syncs used the delta", seed, deltas)
		}
	}
}

// TestDeltaSyncEqualsFullKernel is TestDeltaSyncEqualsFull against the real kernel:
// one Proxier applies the deltas in a namespace of its own, a new Proxier writes each
// Snapshot whole (the bulk path) in another, and `nft list table` of both must be the
// same after every step. Root only.
func TestDeltaSyncEqualsFullKernel(t *testing.T) {
	h := netnstest.New(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary")
	}
	incNS, refNS := h.NS("inc"), h.NS("ref")
	ctx := context.Background()
	newProxier := func(ns *netnstest.NS) *Proxier {
		t.Helper()
		var p *Proxier
		if err := ns.Do(func() (err error) {
			p, err = New(Options{Options: kernel.Options{DisableHealthCheck: true, IPFamilies: []kernel.Family{kernel.IPv4}}})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	list := func(ns *netnstest.NS) string {
		t.Helper()
		return normalizeRuleset(ns.MustRun("nft", "list", "table", "ip", tableName))
	}
	c := newChurn(42)
	inc := newProxier(incNS)
	for step := range 25 {
		snap := c.step()
		if step > 0 && snap.DeltaFrom(inc.applied) == nil {
			t.Fatalf("step %d: no delta against the applied Snapshot", step)
		}
		if err := incNS.Do(func() error { return inc.Sync(ctx, snap) }); err != nil {
			t.Fatal(err)
		}
		ref := newProxier(refNS)
		if err := refNS.Do(func() error { return ref.Sync(ctx, full(snap)) }); err != nil {
			t.Fatal(err)
		}
		ref.Close()
		if got, want := list(incNS), list(refNS); got != want {
			t.Fatalf("step %d: kernel tables differ:\n%s", step, firstDifference(got, want))
		}
		if !strings.Contains(list(incNS), "service-ips") {
			t.Fatalf("step %d: no weir table", step)
		}
	}
	inc.Close()
}
