package http1

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"

	"golang.org/x/net/http/httpguts"
)

// MaxResponseHead bounds a response head (informational ones each on their own), as
// weir's upstream clients read it: the event loops and http.Transport's
// MaxResponseHeaderBytes.
const MaxResponseHead = 64 << 10

// MaxInformational is how many informational (1xx) responses may come before the final
// one; one more fails the exchange.
const MaxInformational = 5

// Framing is how a response body ends (RFC 9112, section 6.3).
type Framing uint8

const (
	BodyNone       Framing = iota // HEAD, 1xx, 204, 304
	BodyLength                    // Content-Length bytes
	BodyChunked                   // Transfer-Encoding: chunked
	BodyUntilClose                // neither: the body ends when the backend closes
)

// ParseResponse parses a response head (status line and header lines ending with an
// empty line) with net/http's client parser (http.ReadResponse), and says how its body
// is framed and, for BodyLength, its length. isHEAD: the response answers a HEAD
// request. ok is false for a head net/http's client would not take.
func ParseResponse(head []byte, isHEAD bool) (resp *http.Response, framing Framing, contentLength int64, ok bool) {
	req := &http.Request{Method: http.MethodGet}
	if isHEAD {
		req.Method = http.MethodHead
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), req)
	if err != nil {
		return nil, 0, 0, false
	}
	resp.Body, resp.Request = nil, nil
	code := resp.StatusCode
	switch {
	case isHEAD || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified:
		return resp, BodyNone, 0, true
	case len(resp.TransferEncoding) > 0:
		return resp, BodyChunked, -1, true
	case resp.ContentLength >= 0:
		return resp, BodyLength, resp.ContentLength, true
	}
	resp.Close = true
	return resp, BodyUntilClose, -1, true
}

// ResponseHead is what ScanResponse learned of a response head.
type ResponseHead struct {
	Code    int
	Framing Framing
	Length  int64 // BodyLength: the body's length
	Close   bool  // the sender closes the connection after it
	Date    bool  // it has a Date
}

// ScanResponse reads a response head that can be relayed line by line: HTTP/1.x,
// well-formed, no header the gateway must act on beyond framing and hop-by-hop ones
// (no Trailer, Pragma, or Connection option other than close and keep-alive). It
// finds what ParseResponse would, without building a header map; ok is false for
// any other head, which then takes ParseResponse.
func ScanResponse(head []byte, isHEAD bool) (h ResponseHead, ok bool) {
	if end, bad := HeadEnd(head); bad || end != len(head) {
		return h, false // a bare LF, or not one head
	}
	eol := bytes.Index(head, crlf)
	if eol < len("HTTP/1.1 200") {
		return h, false
	}
	line := head[:eol]
	minor := 1
	switch string(line[:9]) {
	case "HTTP/1.1 ":
	case "HTTP/1.0 ":
		minor = 0
	default:
		return h, false
	}
	status := line[9:]
	if len(status) > 3 && status[3] != ' ' {
		return h, false
	}
	for _, d := range status[:3] {
		if d < '0' || d > '9' {
			return h, false
		}
		h.Code = h.Code*10 + int(d-'0')
	}
	if h.Code < 100 {
		return h, false
	}
	h.Length = -1
	chunked, hasClose, keepAlive := false, false, false
	var lengthText []byte
	for rest := head[eol+2:]; ; {
		e := bytes.Index(rest, crlf)
		if e < 0 {
			return h, false
		}
		line := rest[:e]
		rest = rest[e+2:]
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return h, false
		}
		name, value := line[:colon], trimOWSBytes(line[colon+1:])
		if !validToken(name) || !validValue(value) {
			return h, false
		}
		switch {
		case asciiEqualFold(name, "Content-Length"):
			// As net/http: digits only, and a second one textually the same.
			if lengthText != nil {
				if !bytes.Equal(value, lengthText) {
					return h, false
				}
				continue
			}
			n, err := strconv.ParseUint(string(value), 10, 63)
			if err != nil || value[0] < '0' || value[0] > '9' {
				return h, false
			}
			h.Length, lengthText = int64(n), value
		case asciiEqualFold(name, "Transfer-Encoding"):
			if chunked || !asciiEqualFold(value, "chunked") || minor == 0 {
				return h, false
			}
			chunked = true
		case asciiEqualFold(name, "Connection"):
			for _, tok := range bytes.Split(value, []byte(",")) {
				switch tok = trimOWSBytes(tok); {
				case asciiEqualFold(tok, "close"):
					hasClose = true
				case asciiEqualFold(tok, "keep-alive"):
					keepAlive = true
				case len(tok) > 0:
					return h, false // it names a header to drop
				}
			}
		case asciiEqualFold(name, "Date"):
			h.Date = true
		case asciiEqualFold(name, "Trailer"), asciiEqualFold(name, "Pragma"):
			return h, false
		}
	}
	h.Close = hasClose || (minor == 0 && !keepAlive)
	switch {
	case isHEAD || h.Code < 200 || h.Code == http.StatusNoContent || h.Code == http.StatusNotModified:
		h.Framing = BodyNone
	case chunked:
		h.Framing = BodyChunked // a Content-Length beside it is ignored, as net/http does
	case h.Length >= 0:
		h.Framing = BodyLength
	default:
		h.Framing, h.Close = BodyUntilClose, true
	}
	return h, true
}

var crlf = []byte("\r\n")

func trimOWSBytes(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// validToken reports whether a header name is a token (RFC 9110) that
// textproto.CanonicalMIMEHeaderKey would canonicalize.
func validToken(k []byte) bool {
	for _, c := range k {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return len(k) > 0
}

// validValue reports whether a header value has no control characters but tab.
func validValue(v []byte) bool {
	for _, c := range v {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c, d := b[i], s[i]
		if c == d {
			continue
		}
		if lc := c | 0x20; lc != d|0x20 || lc < 'a' || lc > 'z' {
			return false
		}
	}
	return true
}

// validTokenByte reports whether c may be part of a token (RFC 9110, section 5.6.2).
func validTokenByte(c byte) bool { return httpguts.IsTokenRune(rune(c)) }
