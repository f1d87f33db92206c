package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// h1Proxied reports whether a request takes proxyH1 rather than
// httputil.ReverseProxy: a request without a body and not an upgrade, to an
// HTTP/1.1 backend, with the fast path on. It is exactly the set of requests the
// upstream sends through the HTTP/1.1 fast client (h1Client).
func (g *Gateway) h1Proxied(r *http.Request, br *backendRuntime) bool {
	return !g.opts.DisableFastPath && !br.cl.h2c && r.ContentLength == 0 &&
		r.Method != http.MethodConnect && len(r.Header["Upgrade"]) == 0
}

// proxyH1 does for the requests h1Proxied admits what httputil.ReverseProxy does,
// without its request clone, header copies and trace context: the downstream request
// r (already carrying the request state as its context) is edited in place — hop-by-
// hop headers removed, "Te: trailers" kept, the client's forwarding headers handled
// by forwardHeaders, unparsable query parameters re-encoded, no default User-Agent —
// and sent through the same upstream (retries, breaker, health, timeouts). The answer
// gets the same response processing (applyResponse), its hop-by-hop headers removed,
// trailers relayed, and a body of unknown length or of type text/event-stream flushed
// on every write. Errors answer as ReverseProxy's ErrorHandler (proxyError), and a
// failure in the middle of the body aborts the response (http.ErrAbortHandler).
func (g *Gateway) proxyH1(w *statusWriter, r *http.Request, st *reqState) {
	g.prepareH1(r, st)
	resp, err := g.up.RoundTrip(r)
	if err != nil {
		g.proxyError(w, r, err)
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Nothing asked for an upgrade (upgrades take ReverseProxy).
		_ = resp.Body.Close()
		g.proxyError(w, r, fmt.Errorf("backend tried to switch protocol %q when none was requested", resp.Header.Get("Upgrade")))
		return
	}
	removeHopByHop(resp.Header)
	g.applyResponse(resp, st)
	dst := w.Header()
	for k, vv := range resp.Header {
		if cur, ok := dst[k]; ok {
			dst[k] = append(cur, vv...)
		} else {
			dst[k] = vv
		}
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		dst.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(resp.StatusCode)
	if err := g.copyBody(w, resp); err != nil {
		_ = resp.Body.Close()
		g.log.Debug("gateway: response body copy failed", "path", r.URL.Path, "err", err)
		// As ReverseProxy: the client cannot be told, so the response is cut short.
		panic(http.ErrAbortHandler)
	}
	_ = resp.Body.Close()
	if len(resp.Trailer) > 0 {
		w.Flush() // chunked, so that the trailers can follow
	}
	if len(resp.Trailer) == announced {
		for k, vv := range resp.Trailer {
			dst[k] = append(dst[k], vv...)
		}
		return
	}
	for k, vv := range resp.Trailer {
		k = http.TrailerPrefix + k
		dst[k] = append(dst[k], vv...)
	}
}

// prepareH1 turns a downstream request without a body into its upstream form, in
// place: hop-by-hop headers removed ("Te: trailers" kept), forwarding headers set,
// unparsable query parameters re-encoded, no default User-Agent.
func (g *Gateway) prepareH1(r *http.Request, st *reqState) {
	h := r.Header
	teTrailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	removeHopByHop(h)
	if teTrailers {
		h["Te"] = []string{"trailers"}
	}
	g.forwardHeaders(h, h, r.Host, r.TLS != nil, st)
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = nil // no Go default
	}
	r.URL.RawQuery = cleanQueryParams(r.URL.RawQuery)
	r.URL.Scheme = "http"
	r.Body = nil
	r.Close = false
}

// copyBody copies the response body with a pooled buffer, flushing after every write
// when the length is unknown or the body is an event stream (ReverseProxy's
// FlushInterval -1 cases), so that streams are never held back.
func (g *Gateway) copyBody(w *statusWriter, resp *http.Response) error {
	flush := resp.ContentLength == -1 || isEventStream(resp.Header.Get("Content-Type"))
	bp := g.bufs.Get().(*[copyBufferSize]byte)
	defer g.bufs.Put(bp)
	buf := bp[:]
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			nw, werr := w.Write(buf[:n])
			if werr != nil {
				return werr
			}
			if nw != n {
				return io.ErrShortWrite
			}
			if flush {
				w.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// isEventStream reports whether a Content-Type's media type is text/event-stream.
func isEventStream(ct string) bool {
	base, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(base), "text/event-stream")
}

// removeHopByHop deletes the hop-by-hop headers and those the Connection header
// names, as httputil.ReverseProxy does.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		delete(h, k)
	}
}

// cleanQueryParams re-encodes a query that url.ParseQuery would not take as it is
// (a semicolon, a bad escape), as httputil.ReverseProxy does.
func cleanQueryParams(s string) string {
	reencode := func(s string) string {
		v, _ := url.ParseQuery(s)
		return v.Encode()
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencode(s)
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return reencode(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
