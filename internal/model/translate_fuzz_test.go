package model

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// randomObjects builds a random Service with random slices from a seed: conditions
// (nil or set), nodes, zones, hints, duplicates, both families, traffic policies and
// topology settings.
func randomObjects(seed uint64) *Objects {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pick := func(n int) int { return rng.IntN(n) }
	optBool := func() *bool {
		switch pick(3) {
		case 0:
			return nil
		case 1:
			return ptr(true)
		}
		return ptr(false)
	}
	nodes := []string{"node-a", "node-b", "node-c"}
	zones := []string{"zone-a", "zone-b"}

	svc := service("web", withPorts(
		corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80},
		corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
	))
	switch pick(3) {
	case 0:
		withClusterIPs("10.96.0.10", "fd00::10")(svc)
	case 1:
		withClusterIPs("fd00::10")(svc)
	}
	if pick(2) == 0 {
		withType(corev1.ServiceTypeLoadBalancer)(svc)
	}
	if pick(3) == 0 {
		internalLocal(svc)
	}
	if pick(3) == 0 {
		externalLocal(svc)
	}
	switch pick(4) {
	case 0:
		distribution(corev1.ServiceTrafficDistributionPreferClose)(svc)
	case 1:
		distribution(corev1.ServiceTrafficDistributionPreferSameNode)(svc)
	case 2:
		annotate(corev1.AnnotationTopologyMode, "Auto")(svc)
	}

	objs := &Objects{Services: []*corev1.Service{svc}}
	for s := range pick(4) {
		v6 := pick(2) == 0
		var eps []discoveryv1.Endpoint
		for range pick(6) {
			addr := fmt.Sprintf("10.0.0.%d", pick(6))
			if v6 {
				addr = fmt.Sprintf("fd00:1::%d", pick(6))
			}
			e := discoveryv1.Endpoint{
				Addresses:  []string{addr},
				Conditions: discoveryv1.EndpointConditions{Ready: optBool(), Serving: optBool(), Terminating: optBool()},
			}
			if pick(5) > 0 {
				e.NodeName = &nodes[pick(len(nodes))]
			}
			if pick(4) > 0 {
				e.Hints = &discoveryv1.EndpointHints{}
				if pick(4) > 0 {
					e.Hints.ForZones = []discoveryv1.ForZone{{Name: zones[pick(len(zones))]}}
				}
				if pick(3) > 0 {
					e.Hints.ForNodes = []discoveryv1.ForNode{{Name: nodes[pick(len(nodes))]}}
				}
			}
			eps = append(eps, e)
		}
		ports := []discoveryv1.EndpointPort{slicePort("http", 8080)}
		if pick(2) == 0 {
			p := slicePort("dns", 5353)
			p.Protocol = ptr(corev1.ProtocolUDP)
			ports = append(ports, p)
		}
		sl := endpointSlice("web", fmt.Sprintf("web-%d", s), ports, eps...)
		sl.AddressType = discoveryv1.AddressTypeIPv4
		if v6 {
			sl.AddressType = discoveryv1.AddressTypeIPv6
		}
		objs.EndpointSlices = append(objs.EndpointSlices, sl)
	}
	return objs
}

// checkInvariants checks what every Snapshot must satisfy, whatever the input.
func checkInvariants(t *testing.T, snap *Snapshot) {
	t.Helper()
	for _, s := range snap.Services {
		for _, p := range s.Ports {
			for i := 1; i < len(p.Endpoints); i++ {
				a, b := p.Endpoints[i-1].AddrPort(), p.Endpoints[i].AddrPort()
				if a.Compare(b) >= 0 {
					t.Fatalf("%s: endpoints not sorted or not unique: %s, %s", p.ID(s.Key), a, b)
				}
			}
			for _, set := range []struct {
				name  string
				set   EndpointSet
				local bool
			}{{"cluster", p.Cluster, s.InternalTrafficLocal}, {"external", p.External, s.ExternalTrafficLocal}, {"short-circuit", p.ShortCircuit, false}} {
				checkSet(t, p.ID(s.Key)+" "+set.name, p.Endpoints, set.set, set.local)
			}
			// The short-circuit is policy Cluster's choice: External itself unless the
			// external policy is Local, and never a drop.
			if !s.ExternalTrafficLocal && !reflect.DeepEqual(p.ShortCircuit, p.External) {
				t.Fatalf("%s: short-circuit %v differs from external %v under policy Cluster", p.ID(s.Key), p.ShortCircuit, p.External)
			}
			if p.ShortCircuit.Verdict == Drop {
				t.Fatalf("%s: short-circuit drops", p.ID(s.Key))
			}
		}
	}
}

