package health

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"weir.dev/weir/internal/model"
)

// Defaults of an active check whose fields are zero (Translate normally fills them).
const (
	DefaultCheckInterval      = 5 * time.Second
	DefaultCheckTimeout       = time.Second
	DefaultHealthyThreshold   = 1
	DefaultUnhealthyThreshold = 3
)

// startProbe starts the endpoint's active check goroutine, if its port has a check.
// o.mu is held.
func (o *Overlay) startProbe(ps *portState, st *endpointState) {
	if ps.check == nil || o.closed {
		return
	}
	hc := withCheckDefaults(*ps.check)
	ctx, cancel := context.WithCancel(o.ctx)
	st.stopProbe = cancel
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		o.probeLoop(ctx, st, hc)
	}()
}

func withCheckDefaults(hc model.ActiveHealthCheck) model.ActiveHealthCheck {
	if hc.Interval <= 0 {
		hc.Interval = DefaultCheckInterval
	}
	if hc.Timeout <= 0 {
		hc.Timeout = DefaultCheckTimeout
	}
	if hc.HealthyThreshold <= 0 {
		hc.HealthyThreshold = DefaultHealthyThreshold
	}
	if hc.UnhealthyThreshold <= 0 {
		hc.UnhealthyThreshold = DefaultUnhealthyThreshold
	}
	if hc.Path == "" {
		hc.Path = "/"
	}
	if len(hc.ExpectedStatuses) == 0 {
		hc.ExpectedStatuses = []int{http.StatusOK}
	}
	return hc
}

// probeLoop checks one endpoint every interval, starting after a random part of the
// interval so that probes of many endpoints spread out.
func (o *Overlay) probeLoop(ctx context.Context, st *endpointState, hc model.ActiveHealthCheck) {
	var client *http.Client
	if hc.HTTP {
		client = &http.Client{
			Timeout:   hc.Timeout,
			Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
		defer client.CloseIdleConnections()
	}
	timer := time.NewTimer(rand.N(hc.Interval))
	defer timer.Stop()
	successes, failures := 0, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		err := probe(ctx, client, st.key.Endpoint, hc)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			successes, failures = successes+1, 0
			if successes >= hc.HealthyThreshold {
				o.setActive(st, true, nil)
			}
		} else {
			successes, failures = 0, failures+1
			if failures >= hc.UnhealthyThreshold {
				o.setActive(st, false, err)
			}
		}
		timer.Reset(hc.Interval)
	}
}

func (o *Overlay) setActive(st *endpointState, up bool, cause error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || st.removed || st.activeDown == !up {
		return
	}
	st.activeDown = !up
	st.downReason = ""
	if cause != nil {
		st.downReason = cause.Error()
	}
	st.gauge.Set(b2f(st.healthy()))
	if up {
		o.log.Info("endpoint passes its health check", "service_port", st.key.ServicePort, "endpoint", st.key.Endpoint.String())
	} else {
		o.log.Warn("endpoint fails its health check", "service_port", st.key.ServicePort, "endpoint", st.key.Endpoint.String(), "error", cause)
	}
	o.changedLocked(st.key.ServicePort)
}

// probe runs one check: a TCP connect, or an HTTP GET whose status must be expected.
func probe(ctx context.Context, client *http.Client, ep netip.AddrPort, hc model.ActiveHealthCheck) error {
	ctx, cancel := context.WithTimeout(ctx, hc.Timeout)
	defer cancel()
	if client == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ep.String())
		if err != nil {
			return fmt.Errorf("tcp check: %w", err)
		}
		return c.Close()
	}
	url := "http://" + ep.String() + hc.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("http check: %w", err)
	}
	if hc.Host != "" {
		req.Host = hc.Host
	}
	req.Header.Set("User-Agent", "weir-health-check")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http check: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if !slices.Contains(hc.ExpectedStatuses, resp.StatusCode) {
		return fmt.Errorf("http check: GET %s answered %s, want one of %v", hc.Path, strconv.Itoa(resp.StatusCode), hc.ExpectedStatuses)
	}
	return nil
}
