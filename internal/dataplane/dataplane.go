// Package dataplane defines what every data plane (userspace, iptables, nftables, eBPF)
// offers the sync runner. Data planes never import each other.
package dataplane

import (
	"context"

	"weir.dev/weir/internal/model"
)

// Dataplane programs forwarding from Snapshots.
type Dataplane interface {
	// Name is the mode's name: "userspace", "iptables", "nftables" or "ebpf".
	Name() string
	// Sync makes the data plane forward as snap says. It is idempotent, diffs against
	// what it programmed last and changes only what changed. An error leaves the data
	// plane forwarding as before wherever it could not apply the change.
	Sync(ctx context.Context, snap *model.Snapshot) error
}
