package http1

import (
	"bufio"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// WriteRequest writes a request without a body as http.Request.Write would (request
// line, Host, User-Agent, Content-Length: 0 for POST, PUT and PATCH, Connection: close,
// then the other headers with CR and LF turned into spaces and invalid names
// skipped), without its per-request allocations and header sort. Requests it does not
// handle the same way (a body, trailers, a transfer coding, CONNECT, a host that is not
// plain ASCII or has a zone) go to http.Request.Write.
func WriteRequest(bw *bufio.Writer, r *http.Request) error {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	if (r.Body != nil && r.Body != http.NoBody) || r.ContentLength != 0 || len(r.Trailer) > 0 ||
		len(r.TransferEncoding) > 0 || r.Method == http.MethodConnect || !plainHost(host) {
		return r.Write(bw)
	}
	uri := r.URL.RequestURI()
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c < ' ' || c == 0x7f {
			return r.Write(bw) // which refuses it
		}
	}
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	ua := "Go-http-client/1.1"
	if v, ok := r.Header["User-Agent"]; ok {
		ua = ""
		if len(v) > 0 {
			ua = textproto.TrimString(noNewlines(v[0]))
		}
	}
	if ua != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(ua)
		bw.WriteString("\r\n")
	}
	if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		bw.WriteString("Content-Length: 0\r\n")
	}
	if r.Close && !HasCloseToken(r.Header.Get("Connection")) {
		bw.WriteString("Connection: close\r\n")
	}
	for k, vs := range r.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(noNewlines(v)))
			bw.WriteString("\r\n")
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// plainHost reports whether a Host header is printable ASCII without a zone, which
// http.Request.Write would send unchanged.
func plainHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c >= 0x7f || c == '%' {
			return false
		}
	}
	return httpguts.ValidHostHeader(h)
}

func noNewlines(v string) string {
	if !strings.ContainsAny(v, "\r\n") {
		return v
	}
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(v)
}

// HasCloseToken reports whether a Connection header value lists "close".
func HasCloseToken(v string) bool {
	for t := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), "close") {
			return true
		}
	}
	return false
}
