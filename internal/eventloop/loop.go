// Package eventloop runs sockets on raw, non-blocking file descriptors with one epoll
// instance and one goroutine per loop, the way HAProxy and nginx do: no goroutine per
// connection, no park and wake-up per blocking step, and none of the net package's
// per-connection bookkeeping. weir's userspace proxy and its L7 gateway run their
// connections on such loops.
//
// A Loop waits in the Go runtime's netpoller, not in epoll_wait: its epoll descriptor
// is itself registered with the runtime (readable: events are waiting), so a parked
// loop costs no thread and the runtime does not hand its P to another thread and spin
// one up, which blocking in epoll_wait would.
//
// Descriptors are usually registered edge-triggered (EdgeEvents). Their owners remember
// readiness per side and clear it on EAGAIN or on a read shorter than the buffer: any
// later data or FIN is a new edge, so a short read needs no second read to confirm
// that the socket is drained.
package eventloop

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

// EdgeEvents is the usual registration of a connection: input, output and peer
// shutdown, edge-triggered.
const EdgeEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// ListenerEvents registers a listening socket shared by several loops: level-
// triggered, so that a loop that stopped after a batch of accepts is told again, and
// exclusive, so that a new connection wakes one loop.
const ListenerEvents = unix.EPOLLIN | unix.EPOLLEXCLUSIVE

const maxEvents = 128

// A Handler is what a registered descriptor belongs to.
type Handler interface {
	Ready(l *Loop, events uint32)
}

// A Timer runs its function on the loop when it is due. The zero Timer is not
// scheduled.
type Timer struct {
	due   time.Duration
	index int // in the heap, plus one; 0 when not scheduled
	fn    func(*Loop)
}

// NewTimer makes a timer that runs fn on the loop it is scheduled on.
func NewTimer(fn func(*Loop)) Timer { return Timer{fn: fn} }

// Due is when t runs (loop time, see Loop.Now), or last ran.
func (t *Timer) Due() time.Duration { return t.due }

// Scheduled reports whether t is waiting to run.
func (t *Timer) Scheduled() bool { return t.index > 0 }

// Loop is one event loop. All its methods but Do and Stop run on the loop's goroutine
// (inside Run, or in functions Run calls).
type Loop struct {
	epfd   int
	wakefd int // eventfd: commands are waiting
	epoll  *os.File
	raw    syscall.RawConn
	// deadline is epoll's read deadline in the runtime: the next timer.
	deadline time.Time

	mu      sync.Mutex
	cmds    []func()
	exited  bool
	stopped bool

	slots  []slot // by file descriptor
	gen    uint32
	events []unix.EpollEvent
	timers timerHeap
	poll   func(uintptr) bool // epollPoll into events, n and err: made once, not per wait
	n      int
	err    error
	base   time.Time
	now    time.Duration // since base, updated once per wake-up
}

type slot struct {
	h   Handler
	gen uint32
}

// New makes a loop; Run serves it.
func New() (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("eventloop: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventloop: eventfd: %w", err)
	}
	l := &Loop{epfd: epfd, wakefd: wakefd, events: make([]unix.EpollEvent, maxEvents), base: time.Now()}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		l.close()
		return nil, fmt.Errorf("eventloop: epoll_ctl eventfd: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		l.close()
		return nil, fmt.Errorf("eventloop: epoll fd: %w", err)
	}
	l.epoll = os.NewFile(uintptr(epfd), "epoll") // non-blocking: polled by the runtime
	raw, err := l.epoll.SyscallConn()
	if err != nil {
		l.close()
		return nil, fmt.Errorf("eventloop: epoll fd: %w", err)
	}
	l.raw = raw
	l.poll = func(uintptr) bool {
		l.n, l.err = epollPoll(l.epfd, l.events)
		return l.n > 0 || (l.err != nil && !errors.Is(l.err, unix.EINTR))
	}
	return l, nil
}

// Do runs fn on the loop's goroutine, soon. It reports false, without running fn,
// when the loop has exited.
func (l *Loop) Do(fn func()) bool {
	l.mu.Lock()
	if l.exited {
		l.mu.Unlock()
		return false
	}
	if len(l.cmds) == 0 {
		// Under mu: once exited is set the eventfd may be closed and its number reused.
		one := [8]byte{1}
		_, _ = unix.Write(l.wakefd, one[:])
	}
	l.cmds = append(l.cmds, fn)
	l.mu.Unlock()
	return true
}

// Stop makes Run return after the current batch of events.
func (l *Loop) Stop() { l.Do(func() { l.stopped = true }) }

