package dataplane_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane/ipvs"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/netnstest"
)

// needIPVS skips the test where the kernel has no IP_VS (test/vm/run.sh runs these tests
// in a virtual machine whose kernel has it); inside that machine (WEIR_VM=1) a missing
// IP_VS fails instead.
func needIPVS(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		if os.Getenv("WEIR_VM") != "" {
			t.Fatalf("IP_VS missing in the test VM: %v", err)
		}
		t.Skip("the kernel has no IP_VS: test/vm/run.sh runs this test in a virtual machine")
	}
}

func ipvsDump(ns *netnstest.NS) string {
	return ns.MustRun("nft", "list", "ruleset") + ns.MustRun("ipvsadm", "-Ln") + ns.MustRun("ip", "-br", "link")
}

func TestIPVS(t *testing.T) {
	needIPVS(t)
	runSuiteWith(t, func() (mode, error) {
		return ipvs.New(ipvs.Options{})
	}, ipvsDump, suiteOptions{affinityOutlivesConnections: true})
}

func TestIPVSKubeProxySettings(t *testing.T) {
	needIPVS(t)
	runKubeProxySuite(t, false, func(p model.ProxyConfig) (mode, error) {
		return ipvs.New(ipvs.Options{Options: kernel.Options{Proxy: p}})
	})
}

// TestIPVSSchedulers checks each TrafficPolicy algorithm's IPVS scheduler by the
// distribution of sequential connections from one client over three backends.
func TestIPVSSchedulers(t *testing.T) {
	needIPVS(t)
	tp := newTopology(t, 3)
	tp.start(func() (mode, error) { return ipvs.New(ipvs.Options{}) })
	eps := []model.Endpoint{endpoint(0, 8080, false), endpoint(1, 8080, false), endpoint(2, 8080, false)}
	cases := []struct {
		alg     balance.Algorithm
		sched   string
		weights []uint32
		check   func(counts map[string]int, order []string) error
	}{
		{balance.RoundRobin, "rr", nil, func(c map[string]int, order []string) error {
			for i := 3; i < len(order); i++ {
				if order[i] != order[i-3] {
					return fmt.Errorf("not a cycle of three: %v", order)
				}
			}
			return exactly(c, map[string]int{"b0": 10, "b1": 10, "b2": 10})
		}},
		{balance.WeightedRoundRobin, "wrr", []uint32{3, 2, 1}, func(c map[string]int, _ []string) error {
			return exactly(c, map[string]int{"b0": 15, "b1": 10, "b2": 5})
		}},
		// Sequential connections that ended: the least-connection schedulers spread them
		// over every backend (closed connections still count as inactive).
		{balance.LeastConnections, "lc", nil, spread},
		{balance.WeightedLeastConnections, "wlc", nil, spread},
		// Hashes of the source (one client) or the destination (one address): one backend.
		{balance.SourceHash, "sh", nil, oneBackend},
		{balance.DestinationHash, "dh", nil, oneBackend},
		{balance.Maglev, "mh", nil, oneBackend},
	}
	for i, c := range cases {
		t.Run(string(c.alg), func(t *testing.T) {
			svcEps := slices.Clone(eps)
			for j, w := range c.weights {
				svcEps[j].Weight = w
			}
			vip := fmt.Sprintf("10.96.2.%d", i+1)
			svc := service("sched-"+strings.ToLower(string(c.alg)), vip, model.TCP, 80, svcEps...)
			svc.Policy = &model.Policy{Source: "e2e/policy", Algorithm: c.alg}
			tp.sync(svc)
			if out := tp.node.MustRun("ipvsadm", "-Ln", "-t", vip+":80"); !strings.Contains(out, vip+":80 "+c.sched) {
				t.Errorf("ipvsadm shows no %s scheduler:\n%s", c.sched, out)
			}
			counts := map[string]int{}
			var order []string
			for range 30 {
				name, err := tp.ask(vip+":80", time.Second)
				if err != nil {
					t.Fatal(err)
				}
				counts[name]++
				order = append(order, name)
			}
			if err := c.check(counts, order); err != nil {
				t.Errorf("%s: %v (counts %v)", c.sched, err, counts)
			}
			t.Logf("%s: %v", c.sched, counts)
		})
	}
}

func exactly(got, want map[string]int) error {
	for k, v := range want {
		if got[k] != v {
			return fmt.Errorf("want %v", want)
		}
	}
	return nil
}

