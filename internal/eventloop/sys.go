package eventloop

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event loops make only non-blocking system calls (every descriptor is
// O_NONBLOCK, epoll_wait has a zero timeout), so they make them raw, without telling
// the scheduler: a P inside a system call that the runtime's monitor sees on two of its
// ticks (20 µs; a loopback connect or close takes that long on a slow VM) is taken
// away and handed to another thread, and each such hand-off keeps the monitor waking
// every 20 µs, which showed as half of weir's context switches per connection.

func errnoOf(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Read reads from a non-blocking descriptor.
func Read(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// Write sends on a socket; MSG_NOSIGNAL: a peer that is gone makes it fail with
// EPIPE without a SIGPIPE to the thread.
func Write(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)),
		unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// Close closes a descriptor.
func Close(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return errnoOf(e)
}

// Shutdown shuts a socket down (unix.SHUT_WR …).
func Shutdown(fd, how int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
	return errnoOf(e)
}

// Splice moves up to n bytes from in to out without blocking (one end a pipe).
func Splice(in, out, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n),
		unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func epollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errnoOf(e)
}

// epollPoll collects ready events without waiting.
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))),
		uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// SetsockoptInt sets an integer socket option.
func SetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
	return errnoOf(e)
}

// Accept accepts a connection, non-blocking and close-on-exec, and returns its
// peer address.
func Accept(fd int) (int, netip.AddrPort, error) {
	var sa unix.RawSockaddrAny
	n := uint32(unsafe.Sizeof(sa))
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(r), addrPortOfRaw(&sa), nil
}

func addrPortOfRaw(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), portOf(in.Port))
	case unix.AF_INET6:
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom16(in.Addr).Unmap(), portOf(in.Port))
	}
	return netip.AddrPort{}
}

// portOf reads a port in network byte order.
func portOf(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return binary.BigEndian.Uint16(b[:])
}

// Dial opens a non-blocking, close-on-exec TCP socket with TCP_NODELAY and starts
// connecting it to ap (EINPROGRESS is not an error).
func Dial(ap netip.AddrPort) (int, error) {
	a := ap.Addr()
	family := unix.AF_INET
	if a.Is6() && !a.Is4In6() {
		family = unix.AF_INET6
	}
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, &opError{"socket", e}
	}
	fd := int(r)
	_ = SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], ap.Port())
	if family == unix.AF_INET {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Port: *(*uint16)(unsafe.Pointer(&port)), Addr: a.Unmap().As4()}
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: *(*uint16)(unsafe.Pointer(&port)), Addr: a.As16()}
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	}
	if e != 0 && e != unix.EINPROGRESS {
		_ = Close(fd)
		return -1, &opError{"connect", e}
	}
	return fd, nil
}

// opError names the system call that failed, as os.SyscallError does, without its
// allocation on the success path.
type opError struct {
	call string
	err  unix.Errno
}

func (e *opError) Error() string { return e.call + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

// SocketError is a socket's pending error (SO_ERROR), as a connect that failed
// reports it; ECONNREFUSED when it cannot be read.
func SocketError(fd int) error {
	var v int32
	n := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR, uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&n)), 0)
	switch {
	case e != 0:
		return unix.ECONNREFUSED
	case v != 0:
		return unix.Errno(v)
	}
	return nil
}
