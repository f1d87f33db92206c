package gateway

import (
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
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

// forwardHeaders sets the forwarding headers of an upstream request: the client's
// X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and Forwarded are kept (in is
// the downstream request's header) and appended to when the client is a trusted
// proxy, and replaced otherwise. out and in may be the same map (the HTTP/1.1 fast
// path edits the downstream header in place).
func (g *Gateway) forwardHeaders(out, in http.Header, host string, tls bool, st *reqState) {
	trusted := st != nil && g.trusted(st.client)
	for _, k := range [...]string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"} {
		if v, ok := in[k]; ok && trusted {
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
	if !trusted || h.Get("X-Forwarded-Proto") == "" {
		set(1, "X-Forwarded-Proto", proto)
	}
	if !trusted || h.Get("X-Forwarded-Host") == "" {
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
