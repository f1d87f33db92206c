package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

// nullNFT accepts every transaction and keeps nothing: it measures weir's own work.
type nullNFT struct {
	*knftables.Fake
	ops int
}

func (n *nullNFT) Run(_ context.Context, tx *knftables.Transaction) error {
	n.ops = tx.NumOperations()
	_ = tx.String() // the text knftables would pipe to nft
	return nil
}

// discardScripts is a bulkRunner that drops the script: weir's side of a bulk write.
type discardScripts struct{}

func (discardScripts) start(context.Context, string) (scriptStream, error) {
	return discardStream{}, nil
}

type discardStream struct{}

func (discardStream) Write(b []byte) (int, error) { return len(b), nil }
func (discardStream) commit() error               { return nil }
func (discardStream) abort() error                { return nil }

func scaleServices(n, e, gen int) []*model.Service {
	svcs := make([]*model.Service, n)
	for i := range svcs {
		eps := make([]model.Endpoint, e)
		for j := range eps {
			k := i*e + j
			if i == n/2 && j == 0 {
				k = n*e + gen
			}
			eps[j] = model.Endpoint{Addr: netip.AddrFrom4([4]byte{10, byte(128 + k/65536), byte(k / 256 % 256), byte(k % 256)}), Port: 8080, NodeName: "other", Weight: 1}
		}
		set := flowtest.Forward(eps...)
		svcs[i] = &model.Service{
			Key:        model.ServiceKey{Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i)},
			Type:       model.ClusterIP,
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(96 + i/65536), byte(i / 256 % 256), byte(i % 256)})},
			Policy:     &model.Policy{},
			Ports:      []*model.ServicePort{{Protocol: model.TCP, Port: 80, Cluster: set, External: set}},
		}
	}
	return svcs
}

func newNullProxier(tb testing.TB) (*Proxier, *nullNFT) {
	nft := &nullNFT{Fake: knftables.NewFake(knftables.IPv4Family, tableName)}
	p, err := New(Options{Options: kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}, DisableHealthCheck: true, Conntrack: &flowtest.RecordingConntrack{}}, NFTables: map[kernel.Family]knftables.Interface{kernel.IPv4: nft}})
	if err != nil {
		tb.Fatal(err)
	}
	return p, nft
}

// TestOneChangeAt10k checks that one endpoint change among 10,000 Services writes a
// handful of operations, and that an unchanged Snapshot writes nothing.
func TestOneChangeAt10k(t *testing.T) {
	if testing.Short() {
		t.Skip("large")
	}
	p, nft := newNullProxier(t)
	ctx := context.Background()
	if err := p.Sync(ctx, &model.Snapshot{Services: scaleServices(10000, 10, 0)}); err != nil {
		t.Fatal(err)
	}
	if nft.ops < 10000*12 {
		t.Fatalf("full sync wrote %d operations", nft.ops)
	}
	nft.ops = 0
	if err := p.Sync(ctx, &model.Snapshot{Services: scaleServices(10000, 10, 0)}); err != nil {
		t.Fatal(err)
	}
	if nft.ops != 0 {
		t.Fatalf("unchanged sync wrote %d operations", nft.ops)
	}
	if err := p.Sync(ctx, &model.Snapshot{Services: scaleServices(10000, 10, 1)}); err != nil {
		t.Fatal(err)
	}
	if nft.ops == 0 || nft.ops > 12 {
		t.Fatalf("one endpoint change wrote %d operations", nft.ops)
	}
}

// BenchmarkSync measures weir's side of a sync (building and writing the transaction
// text, not nft itself) at 10,000 Services × 10 endpoints: full through knftables
// (what tests and injected interfaces use), full-bulk (the real first sync), and a
// one-endpoint change.
func BenchmarkSync(b *testing.B) {
	full := scaleServices(10000, 10, 0)
	b.Run("full", func(b *testing.B) {
		for b.Loop() {
			p, _ := newNullProxier(b)
			if err := p.Sync(context.Background(), &model.Snapshot{Services: full}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("full-bulk", func(b *testing.B) {
		for b.Loop() {
			p, _ := newNullProxier(b)
			p.tables[0].bulk = discardScripts{}
			if err := p.Sync(context.Background(), &model.Snapshot{Services: full}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-change", func(b *testing.B) {
		p, _ := newNullProxier(b)
		if err := p.Sync(context.Background(), &model.Snapshot{Services: full}); err != nil {
			b.Fatal(err)
		}
		snaps := [][]*model.Service{scaleServices(10000, 10, 1), full}
		i := 0
		for b.Loop() {
			if err := p.Sync(context.Background(), &model.Snapshot{Services: snaps[i%2]}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