func checkSet(t *testing.T, what string, all []Endpoint, set EndpointSet, local bool) {
	t.Helper()
	if (set.Verdict == Forward) != (len(set.Endpoints) > 0) {
		t.Fatalf("%s: verdict %s with %d endpoints", what, set.Verdict, len(set.Endpoints))
	}
	for fam, ipv6 := range []bool{false, true} {
		sub := set.ForFamily(ipv6)
		var pool []Endpoint
		for _, e := range all {
			if e.Addr.Is6() == ipv6 && (!local || e.Local) {
				pool = append(pool, e)
			}
		}
		anyReady, anyUsable, anyUsableAnywhere := false, false, false
		for _, e := range pool {
			anyReady = anyReady || e.Ready
			anyUsable = anyUsable || e.Ready || (e.Serving && e.Terminating)
		}
		for _, e := range all {
			anyUsableAnywhere = anyUsableAnywhere || (e.Addr.Is6() == ipv6 && (e.Ready || (e.Serving && e.Terminating)))
		}
		for _, e := range sub.Endpoints {
			if e.Addr.Is6() != ipv6 {
				t.Fatalf("%s: family %d holds %s", what, fam, e.Addr)
			}
			if !e.Ready && !(e.Serving && e.Terminating) {
				t.Fatalf("%s: uses %s, neither ready nor serving-terminating", what, e.AddrPort())
			}
			if !e.Ready && anyReady {
				t.Fatalf("%s: falls back to %s while a ready endpoint exists", what, e.AddrPort())
			}
			if local && !e.Local {
				t.Fatalf("%s: Local policy uses remote %s", what, e.AddrPort())
			}
			found := false
			for _, a := range all {
				found = found || a == e
			}
			if !found {
				t.Fatalf("%s: %s is not among the port's endpoints", what, e.AddrPort())
			}
		}
		if anyUsable && len(sub.Endpoints) == 0 {
			t.Fatalf("%s: family %d has usable endpoints but chose none", what, fam)
		}
		switch want := sub.Verdict; {
		case len(sub.Endpoints) > 0 && want != Forward,
			len(sub.Endpoints) == 0 && !anyUsableAnywhere && want != Reject,
			len(sub.Endpoints) == 0 && anyUsableAnywhere && want != Drop:
			t.Fatalf("%s: family %d verdict %s (endpoints %d, usable anywhere %v)", what, fam, want, len(sub.Endpoints), anyUsableAnywhere)
		}
	}
}

// TestTranslateInvariants runs Translate over many random inputs and checks the
// invariants of endpoint choice, and that Translate is deterministic.
func TestTranslateInvariants(t *testing.T) {
	for seed := range uint64(2000) {
		objs := randomObjects(seed)
		snap := Translate(objs, thisNode)
		checkInvariants(t, snap)
		if again := Translate(objs, thisNode); !reflect.DeepEqual(snap, again) {
			t.Fatalf("seed %d: two Translates differ", seed)
		}
		if t.Failed() {
			t.Fatalf("seed %d", seed)
		}
	}
}

// FuzzTranslate explores more seeds: go test -fuzz FuzzTranslate ./internal/model/
func FuzzTranslate(f *testing.F) {
	for _, s := range []uint64{0, 1, 42, 1 << 40} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		checkInvariants(t, Translate(randomObjects(seed), thisNode))
	})
}