// Run serves events and timers until Stop, then runs exit (which should close what
// the loop still owns), runs the commands that arrived meanwhile (later ones are
// refused), and closes the epoll instance. It returns the error that ended the loop
// early, if one did.
func (l *Loop) Run(exit func()) error {
	var err error
	defer func() {
		if exit != nil {
			exit()
		}
		l.mu.Lock()
		l.exited = true
		cmds := l.cmds
		l.cmds = nil
		l.mu.Unlock()
		for _, fn := range cmds {
			fn()
		}
		l.close()
	}()
	for !l.stopped {
		var n int
		n, err = l.wait()
		l.now = time.Since(l.base)
		if err != nil {
			return fmt.Errorf("eventloop: epoll_wait: %w", err)
		}
		for i := range n {
			ev := &l.events[i]
			fd := int(ev.Fd)
			if fd == l.wakefd {
				l.commands()
				continue
			}
			if fd < len(l.slots) {
				if s := l.slots[fd]; s.h != nil && s.gen == uint32(ev.Pad) {
					s.h.Ready(l, ev.Events)
				}
			}
		}
		l.expire()
	}
	return nil
}

// Now is the loop's clock: time since the loop was made, read once per wake-up.
func (l *Loop) Now() time.Duration { return l.now }

// Time is Now as a wall-clock time.
func (l *Loop) Time() time.Time { return l.base.Add(l.now) }

// wait returns the number of events in l.events: at once when there are some, else
// when some arrive or the next timer is due (then maybe none).
func (l *Loop) wait() (int, error) {
	due := time.Duration(-1)
	if len(l.timers) > 0 {
		due = l.timers[0].due
	}
	// The deadline only ever moves earlier, or once it passed: a later due (its timer
	// was cancelled) costs one early wake-up, not a SetReadDeadline per wait.
	var deadline time.Time // none
	if due >= 0 {
		// Whole milliseconds, so that most dues share a deadline.
		deadline = l.base.Add((due + time.Millisecond - 1).Truncate(time.Millisecond))
	}
	passed := !l.deadline.IsZero() && !l.deadline.After(l.base.Add(l.now))
	if passed || (!deadline.IsZero() && (l.deadline.IsZero() || deadline.Before(l.deadline))) {
		if err := l.epoll.SetReadDeadline(deadline); err != nil {
			return 0, err
		}
		l.deadline = deadline
	}
	// Read calls the function at once and, while it reports false, parks until the
	// runtime's poller finds the epoll descriptor readable or the deadline passes.
	rerr := l.raw.Read(l.poll)
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		// Read returned without polling when the deadline had already passed.
		l.n, l.err = epollPoll(l.epfd, l.events)
	} else if rerr != nil {
		return 0, rerr
	}
	if l.err != nil && !errors.Is(l.err, unix.EINTR) {
		return 0, l.err
	}
	return max(l.n, 0), nil
}

func (l *Loop) commands() {
	var buf [8]byte
	_, _ = unix.Read(l.wakefd, buf[:])
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for _, fn := range cmds {
		fn()
	}
}

func (l *Loop) close() {
	if l.epoll != nil {
		_ = l.epoll.Close()
	} else {
		_ = unix.Close(l.epfd)
	}
	_ = unix.Close(l.wakefd)
}

// Register adds fd to the loop's epoll set for h.
func (l *Loop) Register(fd int, h Handler, events uint32) error {
	for fd >= len(l.slots) {
		l.slots = append(l.slots, make([]slot, max(64, len(l.slots)))...)
	}
	l.gen++
	l.slots[fd] = slot{h: h, gen: l.gen}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(l.gen)}
	if err := epollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.slots[fd] = slot{}
		return err
	}
	return nil
}

// Unregister deletes fd from the epoll set (for a descriptor that stays open) and
// forgets it.
func (l *Loop) Unregister(fd int) error {
	l.Forget(fd)
	return epollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// Forget drops fd's handler; the caller closes fd, which leaves the epoll set. An
// event already collected for fd is not delivered.
func (l *Loop) Forget(fd int) {
	if fd >= 0 && fd < len(l.slots) {
		l.slots[fd] = slot{}
	}
}

// Schedule (re)places t to run at due (loop time, see Now).
func (l *Loop) Schedule(t *Timer, due time.Duration) {
	t.due = due
	if t.index == 0 {
		heap.Push(&l.timers, t)
	} else {
		heap.Fix(&l.timers, t.index-1)
	}
}

// Cancel unschedules t.
func (l *Loop) Cancel(t *Timer) {
	if t.index > 0 {
		heap.Remove(&l.timers, t.index-1)
	}
}

// expire runs the timers whose time has come; a timer's function may schedule it again.
func (l *Loop) expire() {
	for len(l.timers) > 0 && l.timers[0].due <= l.now {
		t := heap.Pop(&l.timers).(*Timer)
		t.fn(l)
	}
}

type timerHeap []*Timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i + 1
	h[j].index = j + 1
}
func (h *timerHeap) Push(x any) {
	t := x.(*Timer)
	t.index = len(*h) + 1
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = 0
	return t
}
