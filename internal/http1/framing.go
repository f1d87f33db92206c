package http1

import (
	"bytes"
	"errors"
	"net/http"
)

// Errors of CheckRequestFraming: request heads net/http's server reads, that weir
// refuses with 400 because a server or proxy in front of it may frame them otherwise
// (request smuggling, RFC 9112 sections 5.1, 5.2, 6.1 and 11.2).
var (
	ErrLengthAndChunked    = errors.New("request has both Content-Length and Transfer-Encoding")
	ErrTransferEncoding10  = errors.New("request older than HTTP/1.1 has Transfer-Encoding")
	ErrObsFold             = errors.New("folded header line (obs-fold) in a request")
	ErrSpaceBeforeColon    = errors.New("whitespace between a header name and its colon")
	errIncompleteHead      = errors.New("incomplete head")
	transferEncodingHeader = []byte("Transfer-Encoding")
	contentLengthHeader    = []byte("Content-Length")
)

// CheckRequestFraming checks one request head — its lines delimited as net/http's
// reader delimits them: each ends in LF, a CR before the LF is dropped — against the
// rules weir adds to net/http's: no Content-Length beside Transfer-Encoding (net/http
// takes the chunked framing and keeps the connection), no Transfer-Encoding below
// HTTP/1.1 (net/http ignores it, and the chunked body is read as the next request), no
// obs-fold (net/http joins the lines) and no whitespace before a colon (net/http keeps
// the name with its space). A head these rules take is left to net/http's own checks.
func CheckRequestFraming(head []byte) error {
	first := true
	te, cl := false, false
	old := false
	for len(head) > 0 {
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			return errIncompleteHead
		}
		line := head[:i]
		head = head[i+1:]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if first {
			first = false
			// The version is what follows the second space, as net/http cuts it.
			_, rest, ok1 := bytes.Cut(line, []byte(" "))
			_, proto, ok2 := bytes.Cut(rest, []byte(" "))
			if ok1 && ok2 {
				if major, minor, ok := http.ParseHTTPVersion(string(proto)); ok && (major < 1 || major == 1 && minor < 1) {
					old = true
				}
			}
			continue
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return ErrObsFold
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue // net/http refuses it
		}
		name := line[:colon]
		if n := len(name); n > 0 && (name[n-1] == ' ' || name[n-1] == '\t') {
			return ErrSpaceBeforeColon
		}
		switch {
		case bytes.EqualFold(name, transferEncodingHeader):
			te = true
		case bytes.EqualFold(name, contentLengthHeader):
			cl = true
		}
	}
	switch {
	case te && cl:
		return ErrLengthAndChunked
	case te && old:
		return ErrTransferEncoding10
	}
	return nil
}
