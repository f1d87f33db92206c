package eventloop_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/eventloop"
)

// Tests listen on 127.0.97.0/24 (Linux routes all of 127.0.0.0/8 to lo), away from
// 127.0.0.1, whose ephemeral ports a load test on the machine may exhaust.

// start runs a new loop until the test ends; exit is passed to Run.
func start(t *testing.T, exit func()) *eventloop.Loop {
	t.Helper()
	l, err := eventloop.New()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(exit) }()
	t.Cleanup(func() {
		l.Stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return l
}

// on runs fn on the loop and waits for it.
func on(t *testing.T, l *eventloop.Loop, fn func()) {
	t.Helper()
	done := make(chan struct{})
	if !l.Do(func() { fn(); close(done) }) {
		t.Fatal("Do refused: the loop has exited")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Do: fn did not run within 10s")
	}
}

// listen opens a non-blocking listening socket on ip (port chosen by the kernel).
func listen(t *testing.T, ip string) (int, netip.AddrPort) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: netip.MustParseAddr(ip).As4()}); err != nil {
		_ = unix.Close(fd)
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		_ = unix.Close(fd)
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		_ = unix.Close(fd)
		t.Fatal(err)
	}
	in := sa.(*unix.SockaddrInet4)
	return fd, netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port))
}

// acceptor accepts every connection on its listening socket and serves it with an
// echoConn; the peer address of each goes to peers.
type acceptor struct {
	fd     int
	splice bool
	peers  chan netip.AddrPort
	errs   chan error
}

func (a *acceptor) Ready(l *eventloop.Loop, _ uint32) {
	for {
		fd, peer, err := eventloop.Accept(a.fd)
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if err != nil {
			a.errs <- err
			return
		}
		c := &echoConn{fd: fd, splice: a.splice, buf: make([]byte, 4096), errs: a.errs}
		if err := l.Register(fd, c, eventloop.EdgeEvents); err != nil {
			_ = eventloop.Close(fd)
			a.errs <- err
			return
		}
		a.peers <- peer
	}
}

// echoConn sends back what it reads and shuts down its side after the peer's FIN:
// through a buffer (Read, Write), or through a pipe (Splice).
type echoConn struct {
	fd     int
	splice bool
	buf    []byte
	out    []byte // read, not yet written
	pipe   [2]int
	inPipe int
	eof    bool
	errs   chan error
}

func (c *echoConn) Ready(l *eventloop.Loop, _ uint32) {
	if c.splice && c.pipe[0] == 0 {
		if err := unix.Pipe2(c.pipe[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
			c.fail(l, err)
			return
		}
	}
	for {
		var n int
		var err error
		switch {
		case len(c.out) > 0:
			if n, err = eventloop.Write(c.fd, c.out); err == nil {
				c.out = c.out[n:]
			}
		case c.inPipe > 0:
			if n, err = eventloop.Splice(c.pipe[0], c.fd, c.inPipe); err == nil {
				c.inPipe -= n
			}
		case c.eof:
			if err := eventloop.Shutdown(c.fd, unix.SHUT_WR); err != nil {
				c.fail(l, err)
				return
			}
			c.close(l)
			return
		case c.splice:
			// The pipe is empty: a whole pipe's worth fits.
			if n, err = eventloop.Splice(c.fd, c.pipe[1], 64<<10); err == nil {
				c.inPipe, c.eof = n, n == 0
			}
		default:
			if n, err = eventloop.Read(c.fd, c.buf); err == nil {
				c.out, c.eof = c.buf[:n], n == 0
			}
		}
		switch {
		case errors.Is(err, unix.EAGAIN):
			return // edge-triggered: the next event says when to go on
		case err != nil:
			c.fail(l, err)
			return
		}
	}
}

func (c *echoConn) fail(l *eventloop.Loop, err error) {
	c.errs <- err
	c.close(l)
}

func (c *echoConn) close(l *eventloop.Loop) {
	l.Forget(c.fd)
	_ = eventloop.Close(c.fd)
	if c.pipe[0] != 0 {
		_ = eventloop.Close(c.pipe[0])
		_ = eventloop.Close(c.pipe[1])
	}
}

// TestEcho serves echo connections from a registered listening socket (Accept,
// Register, Read/Write or Splice, Shutdown, Close) and checks every byte and the peer
// address Accept reports.
func TestEcho(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		ip     string
		size   int
		splice bool
	}{
		{"empty", "127.0.97.1", 0, false},
		{"one read", "127.0.97.2", 100, false},
		{"large, send buffer fills", "127.0.97.3", 4 << 20, false},
		{"splice", "127.0.97.4", 4 << 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lfd, addr := listen(t, tt.ip)
			l := start(t, func() { _ = eventloop.Close(lfd) })
			a := &acceptor{fd: lfd, splice: tt.splice, peers: make(chan netip.AddrPort, 4), errs: make(chan error, 4)}
			on(t, l, func() {
				if err := l.Register(lfd, a, eventloop.ListenerEvents); err != nil {
					t.Errorf("Register listener: %v", err)
				}
			})
			c, err := net.Dial("tcp4", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			data := make([]byte, tt.size)
			for i := range data {
				data[i] = byte(i * 31 / 7)
			}
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(data)
				if err == nil {
					err = c.(*net.TCPConn).CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("echo: %d bytes sent, %d back", len(data), len(got))
			}
			select {
			case peer := <-a.peers:
				if want := c.LocalAddr().(*net.TCPAddr).AddrPort(); peer != want {
					t.Errorf("Accept peer = %v, want %v", peer, want)
				}
			case err := <-a.errs:
				t.Fatal(err)
			}
			select {
			case err := <-a.errs:
				t.Fatal(err)
			default:
			}
		})
	}
}

