package userspace

import (
	"fmt"
	"time"

	"weir.dev/weir/internal/eventloop"
)

// A tcpLoop serves TCP frontends and their connections on one eventloop.Loop: raw,
// non-blocking descriptors under one epoll instance and one goroutine, the way HAProxy
// does (the eventloop package says why: raw system calls, and parking in the runtime's
// netpoller rather than in epoll_wait). The Proxy runs one loop per P (at most
// maxLoops); every loop waits on every TCP listening socket and owns the connections
// it accepted.
//
// Every connection's descriptors are registered edge-triggered (eventloop.EdgeEvents).
// Readiness is remembered per side (readable, writable) and cleared by EAGAIN, or by a
// read shorter than the buffer: any later data or FIN is a new edge, so a short read
// needs no second read to confirm that the socket is drained.
type tcpLoop struct {
	p  *Proxy
	el *eventloop.Loop

	// Owned by the loop's goroutine.
	scratch    []byte // read buffer shared by all connections of the loop
	conns      map[*tcpConn]struct{}
	acceptors  map[*listener]*acceptor // listeners registered with this loop
	retry      []*acceptor             // listeners whose accept failed for lack of resources
	retryTimer eventloop.Timer         // re-adds the retry listeners
}

const (
	// maxLoops caps the event loops (one per P up to this). Every loop waits on every
	// listening socket and, parked in the runtime's poller, each is woken by a new
	// connection (EPOLLEXCLUSIVE only applies to threads blocked in epoll_wait): the
	// losers' accept4 finds nothing, a cost that grows with the number of loops.
	maxLoops = 8
	// acceptBatch bounds the connections one loop accepts per wake-up, so that a
	// burst does not starve the connections it already serves.
	acceptBatch = 64
	// acceptRetry is how long a listener waits after an accept failed for lack of
	// descriptors or memory (as net/http backs off).
	acceptRetry = 50 * time.Millisecond
)

func newTCPLoop(p *Proxy) (*tcpLoop, error) {
	el, err := eventloop.New()
	if err != nil {
		return nil, fmt.Errorf("userspace: %w", err)
	}
	lp := &tcpLoop{
		p: p, el: el,
		scratch:   make([]byte, copyBufferSize),
		conns:     map[*tcpConn]struct{}{},
		acceptors: map[*listener]*acceptor{},
	}
	lp.retryTimer = eventloop.NewTimer(func(*eventloop.Loop) { lp.retryAccept() })
	return lp, nil
}

// do runs fn on the loop's goroutine, soon. It reports false, without running fn, when
// the loop has exited.
func (lp *tcpLoop) do(fn func()) bool { return lp.el.Do(fn) }

// stop makes the loop close every connection it still has and exit.
func (lp *tcpLoop) stop() { lp.el.Stop() }

// run serves events until stop.
func (lp *tcpLoop) run() {
	if err := lp.el.Run(lp.exit); err != nil {
		lp.p.log.Error("event loop", "err", err)
	}
}

// discard releases a loop that never ran.
func (lp *tcpLoop) discard() {
	lp.el.Stop()
	_ = lp.el.Run(nil) // runs the stop command and closes the epoll instance
}

// exit closes every connection the loop still has; Run calls it on the way out.
func (lp *tcpLoop) exit() {
	for c := range lp.conns {
		c.close()
	}
}

// closeIdle closes the established connections that carried no byte for idleFor and
// hold no bytes in transit, and returns how many.
func (lp *tcpLoop) closeIdle(idleFor time.Duration) int {
	n := 0
	now := lp.now()
	for c := range lp.conns {
		if c.state == established && now-c.last >= idleFor && c.up.empty() && c.down.empty() {
			c.close()
			n++
		}
	}
	return n
}

// now is the loop's clock (eventloop.Loop.Now).
func (lp *tcpLoop) now() time.Duration { return lp.el.Now() }

// schedule (re)places c's timer at due.
func (lp *tcpLoop) schedule(c *tcpConn, due time.Duration) {
	lp.el.Schedule(&c.timer, due)
}

// retryAccept re-adds the listeners whose accept failed for lack of resources.
func (lp *tcpLoop) retryAccept() {
	as := lp.retry
	lp.retry = nil
	for _, a := range as {
		a.register()
		a.accept()
	}
}
