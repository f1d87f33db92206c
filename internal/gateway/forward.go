package gateway

import (
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// rewrite prepares the upstream request for httputil.ReverseProxy (which has removed
// the hop-by-hop and forwarding headers from pr.Out): see forwardHeaders.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	st, _ := pr.In.Context().Value(stateKey{}).(*reqState)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = "upstream" // the transport sets the endpoint
	pr.Out.Host = pr.In.Host
	g.forwardHeaders(pr.Out.Header, pr.In.Header, pr.In.Host, pr.In.TLS != nil, st)
}

// The headers policy of an upstream request, in two steps:
//
//  1. inboundHeaders, as soon as a request has its rule and before any filter: a
//     client that is not a trusted proxy loses every forwarding header it sent
//     (untrustedForwarding); the headers its Connection header names are removed
//     (and Connection keeps only the tokens the transports act on), so that a
//     Connection token can never remove a header a route filter sets later; an
//     "Upgrade: h2c" is dropped with its HTTP2-Settings (weir does not switch a
//     connection to HTTP/2 on a client's say-so, and never tunnels one to a backend:
//     the request is served as if no upgrade had been asked, as Envoy does).
//  2. forwardHeaders, when the upstream request is built (after the filters): weir's
//     own forwarding headers (X-Forwarded-For, -Proto, -Host, Forwarded) are set or
//     appended to. The other forwarding headers (X-Real-IP, X-Forwarded-Port,
//     X-Original-URL …) reach a backend only from a trusted proxy or a route filter.

// untrustedForwarding reports whether a client that is not a trusted proxy may not
// send header k (canonical form): the forwarding headers weir sets itself, and those
// that proxies use to tell an origin the client's address, scheme or original URL
// (which applications such as Symfony and IIS's URL rewrite obey: X-Original-URL
// and X-Rewrite-URL route around the path the gateway matched).
func untrustedForwarding(k string) bool {
	switch k {
	case "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "Forwarded", "X-Real-Ip",
		"X-Forwarded-Scheme", "X-Forwarded-Ssl", "X-Forwarded-Prefix", "X-Forwarded-Uri", "X-Forwarded-Path",
		"X-Forwarded-Server", "X-Original-Url", "X-Original-Uri", "X-Rewrite-Url", "X-Original-Host",
		"X-Original-Forwarded-For", "X-Client-Ip", "True-Client-Ip", "X-Cluster-Client-Ip", "X-Host":
		return true
	}
	return false
}

// inboundHeaders is step 1 of the policy above, on the downstream request's header
// (r.Header, edited in place).
func (g *Gateway) inboundHeaders(r *http.Request, st *reqState) {
	h := r.Header
	if !g.trusted(st.client) {
		for k := range h {
			if untrustedForwarding(k) {
				delete(h, k)
			}
		}
	}
	if up := h["Upgrade"]; len(up) > 0 && httpguts.HeaderValuesContainsToken(up, "h2c") {
		// h2c goes, with HTTP2-Settings; the other protocols offered stay.
		var rest []string
		for _, v := range up {
			for p := range strings.SplitSeq(v, ",") {
				if p = textproto.TrimString(p); p != "" && !strings.EqualFold(p, "h2c") {
					rest = append(rest, p)
				}
			}
		}
		delete(h, "Http2-Settings")
		delete(h, "Upgrade")
		if len(rest) > 0 {
			h["Upgrade"] = []string{strings.Join(rest, ", ")}
		}
	}
	conn := h["Connection"]
	if len(conn) == 0 {
		return
	}
	var buf [4]string
	keep, dropped := buf[:0], false
	for _, v := range conn {
		for tok := range strings.SplitSeq(v, ",") {
			tok = textproto.TrimString(tok)
			switch {
			case tok == "":
			case strings.EqualFold(tok, "upgrade") && h["Upgrade"] == nil: // nothing left to upgrade to
				dropped = true
			case strings.EqualFold(tok, "close"), strings.EqualFold(tok, "keep-alive"),
				strings.EqualFold(tok, "upgrade"), strings.EqualFold(tok, "te"):
				keep = append(keep, tok)
			default:
				delete(h, textproto.CanonicalMIMEHeaderKey(tok))
				dropped = true
			}
		}
	}
	switch {
	case !dropped: // "keep-alive", "close", "Upgrade": left as sent
	case len(keep) == 0:
		delete(h, "Connection")
	default:
		h["Connection"] = []string{strings.Join(keep, ", ")}
	}
}

// forwardHeaders is step 2: it sets the forwarding headers weir owns on an upstream
// request. in is the downstream request's header after inboundHeaders and the
// filters: what it still holds of X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host
// and Forwarded came from a trusted proxy or a route filter, and is kept: the client's
// address is appended to X-Forwarded-For and an element to Forwarded, and
// X-Forwarded-Proto and X-Forwarded-Host are set when absent. out and in may be the
// same map (the event loops edit the downstream header in place); otherwise out lacks
// the four headers, which httputil.ReverseProxy removes before its Rewrite.
func (g *Gateway) forwardHeaders(out, in http.Header, host string, tls bool, st *reqState) {
	for _, k := range [...]string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"} {
		if v, ok := in[k]; ok {
			out[k] = v
		} else {
			delete(out, k)
		}
	}
	proto := "http"
	if tls {
		proto = "https"
	}
	client := ""
	if st != nil && st.client.IsValid() {
		client = st.clientIP
	}
	// The four headers set here share one backing array (each slice capped at one
	// value, so that a later Add copies rather than overwrites its neighbour).
	h := out
	vals := new([4]string)
	if st != nil {
		vals = &st.fwd // one allocation less per request
	}
	set := func(i int, key, v string) {
		vals[i] = v
		h[key] = vals[i : i+1 : i+1]
	}
	if client != "" {
		if prior := h.Values("X-Forwarded-For"); len(prior) > 0 {
			set(0, "X-Forwarded-For", strings.Join(prior, ", ")+", "+client)
		} else {
			set(0, "X-Forwarded-For", client)
		}
	}
	if h.Get("X-Forwarded-Proto") == "" {
		set(1, "X-Forwarded-Proto", proto)
	}
	if h.Get("X-Forwarded-Host") == "" {
		set(2, "X-Forwarded-Host", host)
	}
	var fwd string
	if plainQuoted(host) {
		fwd = "for=" + forwardedNode(client) + `;host="` + host + `";proto=` + proto
	} else {
		fwd = "for=" + forwardedNode(client) + ";host=" + strconv.Quote(host) + ";proto=" + proto
	}
	if prior := h.Get("Forwarded"); prior != "" {
		fwd = prior + ", " + fwd
	}
	set(3, "Forwarded", fwd)
}

// plainQuoted reports whether strconv.Quote(s) is s between double quotes.
func plainQuoted(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func forwardedNode(ip string) string {
	if ip == "" {
		return "unknown"
	}
	if strings.Contains(ip, ":") {
		return `"[` + ip + `]"`
	}
	return ip
}

func (g *Gateway) trusted(a netip.Addr) bool {
	for _, p := range g.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
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
