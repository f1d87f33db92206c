package http1

import (
	"bytes"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// HeadEnd finds the end of a head (start line and header lines, ended by an empty
// line) in buf. It returns the head's length, 0 when buf does not hold all of it yet,
// or bad when a line ends in a bare LF or the head starts with an empty line: such a
// head is left to net/http.
func HeadEnd(buf []byte) (end int, bad bool) {
	lineStart := 0
	for {
		i := bytes.IndexByte(buf[lineStart:], '\n')
		if i < 0 {
			return 0, false
		}
		i += lineStart
		if i == 0 || buf[i-1] != '\r' {
			return 0, true
		}
		if i-lineStart == 1 { // an empty line
			if lineStart == 0 {
				return 0, true
			}
			return i + 1, false
		}
		lineStart = i + 1
	}
}

// Request is a parsed request head, with what the response needs to know about the
// connection.
type Request struct {
	Req         *http.Request
	WantsClose  bool // Connection: close, or HTTP/1.0 without keep-alive
	KeepAlive10 bool // HTTP/1.0 with Connection: keep-alive
}

// RequestBuffers is what one connection's requests share, one after the other: the
// request, its header map and the backing array of its values. A server keeps one per
// connection; nothing may hold a request once it is answered.
type RequestBuffers struct {
	req  http.Request
	h    http.Header
	vals []string
}

// ParseRequest parses one request head, as found by HeadEnd, into the request
// net/http's server would make of it (Host moved out of Header, "Connection: close"
// turned into Close, Pragma: no-cache also as Cache-Control), filling bufs (nil:
// allocating anew). ok is false when the request is not a plain one: anything but an
// HTTP/1.0 or 1.1 request in origin form without a body (no Content-Length other than
// 0, no Transfer-Encoding), Upgrade, Expect or HTTP2-Settings, with exactly one valid
// Host (none allowed for HTTP/1.0), valid header names and values and no obs-fold.
// Such a request is left to net/http, which answers it or rejects it with its own
// statuses (400, 431, 505 …).
func ParseRequest(head []byte, remoteAddr string, bufs *RequestBuffers) (sr Request, ok bool) {
	s := string(head) // one allocation for every string of the request
	eol := strings.Index(s, "\r\n")
	if eol <= 0 {
		return sr, false
	}
	method, rest, ok1 := strings.Cut(s[:eol], " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == http.MethodConnect || !validMethod(method) || target == "" || target[0] != '/' {
		return sr, false
	}
	minor := 1
	switch proto {
	case "HTTP/1.1":
	case "HTTP/1.0":
		minor = 0
	default:
		return sr, false
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return sr, false
		}
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return sr, false
	}
	fields := strings.Count(s[eol+2:], "\r\n") - 1 // header lines; the last CRLF ends the head
	var h http.Header
	var vals []string // one backing array for single values
	if bufs != nil {
		if bufs.h == nil {
			bufs.h = make(http.Header, fields)
		} else {
			clear(bufs.h)
		}
		if cap(bufs.vals) < fields {
			bufs.vals = make([]string, fields)
		}
		h, vals = bufs.h, bufs.vals[:fields]
	} else {
		h = make(http.Header, fields)
		vals = make([]string, fields)
	}
	var host string
	hosts, lengths := 0, 0
	pos := eol + 2
	for i := 0; ; i++ {
		e := strings.Index(s[pos:], "\r\n")
		if e < 0 {
			return sr, false
		}
		line := s[pos : pos+e]
		pos += e + 2
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' { // obs-fold
			return sr, false
		}
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			return sr, false
		}
		k, v := line[:colon], line[colon+1:]
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) { // before trimming: a CR is no space here
			return sr, false
		}
		v = textproto.TrimString(v)
		k = http.CanonicalHeaderKey(k)
		switch k {
		case "Host":
			hosts++
			host = v
			continue
		case "Content-Length":
			lengths++
			if v != "0" || lengths > 1 {
				return sr, false
			}
		case "Transfer-Encoding", "Upgrade", "Expect", "Http2-Settings":
			return sr, false
		}
		if cur, dup := h[k]; dup {
			h[k] = append(cur, v)
		} else {
			vals[i] = v
			h[k] = vals[i : i+1 : i+1]
		}
	}
	if hosts > 1 || (minor == 1 && hosts == 0) || (hosts == 1 && !httpguts.ValidHostHeader(host)) {
		return sr, false
	}
	if p := h["Pragma"]; len(p) > 0 && p[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	conn := h["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conn, "close")
	closeReq := hasClose
	if minor == 0 {
		closeReq = hasClose || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
		sr.KeepAlive10 = httpguts.HeaderValuesContainsToken(conn[:min(len(conn), 1)], "keep-alive")
	} else if hasClose {
		delete(h, "Connection") // as net/http's server does
	}
	req := http.Request{
		Method: method, URL: u, Proto: proto, ProtoMajor: 1, ProtoMinor: minor,
		Header: h, Body: http.NoBody, Host: host, RemoteAddr: remoteAddr, RequestURI: target, Close: closeReq,
	}
	if bufs != nil {
		bufs.req = req
		sr.Req = &bufs.req
	} else {
		sr.Req = &req
	}
	sr.WantsClose = closeReq
	return sr, true
}

// validMethod reports whether m is an HTTP token.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}
