package gateway

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

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
