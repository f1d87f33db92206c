package netpol

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"weir.dev/weir/internal/model"
)

// TestPacketCost measures the per-packet cost of enforcement as netperf's TCP_RR (one
// byte back and forth on one connection) and TCP_CRR (a connection per exchange, so
// every first packet goes through the policy chains) from x/a to x/b: without the table,
// with the table and no policy, and with both pods isolated by policies that allow the
// traffic after ten that do not, in alternating one-second runs. It runs only with
// WEIR_NETPOL_SCALE=1.
func TestPacketCost(t *testing.T) {
	if os.Getenv("WEIR_NETPOL_SCALE") == "" {
		t.Skip("set WEIR_NETPOL_SCALE=1 to measure")
	}
	w := newWorld(t)
	src, dst := w.pods[0], w.pods[1] // x/a, x/b
	var ln net.Listener
	if err := dst.ns.Do(func() (err error) { ln, err = net.Listen("tcp4", dst.ip.String()+":7000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	port := intstr.FromInt32(7000)
	policies := []*networkingv1.NetworkPolicy{
		np("x", "b-from-a", networkingv1.NetworkPolicySpec{PodSelector: *lsel("pod", "b"), Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: lsel("pod", "a")}}, Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}}}),
		np("x", "a-to-b", networkingv1.NetworkPolicySpec{PodSelector: *lsel("pod", "a"), PolicyTypes: types(out), Egress: []networkingv1.NetworkPolicyEgressRule{{
			To: []networkingv1.NetworkPolicyPeer{{PodSelector: lsel("pod", "b")}}, Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}}}),
	}
	// Ten more policies per pod that allow nothing the probe sends: the allowing one
	// is tried after them.
	for i := range 10 {
		other := intstr.FromInt32(int32(8000 + i))
		policies = append(policies, np("x", fmt.Sprintf("other-%d", i), networkingv1.NetworkPolicySpec{PolicyTypes: types(in, out),
			Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &other}}}},
			Egress:  []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &other}}}}}))
	}
	withPolicies := model.Translate(w.objects(scenario{policies: policies}), model.Node{Name: "node"})
	without := model.Translate(w.objects(scenario{}), model.Node{Name: "node"})
	// state 0: no table (and so no conntrack in the node's namespace); 1: the table
	// without policies (conntrack on, as on any node with a kube-proxy); 2: policies.
	apply := func(state int) {
		err := w.node.Do(func() error {
			switch state {
			case 0:
				return w.enforcer.Cleanup(context.Background())
			case 1:
				return w.enforcer.Sync(context.Background(), without)
			}
			return w.enforcer.Sync(context.Background(), withPolicies)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	addr := dst.ip.String() + ":7000"
	rr := func(d time.Duration) (n int) {
		_ = src.ns.Do(func() error {
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			b := []byte{1}
			for end := time.Now().Add(d); time.Now().Before(end); n++ {
				if _, err := c.Write(b); err != nil {
					return err
				}
				if _, err := io.ReadFull(c, b); err != nil {
					return err
				}
			}
			return nil
		})
		return n
	}
	crr := func(d time.Duration) (n int) {
		_ = src.ns.Do(func() error {
			b := []byte{1}
			for end := time.Now().Add(d); time.Now().Before(end); n++ {
				c, err := net.Dial("tcp4", addr)
				if err != nil {
					return err
				}
				_, _ = c.Write(b)
				_, err = io.ReadFull(c, b)
				c.Close()
				if err != nil {
					return err
				}
			}
			return nil
		})
		return n
	}
	for _, m := range []struct {
		name string
		f    func(time.Duration) int
	}{{"TCP_RR", rr}, {"TCP_CRR", crr}} {
		var rate [3]int
		for range 5 {
			for state := range 3 {
				apply(state)
				rate[state] += m.f(time.Second)
			}
		}
		t.Logf("%s: %d/s without the table, %d/s with the table and no policy, %d/s with both pods isolated (%+.1f %% against no policy)",
			m.name, rate[0]/5, rate[1]/5, rate[2]/5, 100*float64(rate[2]-rate[1])/float64(rate[1]))
	}
}
