package userspace

import (
	"container/heap"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// An eventLoop serves TCP frontends and their connections on raw, non-blocking file
// descriptors with one epoll instance and one goroutine, the way HAProxy does: no
// goroutine per connection, no park and wake-up per blocking step, and none of the net
// package's per-connection getsockname/getpeername/SO_ERROR calls or read-until-EAGAIN.
// The Proxy runs one loop per P (at most maxLoops); every loop waits on every TCP
// listening socket and owns the connections it accepted.
//
// Every descriptor is registered edge-triggered for input, output and peer shutdown.
// Readiness is remembered per side (readable, writable) and cleared by EAGAIN, or by a
// read shorter than the buffer: any later data or FIN is a new edge, so a short read
// needs no second read to confirm that the socket is drained.
type eventLoop struct {
	p      *Proxy
	epfd   int
	wakefd int // eventfd: commands are waiting
	// epoll is epfd in the Go runtime's netpoller: the loop parks on it (readable:
	// events are waiting) instead of blocking its thread in epoll_wait, which would
	// make the runtime hand its P to another thread and spin one up.
	epoll    *os.File
	raw      syscall.RawConn
	deadline time.Time // epoll's read deadline, the next due connection

	mu      sync.Mutex
	cmds    []func()
	exited  bool
	stopped bool // set by a stop command; the loop exits after this iteration

	// Loop-owned state.
	slots   []slot // by file descriptor
	gen     uint32
	events  []unix.EpollEvent
	scratch []byte   // read buffer shared by all connections of the loop
	timers  connHeap // connections by due time
	conns   map[*tcpConn]struct{}
	retry   []*listener // listeners whose accept failed for lack of resources
	retryAt time.Duration
	base    time.Time
	now     time.Duration // since base, updated once per wake-up
}

// slot is what a registered descriptor belongs to; gen tells a stale event (for a
// descriptor closed and reused within one batch) from a current one.
type slot struct {
	h   eventHandler
	gen uint32
}

type eventHandler interface {
	ready(lp *eventLoop, events uint32)
}

const (
	// maxLoops caps the event loops (one per P up to this). Every loop waits on every
	// listening socket and, parked in the runtime's poller, each is woken by a new
	// connection (EPOLLEXCLUSIVE only applies to threads blocked in epoll_wait): the
	// losers' accept4 finds nothing, a cost that grows with the number of loops.
	maxLoops   = 8
	maxEvents  = 128
	edgeEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	// acceptBatch bounds the connections one loop accepts per wake-up, so that a
	// burst does not starve the connections it already serves.
	acceptBatch = 64
	// acceptRetry is how long a listener waits after an accept failed for lack of
	// descriptors or memory (as net/http backs off).
	acceptRetry = 50 * time.Millisecond
)

func newEventLoop(p *Proxy) (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("userspace: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("userspace: eventfd: %w", err)
	}
	lp := &eventLoop{
		p: p, epfd: epfd, wakefd: wakefd,
		events:  make([]unix.EpollEvent, maxEvents),
		scratch: make([]byte, copyBufferSize),
		conns:   map[*tcpConn]struct{}{},
		base:    time.Now(),
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("userspace: epoll_ctl eventfd: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("userspace: epoll fd: %w", err)
	}
	lp.epoll = os.NewFile(uintptr(epfd), "epoll") // non-blocking: polled by the runtime
	raw, err := lp.epoll.SyscallConn()
	if err != nil {
		lp.close()
		return nil, fmt.Errorf("userspace: epoll fd: %w", err)
	}
	lp.raw = raw
	return lp, nil
}

// do runs fn on the loop's goroutine, soon. It reports false, without running fn, when
// the loop has exited.
func (lp *eventLoop) do(fn func()) bool {
	lp.mu.Lock()
	if lp.exited {
		lp.mu.Unlock()
		return false
	}
	if len(lp.cmds) == 0 {
		// Under mu: once exited is set the eventfd may be closed and its number reused.
		one := [8]byte{1}
		_, _ = unix.Write(lp.wakefd, one[:])
	}
	lp.cmds = append(lp.cmds, fn)
	lp.mu.Unlock()
	return true
}

// stop makes the loop close every connection it still has and exit.
func (lp *eventLoop) stop() {
	lp.do(func() { lp.stopped = true })
}

// run serves events until a stop command.
func (lp *eventLoop) run() {
	defer lp.exit()
	for {
		n, err := lp.wait()
		lp.now = time.Since(lp.base)
		if err != nil {
			lp.p.log.Error("epoll_wait", "err", err)
			return
		}
		for i := range n {
			ev := &lp.events[i]
			fd := int(ev.Fd)
			if fd == lp.wakefd {
				lp.commands()
				continue
			}
			if fd < len(lp.slots) {
				if s := lp.slots[fd]; s.h != nil && s.gen == uint32(ev.Pad) {
					s.h.ready(lp, ev.Events)
				}
			}
		}
		lp.expire()
		if len(lp.retry) > 0 && lp.now >= lp.retryAt {
			ls := lp.retry
			lp.retry = nil
			for _, l := range ls {
				l.retryAccept(lp)
			}
		}
		if lp.stopped {
			return
		}
	}
}

// wait returns the number of events in lp.events: at once when there are some, else
// when some arrive or the next connection is due (then maybe none).
func (lp *eventLoop) wait() (int, error) {
	due := time.Duration(-1)
	if len(lp.timers) > 0 {
		due = lp.timers[0].due
	}
	if len(lp.retry) > 0 && (due < 0 || lp.retryAt < due) {
		due = lp.retryAt
	}
	// The deadline only ever moves earlier, or once it passed: a later due (its
	// connection went) costs one early wake-up, not a SetReadDeadline per wait.
	var deadline time.Time // none
	if due >= 0 {
		// Whole milliseconds, so that most dues share a deadline.
		deadline = lp.base.Add((due + time.Millisecond - 1).Truncate(time.Millisecond))
	}
	passed := !lp.deadline.IsZero() && !lp.deadline.After(lp.base.Add(lp.now))
	if passed || (!deadline.IsZero() && (lp.deadline.IsZero() || deadline.Before(lp.deadline))) {
		if err := lp.epoll.SetReadDeadline(deadline); err != nil {
			return 0, err
		}
		lp.deadline = deadline
	}
	// Read calls the function at once and, while it reports false, parks until the
	// runtime's poller finds the epoll descriptor readable or the deadline passes.
	var n int
	var err error
	rerr := lp.raw.Read(func(uintptr) bool {
		n, err = sysEpollPoll(lp.epfd, lp.events)
		return n > 0 || (err != nil && !errors.Is(err, unix.EINTR))
	})
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		// Read returned without polling when the deadline had already passed.
		n, err = sysEpollPoll(lp.epfd, lp.events)
	} else if rerr != nil {
		return 0, rerr
	}
	if err != nil && !errors.Is(err, unix.EINTR) {
		return 0, err
	}
	return max(n, 0), nil
}

func (lp *eventLoop) commands() {
	var buf [8]byte
	_, _ = unix.Read(lp.wakefd, buf[:])
	lp.mu.Lock()
	cmds := lp.cmds
	lp.cmds = nil
	lp.mu.Unlock()
	for _, fn := range cmds {
		fn()
	}
}

// exit closes every connection, runs the commands that arrived meanwhile (later ones
// are refused) and closes the epoll instance.
func (lp *eventLoop) exit() {
	for c := range lp.conns {
		c.close(lp)
	}
	lp.mu.Lock()
	lp.exited = true
	cmds := lp.cmds
	lp.cmds = nil
	lp.mu.Unlock()
	for _, fn := range cmds {
		fn()
	}
	lp.close()
}

// close releases the loop's descriptors.
func (lp *eventLoop) close() {
	if lp.epoll != nil {
		_ = lp.epoll.Close()
	} else {
		_ = unix.Close(lp.epfd)
	}
	_ = unix.Close(lp.wakefd)
}

// register adds fd to the loop's epoll set for h.
func (lp *eventLoop) register(fd int, h eventHandler, events uint32) error {
	for fd >= len(lp.slots) {
		lp.slots = append(lp.slots, make([]slot, max(64, len(lp.slots)))...)
	}
	lp.gen++
	lp.slots[fd] = slot{h: h, gen: lp.gen}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(lp.gen)}
	if err := sysEpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		lp.slots[fd] = slot{}
		return err
	}
	return nil
}

