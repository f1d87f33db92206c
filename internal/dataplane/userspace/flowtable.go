package userspace

import (
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// Bounds of the UDP flow table, when Options leave them zero.
const (
	defaultMaxUDPFlows          = 16384
	defaultMaxUDPFlowsPerSource = 256
	defaultReservedFDs          = 1024
	// minReleasePeak is the table size below which a shrinking table is not worth a
	// forced return of memory to the operating system.
	minReleasePeak = 1024
)

// flowKey is one client of one UDP frontend.
type flowKey struct {
	l      *listener
	client netip.AddrPort
}

// flowList is an intrusive doubly linked list of flows, most recently used first. A
// flow is on two lists: the table's (all flows) and its source address's.
type flowList struct {
	head, tail *flow
	n          int
}

// link is a flow's place on one list.
type link struct{ prev, next *flow }

func (fl *flowList) pushFront(f *flow, lk func(*flow) *link) {
	l := lk(f)
	l.prev, l.next = nil, fl.head
	if fl.head != nil {
		lk(fl.head).prev = f
	}
	fl.head = f
	if fl.tail == nil {
		fl.tail = f
	}
	fl.n++
}

func (fl *flowList) remove(f *flow, lk func(*flow) *link) {
	l := lk(f)
	if l.prev != nil {
		lk(l.prev).next = l.next
	} else {
		fl.head = l.next
	}
	if l.next != nil {
		lk(l.next).prev = l.prev
	} else {
		fl.tail = l.prev
	}
	l.prev, l.next = nil, nil
	fl.n--
}

func (fl *flowList) moveToFront(f *flow, lk func(*flow) *link) {
	if fl.head == f {
		return
	}
	fl.remove(f, lk)
	fl.pushFront(f, lk)
}

func allLink(f *flow) *link    { return &f.all }
func sourceLink(f *flow) *link { return &f.src }

// flowTable holds every UDP flow of a Proxy, bounded three ways: at most max flows
// (least recently used evicted first), at most perSource flows per client address (its
// own least recently used evicted first), and never so many that fewer than the
// reserved descriptors remain for listeners, TCP connections and the admin API.
type flowTable struct {
	max, perSource int

	mu      sync.Mutex
	flows   map[flowKey]*flow
	all     flowList
	sources map[netip.Addr]*flowList
	peak    int // most flows since memory was last released
}

// newFlowTable bounds the table by limit, perSource and the process's descriptor limit
// less reserve.
func newFlowTable(limit, perSource, reserve int) *flowTable {
	if limit <= 0 {
		limit = defaultMaxUDPFlows
	}
	if perSource <= 0 {
		perSource = defaultMaxUDPFlowsPerSource
	}
	if reserve <= 0 {
		reserve = defaultReservedFDs
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Cur != unix.RLIM_INFINITY {
		limit = min(limit, max(int(lim.Cur)-reserve, 1))
	}
	return &flowTable{
		max: limit, perSource: min(perSource, limit),
		flows: map[flowKey]*flow{}, sources: map[netip.Addr]*flowList{},
	}
}

// get returns the flow of k and marks it used, or nil.
func (t *flowTable) get(k flowKey) *flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flows[k]
	if f != nil {
		t.all.moveToFront(f, allLink)
		t.sources[k.client.Addr()].moveToFront(f, sourceLink)
	}
	return f
}

// add inserts f and returns the flows evicted to make room, for the caller to end
// outside the lock, and the reason (evictLRU or evictPerSource) of each.
func (t *flowTable) add(f *flow) (evicted []*flow, reasons []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := flowKey{f.l, f.client}
	src := t.sources[k.client.Addr()]
	if src == nil {
		src = &flowList{}
		t.sources[k.client.Addr()] = src
	}
	for src.n >= t.perSource {
		old := src.tail
		t.removeLocked(old)
		evicted, reasons = append(evicted, old), append(reasons, evictPerSource)
	}
	for t.all.n >= t.max {
		old := t.all.tail
		t.removeLocked(old)
		evicted, reasons = append(evicted, old), append(reasons, evictLRU)
	}
	if t.sources[k.client.Addr()] == nil { // removeLocked dropped the emptied list
		t.sources[k.client.Addr()] = src
	}
	t.flows[k] = f
	t.all.pushFront(f, allLink)
	src.pushFront(f, sourceLink)
	f.inTable = true
	t.peak = max(t.peak, t.all.n)
	return evicted, reasons
}

// remove takes f out of the table if it is there.
func (t *flowTable) remove(f *flow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.inTable {
		t.removeLocked(f)
	}
}

func (t *flowTable) removeLocked(f *flow) {
	k := flowKey{f.l, f.client}
	delete(t.flows, k)
	t.all.remove(f, allLink)
	if src := t.sources[k.client.Addr()]; src != nil {
		src.remove(f, sourceLink)
		if src.n == 0 {
			delete(t.sources, k.client.Addr())
		}
	}
	f.inTable = false
}

// of lists the flows of listener l for which keep returns true.
func (t *flowTable) of(l *listener, keep func(*flow) bool) []*flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*flow
	for f := t.all.head; f != nil; f = f.all.next {
		if f.l == l && keep(f) {
			out = append(out, f)
		}
	}
	return out
}

// len is the number of flows.
func (t *flowTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.all.n
}

// shrunk reports whether the table fell to a quarter of a peak worth releasing memory
// for. It then rebuilds its maps at their present size (Go maps do not shrink) and
// starts a new peak, so the caller releases memory once per flood.
func (t *flowTable) shrunk() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.peak < minReleasePeak || t.all.n > t.peak/4 {
		return false
	}
	flows := make(map[flowKey]*flow, len(t.flows))
	for k, f := range t.flows {
		flows[k] = f
	}
	sources := make(map[netip.Addr]*flowList, len(t.sources))
	for a, s := range t.sources {
		sources[a] = s
	}
	t.flows, t.sources, t.peak = flows, sources, t.all.n
	return true
}

// Reasons a flow is evicted before its idle timeout.
const (
	evictLRU       = "lru"
	evictPerSource = "per-source"
)

// oldest is the least recently used flow, or nil.
func (t *flowTable) oldest() *flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.all.tail
}
