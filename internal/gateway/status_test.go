package gateway

import (
	"context"
	"net"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weir.dev/weir/internal/model"
)

// TestListenerBindFailureNotProgrammed: a Gateway listener whose address is taken is
// reported (ListenerErrors) and made Programmed=False in the served Snapshot (Served,
// what the admin API shows), the Gateway too when
// none of its listeners is served; once the address is free a Sync binds it and the
// model's status stands again.
func TestListenerBindFailureNotProgrammed(t *testing.T) {
	forEdgeTransport(t, func(t *testing.T, opts Options) {
		a := startEcho(t, "a")
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		busyAddr, freeA := busy.Addr().String(), freeAddr(t)
		programmed := []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"}, {Type: "Programmed", Status: metav1.ConditionTrue, Reason: "Programmed"}}
		cfg := func(addrs ...string) *model.GatewayConfig {
			c := &model.GatewayConfig{}
			st := model.ObjectStatus{Kind: "Gateway", Namespace: "default", Name: "gw", Conditions: programmed}
			for i, addr := range addrs {
				name := []string{"one", "two"}[i]
				c.Listeners = append(c.Listeners, &model.Listener{Address: addr, Protocol: model.ProtocolHTTP, Sections: []*model.Section{{Name: "default/gw/" + name,
					Hosts: []*model.VirtualHost{{Matches: []*model.RouteMatch{prefixRule(name, "/", backend("a", 1, a))}}}}}})
				st.Listeners = append(st.Listeners, model.ListenerStatus{Name: name, Conditions: programmed})
			}
			c.Status = []model.ObjectStatus{st}
			return c
		}
		g, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
		check := func(c *model.GatewayConfig, wantErr bool, want map[string]metav1.ConditionStatus) {
			t.Helper()
			if err := g.Sync(context.Background(), &model.Snapshot{Gateway: c}); (err != nil) != wantErr {
				t.Fatalf("Sync error %v, want one: %v", err, wantErr)
			}
			errs := g.ListenerErrors()
			if _, failed := errs[busyAddr]; failed != wantErr || len(errs) > 1 {
				t.Fatalf("ListenerErrors %v", errs)
			}
			st := g.Served(&model.Snapshot{Gateway: c}).Gateway.Status[0]
			for who, w := range want {
				conds := st.Conditions
				if who != "gateway" {
					for _, l := range st.Listeners {
						if l.Name == who {
							conds = l.Conditions
						}
					}
				}
				got := findCondition(conds, "Programmed")
				if got == nil || got.Status != w {
					t.Errorf("%s Programmed %+v, want %s", who, got, w)
				}
			}
			if c.Status[0].Listeners[0].Conditions[1].Status != metav1.ConditionTrue {
				t.Fatal("Status modified the model's statuses")
			}
		}
		check(cfg(busyAddr, freeA), true, map[string]metav1.ConditionStatus{"one": "False", "two": "True", "gateway": "True"})
		check(cfg(busyAddr), true, map[string]metav1.ConditionStatus{"one": "False", "gateway": "False"})
		_ = busy.Close()
		check(cfg(busyAddr), false, map[string]metav1.ConditionStatus{"one": "True", "gateway": "True"})
	})
}
