package router

import (
	"errors"
	"net/url"
	"strings"
)

// ErrBadPath is returned for a request path that cannot be normalised: a '%' not
// followed by two hexadecimal digits. The gateway answers it 400.
var ErrBadPath = errors.New("malformed percent-encoding in request path")

// NormalizePath is the one rule by which every transport, Ingress and Gateway API route
// sees a request path. escaped is the path as sent (percent-encoded, as
// url.URL.EscapedPath returns it); the result is escaped too:
//
//   - percent-encoded unreserved characters (RFC 3986 §2.3: ALPHA, DIGIT, "-", ".",
//     "_", "~") are decoded, and the hexadecimal digits of every other escape are
//     upper-cased (§6.2.2.1, §6.2.2.2); "%2F" is never decoded, so an encoded slash
//     stays part of its segment;
//   - bytes that may not appear in a path segment unencoded are encoded;
//   - "." and ".." segments are removed (§5.2.4 remove_dot_segments), after the
//     decoding, so "%2e%2e" is a ".." segment; ".." never climbs above the root;
//   - an empty path becomes "/".
//
// It is idempotent and never yields a "." or ".." segment.
func NormalizePath(escaped string) (string, error) {
	if escaped == "" {
		return "/", nil
	}
	if isNormal(escaped) {
		return escaped, nil
	}
	var b strings.Builder
	b.Grow(len(escaped))
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		switch {
		case c == '%':
			if i+2 >= len(escaped) || !isHex(escaped[i+1]) || !isHex(escaped[i+2]) {
				return "", ErrBadPath
			}
			d := unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			i += 2
			if unreserved(d) {
				b.WriteByte(d)
			} else {
				writeEscape(&b, d)
			}
		case c == '/' || pchar(c):
			b.WriteByte(c)
		default:
			writeEscape(&b, c)
		}
	}
	p := b.String()
	if !hasDotSegment(p) {
		if p[0] != '/' {
			return "/" + p, nil
		}
		return p, nil
	}
	return removeDotSegments(p), nil
}

// NormalizeRequestPath normalises u's path in place (NormalizePath of its escaped
// form): Path is the decoded form of the result and RawPath the result itself, so that
// what is matched is what is forwarded.
// The asterisk-form target of "OPTIONS *" is left as it is.
func NormalizeRequestPath(u *url.URL) error {
	if u.Path == "*" && u.RawPath == "" {
		return nil
	}
	escaped := u.EscapedPath()
	p, err := NormalizePath(escaped)
	if err != nil {
		return err
	}
	if p == escaped && u.Path == p {
		return nil // the common case: nothing to do
	}
	return SetEscapedPath(u, p)
}

// SetEscapedPath sets u's path from its escaped form (Path decoded, RawPath as given).
func SetEscapedPath(u *url.URL, escaped string) error {
	path, err := url.PathUnescape(escaped)
	if err != nil {
		return ErrBadPath
	}
	u.Path = path
	if path == escaped {
		u.RawPath = ""
	} else {
		u.RawPath = escaped
	}
	return nil
}

// RequestPath is the path routes match against: the escaped, normalised path.
func RequestPath(u *url.URL) string {
	return u.EscapedPath()
}

func writeEscape(b *strings.Builder, c byte) {
	const hex = "0123456789ABCDEF"
	b.WriteByte('%')
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&15])
}

// isNormal reports whether p is already normal: absolute, with no escape, no byte to
// encode and no dot segment (most paths; checked without allocating).
func isNormal(p string) bool {
	if p[0] != '/' {
		return false
	}
	segStart := 1
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			if seg := p[segStart:i]; seg == "." || seg == ".." {
				return false
			}
			segStart = i + 1
			continue
		}
		if !pchar(p[i]) {
			return false
		}
	}
	return true
}

// hasDotSegment reports whether p has a "." or ".." segment.
func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// removeDotSegments is RFC 3986 §5.2.4 for a path with no escaped dots left, written
// over segments: "." is dropped, ".." drops the segment before it (never the root),
// and a path ending in a dot segment keeps its trailing slash. The result is absolute.
func removeDotSegments(p string) string {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// unreserved is RFC 3986 §2.3.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// pchar reports whether c may appear unencoded in a path segment (RFC 3986 §3.3:
// unreserved, sub-delims, ":" and "@"; '%' is handled by the caller).
func pchar(c byte) bool {
	if unreserved(c) {
		return true
	}
	switch c {
	case '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@':
		return true
	}
	return false
}