// forget drops fd's slot; the caller closes fd (which leaves the epoll set) or
// deletes it from the set.
func (lp *eventLoop) forget(fd int) {
	if fd >= 0 && fd < len(lp.slots) {
		lp.slots[fd] = slot{}
	}
}

// schedule (re)places c in the timer heap at due.
func (lp *eventLoop) schedule(c *tcpConn, due time.Duration) {
	c.due = due
	if c.heapIndex < 0 {
		heap.Push(&lp.timers, c)
	} else {
		heap.Fix(&lp.timers, c.heapIndex)
	}
}

func (lp *eventLoop) unschedule(c *tcpConn) {
	if c.heapIndex >= 0 {
		heap.Remove(&lp.timers, c.heapIndex)
	}
}

// expire runs the connections whose time has come.
func (lp *eventLoop) expire() {
	for len(lp.timers) > 0 && lp.timers[0].due <= lp.now {
		c := lp.timers[0]
		c.timeout(lp)
		if len(lp.timers) > 0 && lp.timers[0] == c && c.due <= lp.now {
			// Not rescheduled: never spin on it.
			lp.unschedule(c)
		}
	}
}

// connHeap orders connections by due time.
type connHeap []*tcpConn

func (h connHeap) Len() int           { return len(h) }
func (h connHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h connHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = i
	h[j].heapIndex = j
}
func (h *connHeap) Push(x any) {
	c := x.(*tcpConn)
	c.heapIndex = len(*h)
	*h = append(*h, c)
}
func (h *connHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.heapIndex = -1
	return c
}
