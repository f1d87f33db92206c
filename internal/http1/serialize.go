package http1

import (
	"bytes"
	"net/http"
	"strconv"

	"golang.org/x/net/http/httpguts"
)

// AppendStatusLine appends an HTTP/1.1 status line as net/http's server writes it.
func AppendStatusLine(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	if text := http.StatusText(code); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(code), 10)
	}
	return append(b, "\r\n"...)
}

// AppendHeadEnd ends a head: Date when it has none, Connection: close when the
// connection ends after the response, and the empty line.
func AppendHeadEnd(b []byte, hasDate bool, date []byte, closeAfter bool) []byte {
	if !hasDate {
		b = append(b, "Date: "...)
		b = append(b, date...)
		b = append(b, "\r\n"...)
	}
	if closeAfter {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// BodyAllowedForStatus reports whether a response with this status may have a body
// (not 1xx, 204 or 304).
func BodyAllowedForStatus(code int) bool {
	switch {
	case code >= 100 && code <= 199, code == http.StatusNoContent, code == http.StatusNotModified:
		return false
	}
	return true
}

// AppendHeaderLines appends "k: v\r\n" for each value, skipping invalid names and
// turning CR and LF in values into spaces, as net/http's Header.Write does.
func AppendHeaderLines(b []byte, k string, vs []string) []byte {
	if !httpguts.ValidHeaderFieldName(k) {
		return b
	}
	for _, v := range vs {
		b = append(b, k...)
		b = append(b, ": "...)
		start := len(b)
		b = append(b, v...)
		for i := start; i < len(b); i++ {
			if b[i] == '\r' || b[i] == '\n' {
				b[i] = ' '
			}
		}
		// Trim surrounding whitespace, as textproto.TrimString.
		val := b[start:]
		lo, hi := 0, len(val)
		for lo < hi && isASCIISpace(val[lo]) {
			lo++
		}
		for hi > lo && isASCIISpace(val[hi-1]) {
			hi--
		}
		if lo > 0 || hi < len(val) {
			n := copy(val, val[lo:hi])
			b = b[:start+n]
		}
		b = append(b, "\r\n"...)
	}
	return b
}

func isASCIISpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// AppendRelayedHead relays a head ScanResponse took: the status line in net/http's
// form, each header line with its name in canonical form and its value trimmed, less
// the hop-by-hop headers (and Content-Length where no body may follow, and the
// backend's framing, which is set anew), then Date when the backend gave none and
// Connection: close when the client's connection ends after the response.
func AppendRelayedHead(b, head []byte, h ResponseHead, closeAfter bool, date []byte) []byte {
	b = AppendStatusLine(b, h.Code)
	rest := head[bytes.Index(head, crlf)+2:]
	for {
		e := bytes.Index(rest, crlf)
		line := rest[:e]
		rest = rest[e+2:]
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		name := line[:colon]
		switch {
		case asciiEqualFold(name, "Connection"), asciiEqualFold(name, "Keep-Alive"), asciiEqualFold(name, "Proxy-Connection"),
			asciiEqualFold(name, "Proxy-Authenticate"), asciiEqualFold(name, "Proxy-Authorization"), asciiEqualFold(name, "Te"),
			asciiEqualFold(name, "Transfer-Encoding"), asciiEqualFold(name, "Upgrade"):
			continue
		case asciiEqualFold(name, "Content-Length") && (h.Framing == BodyChunked || h.Code == http.StatusNoContent || h.Code == http.StatusNotModified):
			continue
		case asciiEqualFold(name, "Content-Type") && h.Code == http.StatusNotModified:
			continue // as net/http's server
		}
		start := len(b)
		b = append(b, name...)
		canonicalKey(b[start:])
		b = append(b, ": "...)
		b = append(b, trimOWSBytes(line[colon+1:])...)
		b = append(b, "\r\n"...)
	}
	if h.Framing == BodyChunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	return AppendHeadEnd(b, h.Date, date, closeAfter)
}

// canonicalKey puts a valid header name in canonical form in place, as
// textproto.CanonicalMIMEHeaderKey does.
func canonicalKey(k []byte) {
	upper := true
	for i, c := range k {
		if upper && 'a' <= c && c <= 'z' {
			k[i] = c - ('a' - 'A')
		} else if !upper && 'A' <= c && c <= 'Z' {
			k[i] = c + ('a' - 'A')
		}
		upper = c == '-'
	}
}
