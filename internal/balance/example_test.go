package balance_test

import (
	"fmt"
	"net/netip"
	"time"

	"weir.dev/weir/internal/balance"
)

func ExampleNew() {
	addrs := []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"}
	backends := make([]balance.Backend, len(addrs))
	for i, a := range addrs {
		backends[i] = balance.Backend{ID: balance.KeyOf(netip.MustParseAddrPort(a)), Weight: 1, Load: new(balance.Load)}
	}
	p, err := balance.New(balance.Maglev, backends, balance.Options{Seed: 42})
	if err != nil {
		panic(err)
	}
	client := netip.MustParseAddr("192.0.2.7")
	i := p.Pick(balance.HashAddr(client))
	// The same client always lands on the same backend, on every instance with seed 42.
	fmt.Println(i == p.Pick(balance.HashAddr(client)))
	// Output: true
}

func ExampleLoad() {
	var l balance.Load
	l.Begin() // request sent upstream
	// … response headers arrive after 12 ms …
	l.EndWithLatency(12 * time.Millisecond)
	fmt.Println(l.Active(), l.Latency(time.Now()).Round(time.Millisecond))
	// Output: 0 12ms
}

func ExampleAffinity() {
	backends := []balance.Backend{{ID: 1}, {ID: 2}, {ID: 3}}
	picker, _ := balance.New(balance.RoundRobin, backends, balance.Options{RandSeed: 1})
	aff := balance.NewAffinity(0) // kube-proxy's default, 10800 s
	client := netip.MustParseAddr("192.0.2.7")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	pick := func(now time.Time) uint64 {
		i := -1
		if id, ok := aff.Lookup(client, now); ok {
			i = balance.Find(backends, id)
		}
		if i < 0 {
			i = picker.Pick(0)
		}
		aff.Remember(client, backends[i].ID, now)
		return backends[i].ID
	}
	first := pick(now)
	fmt.Println(pick(now.Add(time.Hour)) == first)   // sticky
	aff.Forget(first)                                // the backend starts terminating
	fmt.Println(pick(now.Add(2*time.Hour)) == first) // moved at once
	fmt.Println(pick(now.Add(6*time.Hour)) != first) // expired after 3 h idle: picked afresh (round robin moves on)
	// Output:
	// true
	// false
	// true
}