// TestDo: functions handed to Do from many goroutines, and from the loop itself, all
// run, on the loop (the race detector checks that a counter only the loop touches is
// not raced).
func TestDo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		goroutines int
		each       int
		nested     bool // each function calls Do again from the loop
	}{
		{"one goroutine", 1, 100, false},
		{"8 goroutines", 8, 500, false},
		{"from the loop", 4, 50, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := start(t, nil)
			count := 0 // the loop's
			var wg sync.WaitGroup
			for range tt.goroutines {
				wg.Go(func() {
					for range tt.each {
						ok := l.Do(func() {
							count++
							if tt.nested && !l.Do(func() { count++ }) {
								t.Error("nested Do refused")
							}
						})
						if !ok {
							t.Error("Do refused")
							return
						}
					}
				})
			}
			wg.Wait()
			want := tt.goroutines * tt.each
			if tt.nested {
				want *= 2
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				var got int
				on(t, l, func() { got = count })
				if got == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d functions ran, want %d", got, want)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

// TestTimers checks the order timers fire in, not how soon: each case schedules
// timers (as offsets from the loop's Now) and a step list; every timer records its
// name and the loop time it ran at, which must be at or after its due.
func TestTimers(t *testing.T) {
	t.Parallel()
	const ms = time.Millisecond
	type step struct {
		timer  string
		at     time.Duration // Schedule at Now()+at; with cancel, Cancel instead
		cancel bool
	}
	tests := []struct {
		name  string
		steps []step
		want  []string // order of firing; the last one ends the case
	}{
		{"one", []step{{timer: "a", at: 5 * ms}}, []string{"a"}},
		{"in due order", []step{{timer: "b", at: 40 * ms}, {timer: "a", at: 10 * ms}, {timer: "c", at: 80 * ms}}, []string{"a", "b", "c"}},
		{"rescheduled earlier", []step{{timer: "a", at: time.Hour}, {timer: "b", at: 60 * ms}, {timer: "a", at: 10 * ms}}, []string{"a", "b"}},
		{"rescheduled later", []step{{timer: "a", at: 10 * ms}, {timer: "b", at: 40 * ms}, {timer: "a", at: 120 * ms}}, []string{"b", "a"}},
		{"cancelled", []step{{timer: "a", at: 10 * ms}, {timer: "b", at: 40 * ms}, {timer: "a", cancel: true}}, []string{"b"}},
		{"already due", []step{{timer: "a", at: -time.Second}, {timer: "b", at: 0}}, []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := start(t, nil)
			type fired struct {
				name   string
				at     time.Duration
				due    time.Duration
				queued bool // Scheduled() inside its own function
			}
			ch := make(chan fired, 16)
			timers := map[string]*eventloop.Timer{}
			dues := map[string]time.Duration{}
			on(t, l, func() {
				for _, s := range tt.steps {
					tm := timers[s.timer]
					if tm == nil {
						name := s.timer
						tm = new(eventloop.Timer)
						*tm = eventloop.NewTimer(func(l *eventloop.Loop) {
							ch <- fired{name, l.Now(), dues[name], timers[name].Scheduled()}
						})
						timers[s.timer] = tm
					}
					if s.cancel {
						l.Cancel(tm)
						if tm.Scheduled() {
							t.Errorf("%s: Scheduled after Cancel", s.timer)
						}
						continue
					}
					dues[s.timer] = l.Now() + s.at
					l.Schedule(tm, dues[s.timer])
					if !tm.Scheduled() {
						t.Errorf("%s: not Scheduled after Schedule", s.timer)
					}
				}
			})
			var got []string
			for len(got) < len(tt.want) {
				select {
				case f := <-ch:
					got = append(got, f.name)
					if f.at < f.due {
						t.Errorf("%s ran at %v, before its due %v", f.name, f.at, f.due)
					}
					if f.queued {
						t.Errorf("%s still Scheduled while it runs", f.name)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("fired %v, want %v", got, tt.want)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("fired %v, want %v", got, tt.want)
			}
			// Nothing fires twice or late: a marker due after every timer of the case
			// fires with nothing before it.
			marker := eventloop.NewTimer(func(*eventloop.Loop) { ch <- fired{name: "marker"} })
			on(t, l, func() {
				latest := l.Now()
				for name, tm := range timers {
					if tm.Scheduled() {
						t.Errorf("%s still scheduled", name)
					}
					latest = max(latest, dues[name])
				}
				l.Schedule(&marker, latest+ms)
			})
			select {
			case f := <-ch:
				if f.name != "marker" {
					t.Fatalf("%s fired again", f.name)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("marker did not fire")
			}
		})
	}
}

// TestTimerReschedulesItself: a timer's function schedules the same timer again
// until it ran n times.
func TestTimerReschedulesItself(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 5, 20} {
		l := start(t, nil)
		runs := 0 // the loop's
		done := make(chan int, 1)
		var tm eventloop.Timer
		tm = eventloop.NewTimer(func(l *eventloop.Loop) {
			runs++
			if runs < n {
				l.Schedule(&tm, l.Now()+time.Millisecond)
				return
			}
			done <- runs
		})
		on(t, l, func() { l.Schedule(&tm, l.Now()+time.Millisecond) })
		select {
		case got := <-done:
			if got != n {
				t.Fatalf("ran %d times, want %d", got, n)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("n=%d: not done after 10s", n)
		}
	}
}

// TestStop: Stop makes Run run the exit function once and return; a Do from the exit
// function still runs, later ones are refused, and what exit closed is closed.
func TestStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		exitDo bool // the exit function calls Do
	}{
		{"exit closes a connection", false},
		{"Do from exit runs", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := eventloop.New()
			if err != nil {
				t.Fatal(err)
			}
			lfd, addr := listen(t, fmt.Sprintf("127.0.97.%d", 5+i))
			defer unix.Close(lfd)
			client, err := net.Dial("tcp4", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			var fd int
			for {
				fd, _, err = eventloop.Accept(lfd)
				if !errors.Is(err, unix.EAGAIN) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			exits, late := 0, 0
			exit := func() {
				exits++
				_ = eventloop.Close(fd)
				if tt.exitDo && !l.Do(func() { late++ }) {
					t.Error("Do from the exit function refused")
				}
			}
			done := make(chan error, 1)
			go func() { done <- l.Run(exit) }()
			on(t, l, func() {
				if err := l.Register(fd, &echoConn{fd: fd, buf: make([]byte, 64), errs: make(chan error, 1)}, eventloop.EdgeEvents); err != nil {
					t.Error(err)
				}
			})
			l.Stop()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after Stop")
			}
			if exits != 1 {
				t.Errorf("exit ran %d times", exits)
			}
			if tt.exitDo && late != 1 {
				t.Errorf("Do from exit ran %d times before Run returned", late)
			}
			if l.Do(func() { t.Error("a Do after Run returned ran") }) {
				t.Error("Do after Run returned reported true")
			}
			l.Stop() // refused too, no panic
			_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := client.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("client read after exit = %d, %v; want EOF (exit closed the socket)", n, err)
			}
		})
	}
}

// dialer records what a connecting socket's first events say.
type dialer struct {
	fd     int
	result chan dialResult
}

type dialResult struct {
	events uint32
	err    error
}

func (d *dialer) Ready(l *eventloop.Loop, ev uint32) {
	if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		return
	}
	l.Forget(d.fd)
	d.result <- dialResult{ev, eventloop.SocketError(d.fd)}
	_ = eventloop.Close(d.fd)
}

// TestDial: a non-blocking connect reports its outcome through EPOLLOUT (connected)
// or EPOLLERR (refused) and SocketError.
func TestDial(t *testing.T) {
	t.Parallel()
	open, openAddr := listen(t, "127.0.97.10")
	defer unix.Close(open)
	closed, closedAddr := listen(t, "127.0.97.11")
	_ = unix.Close(closed) // nothing listens on closedAddr any more
	tests := []struct {
		name    string
		addr    netip.AddrPort
		wantErr error
	}{
		{"listening", openAddr, nil},
		{"closed port", closedAddr, unix.ECONNREFUSED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := start(t, nil)
			d := &dialer{fd: -1, result: make(chan dialResult, 1)}
			var dialErr error
			on(t, l, func() {
				fd, err := eventloop.Dial(tt.addr)
				if err != nil {
					dialErr = err
					return
				}
				if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
					t.Errorf("TCP_NODELAY = %d, %v", v, err)
				}
				d.fd = fd
				if err := l.Register(fd, d, eventloop.EdgeEvents); err != nil {
					t.Error(err)
				}
			})
			if dialErr != nil {
				// Loopback may refuse within connect(2) itself.
				if tt.wantErr == nil || !errors.Is(dialErr, tt.wantErr) {
					t.Fatalf("Dial: %v, want EINPROGRESS or %v", dialErr, tt.wantErr)
				}
				t.Logf("Dial failed at once: %v", dialErr)
				return
			}
			select {
			case r := <-d.result:
				if !errors.Is(r.err, tt.wantErr) {
					t.Fatalf("SocketError = %v, want %v (events %#x)", r.err, tt.wantErr, r.events)
				}
				if tt.wantErr != nil && r.events&unix.EPOLLERR == 0 {
					t.Errorf("events %#x without EPOLLERR for a refused connect", r.events)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no event for the connecting socket")
			}
		})
	}
}
