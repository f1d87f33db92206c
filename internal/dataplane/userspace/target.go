package userspace

import (
	"net/netip"
	"time"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

// maxAttempts bounds the endpoints one new TCP connection tries before the client
// sees its connection reset.
const maxAttempts = 3

// Defaults for Policy fields left zero (Translate normally fills them).
const (
	defaultConnectTimeout = 5 * time.Second
	defaultIdleTimeout    = time.Hour
	defaultUDPIdleTimeout = 30 * time.Second
	defaultDrainTimeout   = 30 * time.Second
)

// backend is one endpoint a target can forward to.
type backend struct {
	addr netip.AddrPort
	load *balance.Load
}

// target is where one frontend's new connections go: an immutable value that Sync and
// health changes replace atomically.
type target struct {
	servicePort string
	verdict     model.Verdict
	backends    []backend
	bal         []balance.Backend // parallel to backends, what picker indexes
	picker      balance.Picker
	keyOn       keyOn
	affinity    *balance.Affinity // nil without session affinity
	health      *health.Overlay   // nil without health

	connectTimeout time.Duration
	idleTimeout    time.Duration
	udpIdleTimeout time.Duration
}

type keyOn uint8

const (
	keyNone keyOn = iota
	keySource
	keyDestination
)

// has reports whether addr is one of the target's backends.
func (t *target) has(addr netip.AddrPort) bool {
	for i := range t.backends {
		if t.backends[i].addr == addr {
			return true
		}
	}
	return false
}

// first chooses the first backend to try for a client: its sticky backend when it has
// one, else the picker's choice. It returns -1 when there is no backend.
func (t *target) first(client netip.AddrPort, frontend netip.AddrPort, now time.Time) int {
	if len(t.backends) == 0 {
		return -1
	}
	if t.affinity != nil {
		if id, ok := t.affinity.Lookup(client.Addr(), now); ok {
			if i := balance.Find(t.bal, id); i >= 0 {
				return i
			}
		}
	}
	var key uint64
	switch t.keyOn {
	case keySource:
		key = balance.HashAddr(client.Addr())
	case keyDestination:
		key = balance.HashAddr(frontend.Addr())
	}
	i := t.picker.Pick(key)
	if i < 0 || i >= len(t.backends) {
		i = 0
	}
	return i
}

// chosen records that client was sent to backend i.
func (t *target) chosen(client netip.AddrPort, i int, now time.Time) {
	if t.affinity != nil {
		t.affinity.Remember(client.Addr(), t.bal[i].ID, now)
	}
}

func (t *target) failed(i int) {
	if t.health != nil {
		t.health.ReportFailure(t.servicePort, t.backends[i].addr, health.ConnectFailure)
	}
}

func (t *target) succeeded(i int) {
	if t.health != nil {
		t.health.ReportSuccess(t.servicePort, t.backends[i].addr)
	}
}
