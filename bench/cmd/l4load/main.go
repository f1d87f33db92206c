// Command l4load is the load generator and backend of bench/l4.sh.
//
//	l4load serve -sink 127.0.0.1:9101 -echo 127.0.0.1:9102
//	l4load throughput -addr 127.0.0.1:9101 -bytes 1073741824
//	l4load rate -addr 127.0.0.1:9102 -workers 32 -duration 5s -size 64
//	l4load wait -addr 127.0.0.1:9101 -timeout 10s
//
// serve runs a sink (reads everything, then answers the byte count as 8 bytes and
// closes) and an echo server until interrupted. throughput writes -bytes to a sink,
// half-closes and waits for the count, and prints "seconds=… mibps=…". rate runs
// -workers loops of connect, write -size bytes, read them back, close for -duration,
// and prints "conns=… errors=… rate=…"; worker i connects from -source + i
// (127.0.24.1, .2, …). Every run is bounded and stops by itself.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: l4load serve|throughput|rate|wait [flags]")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(args)
	case "throughput":
		err = throughput(args)
	case "rate":
		err = rate(args)
	case "wait":
		err = wait(args)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "l4load:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	sinkAddr := fs.String("sink", "127.0.0.1:9101", "sink listen address")
	echoAddr := fs.String("echo", "127.0.0.1:9102", "echo listen address")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sink, err := net.Listen("tcp", *sinkAddr)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	echo, err := net.Listen("tcp", *echoAddr)
	if err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { accept(sink, sinkConn) })
	wg.Go(func() { accept(echo, echoConn) })
	<-ctx.Done()
	_ = sink.Close()
	_ = echo.Close()
	wg.Wait()
	return nil
}

func accept(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

func sinkConn(c net.Conn) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err != nil {
			break
		}
	}
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], uint64(n))
	_, _ = c.Write(out[:])
}

func echoConn(c net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func throughput(args []string) error {
	fs := flag.NewFlagSet("throughput", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:9101", "sink address (direct or through a proxy)")
	total := fs.Int64("bytes", 1<<30, "bytes to send")
	_ = fs.Parse(args)
	start := time.Now()
	c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	buf := make([]byte, 256<<10)
	for left := *total; left > 0; {
		n := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:n]); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		left -= n
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return fmt.Errorf("read count: %w", err)
	}
	if n := int64(binary.BigEndian.Uint64(got[:])); n != *total {
		return fmt.Errorf("sink received %d bytes, sent %d", n, *total)
	}
	secs := time.Since(start).Seconds()
	fmt.Printf("seconds=%.3f mibps=%.0f\n", secs, float64(*total)/(1<<20)/secs)
	return nil
}

func rate(args []string) error {
	fs := flag.NewFlagSet("rate", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:9102", "echo address (direct or through a proxy)")
	workers := fs.Int("workers", 32, "concurrent connection loops")
	duration := fs.Duration("duration", 5*time.Second, "how long to run")
	size := fs.Int("size", 64, "bytes written and read back per connection")
	source := fs.String("source", "127.0.24.1", "first client source address; worker i uses this address + i (empty: let the kernel choose)")
	_ = fs.Parse(args)
	var first netip.Addr
	if *source != "" {
		var err error
		if first, err = netip.ParseAddr(*source); err != nil {
			return fmt.Errorf("-source: %w", err)
		}
	}
	var conns, errs atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(*duration)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range *workers {
		// Each worker has its own source address, so that the client side's TIME_WAIT
		// sockets spread over many addresses instead of exhausting 127.0.0.1's
		// ephemeral ports for every other program on the machine.
		d := net.Dialer{Timeout: 5 * time.Second}
		if first.IsValid() {
			a := first
			for range w {
				a = a.Next()
			}
			d.LocalAddr = &net.TCPAddr{IP: a.AsSlice()}
		}
		wg.Go(func() {
			msg := make([]byte, *size)
			back := make([]byte, *size)
			for time.Now().Before(deadline) {
				if err := once(&d, *addr, msg, back); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				conns.Add(1)
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	fmt.Printf("conns=%d errors=%d rate=%.0f\n", conns.Load(), errs.Load(), float64(conns.Load())/secs)
	if e := firstErr.Load(); e != nil {
		fmt.Fprintln(os.Stderr, "l4load rate: first error:", e)
	}
	return nil
}

func once(d *net.Dialer, addr string, msg, back []byte) error {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err = io.ReadFull(c, back)
	return err
}

func wait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	addr := fs.String("addr", "", "address that must accept a connection")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after")
	_ = fs.Parse(args)
	deadline := time.Now().Add(*timeout)
	for {
		c, err := net.DialTimeout("tcp", *addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting after %v: %w", *addr, *timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
