// Package echo is the backend that weir's demo, tests and benchmarks proxy to: an HTTP
// server that answers with a JSON description of the request it received, and raw TCP
// and UDP echo servers. Every answer names the backend, so a client can see which
// endpoint a load balancer chose.
package echo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Reply is what the HTTP echo answers, as JSON.
type Reply struct {
	Name       string              `json:"name"`
	Method     string              `json:"method"`
	Host       string              `json:"host"`
	Path       string              `json:"path"`
	Query      string              `json:"query,omitempty"`
	Proto      string              `json:"proto"`
	RemoteAddr string              `json:"remoteAddr"`
	Headers    map[string][]string `json:"headers"`
	BodyBytes  int64               `json:"bodyBytes"`
}

// Handler answers every request with a Reply. Two paths change the answer, for tests
// and demos: /status/<code> answers with that status, and /delay/<duration> waits
// first (for example /delay/250ms).
func Handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusOK
		if rest, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			if code, err := strconv.Atoi(rest); err == nil && code >= 200 && code <= 599 {
				status = code
			}
		}
		if rest, ok := strings.CutPrefix(r.URL.Path, "/delay/"); ok {
			if d, err := time.ParseDuration(rest); err == nil {
				select {
				case <-time.After(d):
				case <-r.Context().Done():
					return
				}
			}
		}
		n, _ := io.Copy(io.Discard, r.Body)
		reply := Reply{
			Name: name, Method: r.Method, Host: r.Host, Path: r.URL.Path, Query: r.URL.RawQuery,
			Proto: r.Proto, RemoteAddr: r.RemoteAddr, Headers: r.Header, BodyBytes: n,
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo-Name", name)
		w.WriteHeader(status)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(reply)
	})
}

// ServeHTTP serves the HTTP echo on ln until ctx ends.
func ServeHTTP(ctx context.Context, ln net.Listener, name string) error {
	srv := &http.Server{Handler: Handler(name), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("echo %s: %w", name, err)
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
		<-errc
		return nil
	}
}

// ServeTCP echoes every byte it reads back to its TCP clients until ctx ends. If
// greet is true, each connection first receives the backend's name and a newline.
func ServeTCP(ctx context.Context, ln net.Listener, name string, greet bool) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return fmt.Errorf("echo %s: accept: %w", name, err)
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			if greet {
				if _, err := io.WriteString(c, name+"\n"); err != nil {
					return
				}
			}
			_, _ = io.Copy(c, c)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
		}()
	}
}

// ServeUDP answers every datagram with "<name> <datagram>" until ctx ends.
func ServeUDP(ctx context.Context, pc net.PacketConn, name string) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, 64*1024)
	prefix := []byte(name + " ")
	out := make([]byte, 0, len(buf)+len(prefix))
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue // a transient error (for example ICMP unreachable from a gone client)
		}
		out = append(append(out[:0], prefix...), buf[:n]...)
		if _, err := pc.WriteTo(out, addr); err != nil && ctx.Err() != nil {
			return nil
		}
	}
}