func spread(c map[string]int, _ []string) error {
	if len(c) != 3 {
		return fmt.Errorf("reached %d backends, want 3", len(c))
	}
	return nil
}

func oneBackend(c map[string]int, _ []string) error {
	if len(c) != 1 {
		return fmt.Errorf("one client reached %d backends, want 1", len(c))
	}
	return nil
}

// TestIPVSPersistence: ClientIP affinity is IPVS persistence with the Service's timeout.
func TestIPVSPersistence(t *testing.T) {
	needIPVS(t)
	tp := newTopology(t, 3)
	tp.start(func() (mode, error) { return ipvs.New(ipvs.Options{}) })
	svc := service("sticky", "10.96.3.1", model.TCP, 80, endpoint(0, 8080, false), endpoint(1, 8080, false), endpoint(2, 8080, false))
	svc.AffinityTimeout = 10800 * time.Second
	tp.sync(svc)
	out := tp.node.MustRun("ipvsadm", "-Ln", "-t", "10.96.3.1:80")
	if !strings.Contains(out, "persistent 10800") {
		t.Errorf("virtual server not persistent for 10800 s:\n%s", out)
	}
	first, err := tp.ask("10.96.3.1:80", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		name, err := tp.ask("10.96.3.1:80", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if name != first {
			t.Fatalf("connection %d went to %s, persistence said %s", i, name, first)
		}
	}
	// Without affinity the same client is spread again.
	svc2 := *svc
	svc2.AffinityTimeout = 0
	tp.sync(&svc2)
	if out := tp.node.MustRun("ipvsadm", "-Ln", "-t", "10.96.3.1:80"); strings.Contains(out, "persistent") {
		t.Errorf("still persistent after affinity was removed:\n%s", out)
	}
}

// TestIPVSDraining: an endpoint that leaves (or terminates) stays a real server of
// weight 0 while it has connections: they keep working, new ones go elsewhere.
func TestIPVSDraining(t *testing.T) {
	needIPVS(t)
	tp := newTopology(t, 2)
	var dp *ipvs.Proxier
	tp.start(func() (mode, error) {
		p, err := ipvs.New(ipvs.Options{})
		dp = p
		return p, err
	})
	const vip = "10.96.4.1:80"
	tp.sync(service("drain", "10.96.4.1", model.TCP, 80, endpoint(0, 8080, false), endpoint(1, 8080, false)))

	// A long connection to b0.
	var conn net.Conn
	var br *bufio.Reader
	for range 10 {
		if err := tp.client.Do(func() error {
			c, err := net.DialTimeout("tcp", vip, time.Second)
			if err != nil {
				return err
			}
			r := bufio.NewReader(c)
			line, err := r.ReadString('\n')
			if err != nil {
				c.Close()
				return err
			}
			if strings.TrimSpace(line) == "b0" {
				conn, br = c, r
			} else {
				c.Close()
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if conn != nil {
			break
		}
	}
	if conn == nil {
		t.Fatal("no connection reached b0")
	}
	defer conn.Close()

	// b0 leaves the Service.
	tp.sync(service("drain", "10.96.4.1", model.TCP, 80, endpoint(1, 8080, false)))
	out := tp.node.MustRun("ipvsadm", "-Ln", "-t", vip)
	if !strings.Contains(out, backendIP(0)+":8080") || !regexpWeight0(out, backendIP(0)) {
		t.Errorf("b0 is not kept at weight 0 while its connection lasts:\n%s", out)
	}
	if d := dp.Draining(); len(d) != 1 {
		t.Errorf("draining = %v, want b0", d)
	}
	for range 10 {
		if name, err := tp.ask(vip, time.Second); err != nil || name != "b1" {
			t.Fatalf("a new connection reached %q (%v), want b1", name, err)
		}
	}
	// The old connection still works.
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("still there\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "still there\n" {
		t.Fatalf("draining connection echoed %q, %v", line, err)
	}
	// b0 comes back: weight 1 again, no longer draining.
	tp.sync(service("drain", "10.96.4.1", model.TCP, 80, endpoint(0, 8080, false), endpoint(1, 8080, false)))
	if d := dp.Draining(); len(d) != 0 {
		t.Errorf("draining after b0 came back = %v", d)
	}
}

// regexpWeight0 reports whether ipvsadm's line for real server ip shows weight 0.
func regexpWeight0(out, ip string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "->" && strings.HasPrefix(f[1], ip+":") {
			return f[3] == "0"
		}
	}
	return false
}
